"""What a model file says it is, from its header alone: a check, never a gate.

``mlib add``/``adopt`` use a :class:`Probe` to suggest a type, kind and family, and ``plan`` to
warn when the manifest declares something the file disagrees with. A probe is a guess from naming
conventions, so nothing may depend on it: it never blocks an install and never deletes anything.
For the same reason :func:`probe_file` never raises: a file it cannot read or make sense of (even a
missing one, a folder or a FIFO) is ``Format.UNKNOWN`` with the reason, and whatever acts on the
file next reports its own error.

Only headers are read, never weights, and never more than a bound, so a hostile or broken file
costs little: a safetensors header is at most :data:`MAX_SAFETENSORS_HEADER` bytes (the limit the
safetensors library itself enforces), GGUF metadata at most :data:`MAX_GGUF_METADATA`. GGUF is
parsed here rather than with the ``gguf`` package: the key/values are a few lines of ``struct``,
and the package would pull numpy in for them. Pickled files (``.ckpt``, ``.pt``) are recognised
but never unpickled: loading them means running their code.

Safetensors files are classified by the tensor names real files use, in :data:`KIND_RULES` and
:data:`FAMILY_RULES`: small ordered tables where the first rule that matches wins and carries the
reason shown to the user.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from reconciler.model import ModelType

log = logging.getLogger(__name__)

#: Largest safetensors JSON header read (the safetensors library refuses larger ones too).
MAX_SAFETENSORS_HEADER = 100_000_000
#: Most bytes of GGUF metadata read. A large vocabulary (262k tokens with scores, types and merges)
#: takes ~20 MiB; everything in the key/values counts, skipped arrays included.
MAX_GGUF_METADATA = 64 << 20
#: Deepest GGUF array of arrays accepted (real files nest none).
MAX_GGUF_NESTING = 4
#: Bytes read from the file at a time while parsing GGUF metadata.
_CHUNK = 1 << 20


class Format(StrEnum):
    SAFETENSORS = "safetensors"
    GGUF = "gguf"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Probe:
    """What a file's header shows, and the guesses drawn from it.

    ``reason`` is the evidence for the guesses in a few words, or why the file could not be read
    (``format`` unknown). A guess is None when nothing matched: no guess is not a disagreement.
    ``dtypes`` (safetensors) counts tensors per dtype, most common first; ``metadata`` is the
    ``__metadata__`` map as sorted pairs (hashable, like every value here). For GGUF, ``version``
    is the format's, and ``architecture``, ``name`` and ``file_type`` are ``general.architecture``,
    ``general.name`` and ``general.file_type``, whose llama.cpp name (``Q4_K_M``) is
    ``quantization``; None when the file does not say (or says a number llama.cpp does not know).
    """

    format: Format
    reason: str
    type: ModelType | None = None
    kind: str | None = None
    family: str | None = None
    tensor_count: int | None = None
    dtypes: tuple[tuple[str, int], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    version: int | None = None
    architecture: str | None = None
    name: str | None = None
    file_type: int | None = None
    quantization: str | None = None

    @property
    def meta(self) -> dict[str, str]:
        """``__metadata__`` as a dict (a copy)."""
        return dict(self.metadata)

    @property
    def dtype(self) -> str | None:
        """The dtype of most tensors, e.g. ``BF16``; None when there are none (or for GGUF)."""
        return self.dtypes[0][0] if self.dtypes else None

    def disagreement(
        self, kind: str, type: ModelType | None = None, family: str | None = None
    ) -> str | None:
        """One line saying how the declared kind, type or family differs from the guesses, or None.

        Only what was guessed is compared. Declared kind ``gguf`` fits any GGUF file (translations
        place GGUF files by type and kind ``gguf``), and families are compared loosely: ``sd1.5``
        is ``sd15``, and ``flux1-dev`` is of family ``flux``.
        """
        found = []
        gguf_fits = self.format is Format.GGUF and kind == "gguf"
        if self.kind is not None and kind != self.kind and not gguf_fits:
            found.append(f"kind {kind!r} but the file looks like {self.kind!r}")
        if self.type is not None and type is not None and type != self.type:
            found.append(f"type {type.value!r} but the file looks like {self.type.value!r}")
        if self.family is not None and family is not None and not _same_family(family, self.family):
            found.append(f"family {family!r} but the file looks like {self.family!r}")
        return f"declared {'; '.join(found)} ({self.reason})" if found else None


def _same_family(declared: str, guessed: str) -> bool:
    a, b = (re.sub(r"[^a-z0-9]", "", f.lower()) for f in (declared, guessed))
    return a.startswith(b) or b.startswith(a)


def _unknown(reason: str) -> Probe:
    return Probe(Format.UNKNOWN, reason)


class _Malformed(Exception):
    """The bytes break the format; the message says how."""


# --- safetensors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindRule:
    """A kind (and type) guess: every pattern in ``need`` matches some tensor name and no pattern in
    ``never`` matches any. Patterns are regular expressions searched line by line (``^`` is the
    start of a name)."""

    kind: str | None
    type: ModelType
    need: tuple[str, ...]
    reason: str
    never: tuple[str, ...] = ()


@dataclass(frozen=True)
class FamilyRule:
    """A family guess: ``pattern`` matches some tensor name or, with ``meta``, the value of that
    ``__metadata__`` key (written by trainers such as kohya's sd-scripts)."""

    family: str
    pattern: str
    reason: str
    meta: str = ""


# Each pattern, searched in the names one per line, is something some tensor name must show.
_LORA = r"^lora_(unet|te\d?|transformer)_|[._]lora[._](up|down|A|B)\."
_LLM_LAYERS = r"(^|\.)model\.layers\.\d+\.(self_attn|mlp)\."
_CONTROL = r"^control_model\.|^controlnet_|(^|\.)zero_convs\.|(^|\.)input_hint_block\."
_TEXTUAL_INVERSION = r"^(emb_params|clip_[lg]|string_to_param\..*)$"
_UNET = r"^model\.diffusion_model\."
_CKPT_VAE = r"^first_stage_model\."
_CKPT_TEXT = r"^(cond_stage_model|conditioner|text_encoders)\."
_BARE_DIFFUSION = (
    r"^model\.diffusion_model\.|^(input_blocks|middle_block|double_blocks|single_blocks)\."
    r"|^joint_blocks\.|^(single_)?transformer_blocks\.\d+\.|^down_blocks\.\d+\.(attentions|resnets)\."
)
_VAE = (
    r"^first_stage_model\."
    r"|^(vae\.)?(encoder|decoder)\.(conv_in|conv_out|down|up|mid|down_blocks|up_blocks|mid_block)\."
)
_VISION = r"(^|\.)vision_model\.(encoder|embeddings)\.|^visual\.(transformer|conv1)\."
_TEXT = (
    r"(^|\.)text_model\.encoder\.layers\.|^encoder\.block\.\d+\.|^shared\.weight$"
    r"|^transformer\.resblocks\.|^(text_encoders|cond_stage_model|conditioner)\."
)
_LLM = r"^model\.layers\.\d+\.(self_attn|mlp)\.|^model\.embed_tokens\.|^lm_head\."
_BERT = (r"(^|\.)embeddings\.word_embeddings\.", r"(^|\.)encoder\.layer\.\d+\.attention\.")
_UPSCALER = r"^model\.0\.weight$|^conv_first\.|^RRDB_trunk\.|^body\.\d+\."
_D = ModelType.DIFFUSION

#: Kind guesses for safetensors, first match wins: LoRAs and ControlNets hold UNet-like names too,
#: and a checkpoint holds a VAE and a text encoder, so the narrower rules come first.
KIND_RULES: tuple[KindRule, ...] = (
    KindRule("lora", ModelType.LLM, (_LORA, _LLM_LAYERS),
             "LoRA of a language model: lora_A/lora_B on model.layers.N"),
    KindRule("lora", _D, (_LORA,),
             "LoRA: lora_up/lora_down or lora_A/lora_B weights, names under lora_unet_/lora_te_"),
    KindRule("controlnet", _D, (_CONTROL,),
             "ControlNet: control_model., controlnet_*, zero_convs or input_hint_block"),
    KindRule("ipadapter", _D, (r"^ip_adapter\.", r"^image_proj\."),
             "IP-Adapter: ip_adapter. and image_proj."),
    KindRule("embedding", _D, (_TEXTUAL_INVERSION,),
             "textual inversion: emb_params, clip_l/clip_g or string_to_param"),
    KindRule("checkpoint", _D, (_UNET, _CKPT_VAE, _CKPT_TEXT),
             "checkpoint: model.diffusion_model. + first_stage_model. + a text encoder"),
    KindRule("checkpoint", _D, (_UNET, _CKPT_VAE),
             "checkpoint without text encoder: model.diffusion_model. + first_stage_model."),
    KindRule("diffusion_model", _D, (_BARE_DIFFUSION,),
             "diffusion model alone: model.diffusion_model., input_blocks., double_blocks., etc."),
    KindRule("vae", _D, (_VAE,),
             "VAE: encoder./decoder. with conv_in/conv_out and down/up blocks"),
    KindRule("clip_vision", _D, (_VISION,),
             "CLIP vision tower: vision_model. and no text_model.", never=(r"(^|\.)text_model\.",)),
    KindRule("text_encoder", _D, (_TEXT,),
             "text encoder: CLIP text_model.encoder.layers or T5 encoder.block./shared.weight"),
    KindRule(None, ModelType.EMBEDDING, _BERT,
             "BERT-style text embedder: embeddings.word_embeddings and encoder.layer.N.attention"),
    KindRule(None, ModelType.LLM, (_LLM,),
             "language model: model.layers.N, model.embed_tokens, lm_head (maybe a text encoder)"),
    KindRule("upscaler", _D, (_UPSCALER,),
             "upscaler (ESRGAN family): model.0.weight, conv_first., RRDB_trunk. or body.N."),
)  # fmt: skip

_SDXL = (
    r"^conditioner\.embedders\.1\.|label_emb[._]|^lora_te[12]_|^lora_unet_(input|output)_blocks_"
    r"|add_embedding[._]linear_1|(^|\.)text_encoder_2\.|^clip_g$"
)
_SD15 = r"^cond_stage_model\.transformer\.|^lora_te_text_model_|^lora_unet_down_blocks_"

#: Family guesses, first match wins: tensor names first, then the trainer's ``__metadata__``.
FAMILY_RULES: tuple[FamilyRule, ...] = (
    FamilyRule("flux", r"double_blocks[._]|single_transformer_blocks[._]",
               "Flux double/single-stream blocks"),
    FamilyRule("sd3", r"joint_blocks[._]", "SD3 joint_blocks"),
    FamilyRule("sdxl", _SDXL, "SDXL: label_emb or a 2nd text encoder (embedders.1, te2, clip_g)"),
    FamilyRule("sd15", _SD15, "SD1.x: cond_stage_model.transformer or kohya lora_te_/down_blocks_"),
    FamilyRule("flux", r"^flux", "", meta="modelspec.architecture"),
    FamilyRule("sd3", r"^stable-diffusion-3", "", meta="modelspec.architecture"),
    FamilyRule("sdxl", r"^stable-diffusion-xl", "", meta="modelspec.architecture"),
    FamilyRule("sd15", r"^stable-diffusion-v1", "", meta="modelspec.architecture"),
    FamilyRule("flux", r"^flux", "", meta="ss_base_model_version"),
    FamilyRule("sd3", r"^sd3", "", meta="ss_base_model_version"),
    FamilyRule("sdxl", r"^sdxl", "", meta="ss_base_model_version"),
    FamilyRule("sd15", r"^sd_v1", "", meta="ss_base_model_version"),
)  # fmt: skip


def classify(names: list[str], metadata: Mapping[str, str]) -> tuple[KindRule | None, str, str]:
    """The kind rule the tensor names match (or None), the family guessed ("" for none) and the
    reason for both."""
    text = "\n".join(names)
    reasons = []
    kind = next((r for r in KIND_RULES if _matches(r, text)), None)
    if kind is not None:
        example = re.search(kind.need[0], text, re.MULTILINE)
        line = _line_at(text, example.start()) if example else ""
        reasons.append(f"{kind.reason} (e.g. {line!r})")
    family = ""
    for rule in FAMILY_RULES:
        if rule.meta:
            value = metadata.get(rule.meta)
            if value is not None and re.search(rule.pattern, value):
                family = rule.family
                reasons.append(f"family {family}: __metadata__ {rule.meta} = {value!r}")
                break
        elif re.search(rule.pattern, text, re.MULTILINE):
            family = rule.family
            reasons.append(f"family {family}: {rule.reason}")
            break
    return kind, family, "; ".join(reasons) or "no rule matched the tensor names"


def _matches(rule: KindRule, text: str) -> bool:
    return all(re.search(p, text, re.MULTILINE) for p in rule.need) and not any(
        re.search(p, text, re.MULTILINE) for p in rule.never
    )


def _line_at(text: str, at: int) -> str:
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    return text[start : end if end >= 0 else len(text)]


def _safetensors(fh: IO[bytes], size: int, first: bytes) -> Probe:
    (length,) = struct.unpack("<Q", first)
    if length > MAX_SAFETENSORS_HEADER:
        return _unknown(
            f"not safetensors: declares a {length}-byte header (more than {MAX_SAFETENSORS_HEADER})"
        )
    if 8 + length > size:
        return _unknown(f"not safetensors or truncated: a {length}-byte header in {size} bytes")
    raw = fh.read(length)
    if len(raw) < length:
        return _unknown("the file shrank while it was read")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _unknown(f"not safetensors: the header is not JSON ({_short(exc)})")
    if not isinstance(header, dict):
        return _unknown(f"not safetensors: the header is a JSON {type(header).__name__}, not a map")
    try:
        metadata = _metadata(header.pop("__metadata__", {}))
        dtypes = Counter(_dtype(name, entry) for name, entry in header.items())
    except _Malformed as exc:
        return _unknown(f"not safetensors: {exc}")
    names = sorted(header)
    kind, family, reason = classify(names, metadata)
    return Probe(
        Format.SAFETENSORS,
        reason,
        type=None if kind is None else kind.type,
        kind=None if kind is None else kind.kind,
        family=family or None,
        tensor_count=len(names),
        dtypes=tuple(sorted(dtypes.items(), key=lambda d: (-d[1], d[0]))),
        metadata=tuple(sorted(metadata.items())),
    )


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Malformed("__metadata__ is not a map of strings")
    return value


def _dtype(name: str, entry: object) -> str:
    """The dtype of one tensor entry, checked as the safetensors library checks it."""
    if not isinstance(entry, dict):
        raise _Malformed(f"tensor {name!r} is not a map")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise _Malformed(f"tensor {name!r} has no dtype")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise _Malformed(f"tensor {name!r} has no shape")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets):
        raise _Malformed(f"tensor {name!r} has no data_offsets")
    return dtype


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


# --- GGUF ----------------------------------------------------------------------------------------

#: ``general.file_type`` (llama.cpp's ``llama_ftype``) -> the name quantizations go by.
GGUF_FILE_TYPES: Mapping[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 33: "Q4_0_4_4",
    34: "Q4_0_4_8", 35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip

#: Architectures of diffusion models in GGUF (ComfyUI-GGUF's image architectures), by the family
#: mlib calls them; any other name is its own family.
GGUF_DIFFUSION: Mapping[str, str] = {
    "flux": "flux", "sd1": "sd15", "sdxl": "sdxl", "sd3": "sd3", "aura": "aura",
    "hidream": "hidream", "cosmos": "cosmos", "ltxv": "ltxv", "hyvid": "hyvid", "wan": "wan",
    "lumina2": "lumina2", "qwen_image": "qwen_image", "chroma": "chroma",
}  # fmt: skip
#: Text encoders of diffusion models (T5), as ComfyUI-GGUF's CLIP loaders read them.
GGUF_TEXT_ENCODERS = frozenset({"t5", "t5encoder"})
#: Sentence-embedding models in llama.cpp.
GGUF_EMBEDDINGS = frozenset({"bert", "nomic-bert", "jina-bert-v2"})

#: GGUF value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_INTEGERS = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
#: The key/values a probe keeps; every other value is skipped unread.
_WANTED = frozenset({b"general.architecture", b"general.name", b"general.type",
                     b"general.file_type"})  # fmt: skip


class _Reader:
    """Reads forward through the head of a file, keeping what it read: never more than ``limit``
    bytes (nor the file's size) in all, so no declared length or count makes it allocate more, and
    no count makes it loop more than once per byte."""

    def __init__(self, fh: IO[bytes], size: int, limit: int, order: str) -> None:
        self.fh = fh
        self.size = size
        self.limit = limit
        self.end = min(size, limit)
        self.order = order
        self.data = bytearray()
        self.pos = 0

    def need(self, n: int) -> int:
        """Make the next ``n`` bytes available and move past them; return where they start."""
        at, end = self.pos, self.pos + n
        if end > self.end:
            if end > self.size:
                raise _Malformed(f"ends early ({n} bytes needed at {at}, the file has {self.size})")
            raise _Malformed(f"metadata larger than {self.limit} bytes")
        if end > len(self.data):
            want = min(max(end, len(self.data) + _CHUNK), self.end) - len(self.data)
            self.data += self.fh.read(want)
            if end > len(self.data):
                raise _Malformed("the file shrank while it was read")
        self.pos = end
        return at

    def left(self) -> int:
        """Bytes of the file after the position (beyond the limit too: ``need`` enforces that)."""
        return self.size - self.pos

    def scalar(self, code: str) -> Any:
        fmt = self.order + code
        return struct.unpack_from(fmt, self.data, self.need(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        n = self.scalar("Q")
        at = self.need(n)
        return bytes(self.data[at : at + n])

    def value(self, vtype: int, *, keep: bool = True, depth: int = 0) -> object:
        """The value of type ``vtype`` (a string as bytes); arrays, and values not kept, are
        skipped and None."""
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.need(self.scalar("Q"))
            return None
        if vtype != _ARRAY:
            raise _Malformed(f"unknown value type {vtype}")
        if depth >= MAX_GGUF_NESTING:
            raise _Malformed(f"arrays nested deeper than {MAX_GGUF_NESTING}")
        etype, count = self.scalar("I"), self.scalar("Q")
        if etype in _SCALARS:
            self.need(count * struct.calcsize(_SCALARS[etype]))
            return None
        if etype not in (_STRING, _ARRAY):
            raise _Malformed(f"unknown value type {etype} in an array")
        if count * (8 if etype == _STRING else 12) > self.left():  # each item's length or header
            raise _Malformed(f"an array of {count} items cannot fit in the file")
        if etype == _STRING:
            self.skip_strings(count)
        else:
            for _ in range(count):
                self.value(etype, keep=False, depth=depth + 1)
        return None

    def skip_strings(self, count: int) -> None:
        """Move past ``count`` strings. A vocabulary holds 100-300k of them, so this loop calls
        :meth:`need` only when it runs past what was read (3x faster than a string at a time)."""
        unpack = struct.Struct(self.order + "Q").unpack_from
        data, pos = self.data, self.pos  # ``need`` extends ``data`` in place
        for _ in range(count):
            if pos + 8 > len(data):
                self.pos = pos
                self.need(8)
            n = unpack(data, pos)[0]
            pos += 8 + n
            if pos > len(data):  # what was read never goes past the limit
                self.pos = pos - n
                self.need(n)
        self.pos = pos


def _gguf(fh: IO[bytes], size: int, limit: int) -> Probe:
    fh.seek(0)
    head = fh.read(24)
    if len(head) < 24:
        return _unknown(f"not GGUF: {len(head)} bytes, too short for a GGUF header")
    # Big-endian files (for s390x) say so only by their byte order.
    order = next((o for o in "<>" if struct.unpack_from(o + "I", head, 4)[0] in (2, 3)), "")
    if not order:
        version = struct.unpack_from("<I", head, 4)[0]
        return _unknown(f"GGUF version {version} is not supported (only 2 and 3)")
    version, tensors, kvs = struct.unpack_from(order + "IQQ", head, 4)
    fh.seek(0)
    reader = _Reader(fh, size, limit, order)
    reader.need(24)
    if kvs * 13 > reader.left():  # each at least a key length, a value type and a byte
        return _unknown(f"not GGUF: {kvs} key/values cannot fit in the file")
    if tensors > size:
        return _unknown(f"not GGUF: {tensors} tensors cannot fit in the file")
    found: dict[bytes, tuple[int, object]] = {}
    try:
        for _ in range(kvs):
            key = reader.string()
            vtype = reader.scalar("I")
            value = reader.value(vtype, keep=key in _WANTED)
            if key in _WANTED:
                found[key] = (vtype, value)
    except _Malformed as exc:
        return _unknown(f"not GGUF: {exc}")
    return _classify_gguf(version, tensors, found)


def _classify_gguf(version: int, tensors: int, found: Mapping[bytes, tuple[int, object]]) -> Probe:
    def text(key: bytes) -> str | None:
        value = found.get(key, (-1, None))[1]
        return value[:200].decode("utf-8", "replace") if isinstance(value, bytes) else None

    vtype, value = found.get(b"general.file_type", (-1, None))
    file_type = value if vtype in _INTEGERS and isinstance(value, int) else None
    arch = text(b"general.architecture")
    mtype, kind, family, reason = _gguf_guess(arch, text(b"general.type"))
    return Probe(
        Format.GGUF,
        reason,
        type=mtype,
        kind=kind,
        family=family,
        tensor_count=tensors,
        version=version,
        architecture=arch,
        name=text(b"general.name"),
        file_type=file_type,
        quantization=None if file_type is None else GGUF_FILE_TYPES.get(file_type),
    )


def _gguf_guess(
    arch: str | None, role: str | None
) -> tuple[ModelType | None, str | None, str | None, str]:
    """Type, kind, family and reason for an architecture and ``general.type``."""
    if arch is None:
        return None, None, None, "GGUF without general.architecture"
    said = f"general.architecture {arch!r}"
    if arch in GGUF_DIFFUSION:
        kind = "lora" if role == "adapter" else "diffusion_model"
        return _D, kind, GGUF_DIFFUSION[arch], f"{said}: a diffusion model (ComfyUI-GGUF)"
    if arch in GGUF_TEXT_ENCODERS:
        return _D, "text_encoder", None, f"{said}: a T5 text encoder (ComfyUI-GGUF)"
    if role == "adapter":
        return ModelType.LLM, "lora", arch, f"{said} with general.type 'adapter': a LoRA"
    if role == "mmproj" or arch == "clip":
        return ModelType.VISION, "gguf", arch, f"{said}: a vision projector (mmproj)"
    if arch in GGUF_EMBEDDINGS:
        return ModelType.EMBEDDING, "gguf", arch, f"{said}: a text-embedding model (llama.cpp)"
    return ModelType.LLM, "gguf", arch, f"{said}: a language model (llama.cpp)"


# --- entry point ---------------------------------------------------------------------------------


def probe_file(path: str | os.PathLike[str], *, gguf_limit: int = MAX_GGUF_METADATA) -> Probe:
    """What the header of the file at ``path`` says it is. Never raises: see the module."""
    try:
        probe = _probe(Path(path), gguf_limit)
    except OSError as exc:
        probe = _unknown(f"cannot read: {exc.strerror or exc}")
    log.debug("probed %s: %s %s/%s/%s: %s", path, probe.format, probe.type, probe.kind,
              probe.family, probe.reason)  # fmt: skip
    return probe


def _probe(path: Path, gguf_limit: int) -> Probe:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return _unknown("a folder, not a file" if stat.S_ISDIR(info.st_mode) else "not a file")
    with os.fdopen(fd, "rb") as fh:
        size = info.st_size
        first = fh.read(8)
        if not first:
            return _unknown("empty file")
        if first.startswith(b"GGUF"):
            return _gguf(fh, size, gguf_limit)
        if len(first) < 8:
            return _unknown(f"{len(first)} bytes, too short for a safetensors or GGUF header")
        # A safetensors length can begin with any byte; its JSON header always begins with "{".
        if fh.read(1) != b"{":
            if first.startswith(b"PK\x03\x04"):
                return _unknown("a zip archive (PyTorch .ckpt/.pt?): not opened, loading runs code")
            if first[0] == 0x80 and 2 <= first[1] <= 5:
                return _unknown("a pickle (PyTorch .ckpt/.pt?): not opened, loading runs code")
        fh.seek(8)
        return _safetensors(fh, size, first)
