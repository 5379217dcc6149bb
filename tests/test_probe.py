"""probe_file on tiny hand-written safetensors and GGUF files: every kind and family its rules
name, GGUF LLMs against diffusion models, and broken or hostile files, which are only ever
``unknown`` with a reason, never an exception."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model import KNOWN_KINDS, ModelType
from reconciler.probe import (
    FAMILY_RULES,
    KIND_RULES,
    MAX_SAFETENSORS_HEADER,
    Format,
    Probe,
    probe_file,
)

D, LLM = ModelType.DIFFUSION, ModelType.LLM


# --- writing the formats by hand -----------------------------------------------------------------


def safetensors_bytes(
    names: list[str] | dict[str, str], metadata: dict[str, str] | None = None
) -> bytes:
    """8-byte little-endian header length, the JSON header, then 2 zero bytes per tensor."""
    dtypes = names if isinstance(names, dict) else dict.fromkeys(names, "F16")
    header: dict[str, object] = {
        name: {"dtype": dtype, "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}
        for i, (name, dtype) in enumerate(dtypes.items())
    }
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(2 * len(dtypes))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)


def gstr(text: str | bytes, o: str = "<") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(o + "Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes, o: str = "<") -> bytes:
    return gstr(key, o) + struct.pack(o + "I", vtype) + payload


def kv_str(key: str, value: str, o: str = "<") -> bytes:
    return kv(key, STRING, gstr(value, o), o)


def kv_u32(key: str, value: int, o: str = "<") -> bytes:
    return kv(key, U32, struct.pack(o + "I", value), o)


def kv_array(key: str, etype: int, count: int, items: bytes, o: str = "<") -> bytes:
    return kv(key, ARRAY, struct.pack(o + "IQ", etype, count) + items, o)


def gguf_bytes(kvs: list[bytes], *, version: int = 3, tensors: int = 0, o: str = "<") -> bytes:
    """Magic, version, tensor count, key/value count, then the key/values (no tensor infos)."""
    return b"GGUF" + struct.pack(o + "IQQ", version, tensors, len(kvs)) + b"".join(kvs)


def every_type(o: str = "<") -> list[bytes]:
    """One key/value of each GGUF value type, an array of strings and an array of arrays."""
    scalars = [(U8, "B", 1), (I8, "b", -1), (U16, "H", 2), (I16, "h", -2), (I32, "i", -3),
               (F32, "f", 0.5), (BOOL, "?", True), (U64, "Q", 2**40), (I64, "q", -(2**40)),
               (F64, "d", 0.25)]  # fmt: skip
    tokens = [gstr(t, o) for t in ("<s>", "</s>", "hello", "ä")]
    inner = struct.pack(o + "IQ", U8, 3) + b"abc"
    return [
        *(
            kv(f"test.{vtype}", vtype, struct.pack(o + fmt, value), o)
            for vtype, fmt, value in scalars
        ),
        kv_array("tokenizer.ggml.tokens", STRING, len(tokens), b"".join(tokens), o),
        kv_array("tokenizer.ggml.scores", F32, 4, struct.pack(o + "4f", 0, 1, 2, 3), o),
        kv_array("test.nested", ARRAY, 2, inner * 2, o),
    ]


def llm_gguf(
    arch: str = "llama", file_type: int = 15, o: str = "<", general: dict[str, str] | None = None
) -> bytes:
    """A GGUF whose ``general.*`` keys sit among values of every type, as in llama.cpp's files."""
    kvs = [kv_str("general.architecture", arch, o), kv_str("general.name", f"My {arch}", o)]
    kvs += [kv_str(f"general.{k}", v, o) for k, v in (general or {}).items()]
    kvs += [*every_type(o), kv_u32("general.file_type", file_type, o)]
    return gguf_bytes(kvs, tensors=291, o=o)


# --- safetensors: one case per kind and family ---------------------------------------------------

SDXL_CKPT = ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
             "first_stage_model.encoder.conv_in.weight", "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
             "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]  # fmt: skip

SDXL_LORA = ["lora_unet_input_blocks_4_1_proj_in.lora_down.weight", "lora_unet_input_blocks_4_1_proj_in.lora_up.weight",
             "lora_unet_input_blocks_4_1_proj_in.alpha", "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
             "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]  # fmt: skip

SAFETENSORS_CASES = [
    pytest.param(SDXL_LORA, D, "lora", "sdxl", id="lora sdxl kohya"),
    pytest.param(["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                  "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"], D, "lora", "sd15", id="lora sd15 kohya"),
    pytest.param(["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight",
                  "lora_unet_single_blocks_0_linear1.lora_up.weight"], D, "lora", "flux", id="lora flux kohya"),
    pytest.param(["transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight",
                  "transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight"], D, "lora", "flux", id="lora flux peft"),
    pytest.param(["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"], D, "lora", "sd3", id="lora sd3"),
    pytest.param(["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                  "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"], LLM, "lora", None, id="lora of an llm"),
    pytest.param(SDXL_CKPT, D, "checkpoint", "sdxl", id="checkpoint sdxl"),
    pytest.param(["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_out.weight",
                  "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"], D, "checkpoint", "sd15", id="checkpoint sd15"),
    pytest.param(["model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "first_stage_model.decoder.conv_out.weight",
                  "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"], D, "checkpoint", "sd3", id="checkpoint sd3"),
    pytest.param(["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "first_stage_model.decoder.conv_out.weight"],
                 D, "checkpoint", "flux", id="checkpoint without text encoder"),
    pytest.param(["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"],
                 D, "diffusion_model", "flux", id="diffusion flux"),
    pytest.param(["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "model.diffusion_model.img_in.weight"],
                 D, "diffusion_model", "flux", id="diffusion flux with comfy prefix"),
    pytest.param(["joint_blocks.0.x_block.attn.qkv.weight", "x_embedder.proj.weight"], D, "diffusion_model", "sd3", id="diffusion sd3"),
    pytest.param(["input_blocks.0.0.weight", "label_emb.0.0.weight", "middle_block.0.in_layers.0.weight"],
                 D, "diffusion_model", "sdxl", id="unet sdxl"),
    pytest.param(["encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"],
                 D, "vae", None, id="vae diffusers"),
    pytest.param(["encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight"], D, "vae", None, id="vae ldm"),
    pytest.param(["first_stage_model.encoder.down.0.block.0.conv1.weight"], D, "vae", None, id="vae with prefix"),
    pytest.param(["control_model.input_blocks.0.0.weight", "control_model.zero_convs.0.0.weight",
                  "control_model.input_hint_block.0.weight"], D, "controlnet", None, id="controlnet sd15"),
    pytest.param(["input_blocks.0.0.weight", "zero_convs.0.0.weight", "input_hint_block.0.weight"],
                 D, "controlnet", None, id="controlnet without prefix"),
    pytest.param(["controlnet_cond_embedding.conv_in.weight", "controlnet_down_blocks.0.weight", "add_embedding.linear_1.weight",
                  "down_blocks.0.resnets.0.conv1.weight"], D, "controlnet", "sdxl", id="controlnet sdxl diffusers"),
    pytest.param(["double_blocks.0.img_attn.qkv.weight", "controlnet_blocks.0.weight"], D, "controlnet", "flux", id="controlnet flux"),
    pytest.param(["image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"], D, "ipadapter", None, id="ipadapter"),
    pytest.param(["emb_params"], D, "embedding", None, id="embedding sd15"),
    pytest.param(["clip_g", "clip_l"], D, "embedding", "sdxl", id="embedding sdxl"),
    pytest.param(["text_model.encoder.layers.0.mlp.fc1.weight", "text_model.embeddings.token_embedding.weight"],
                 D, "text_encoder", None, id="text encoder clip"),
    pytest.param(["encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight", "shared.weight"],
                 D, "text_encoder", None, id="text encoder t5"),
    pytest.param(["text_model.encoder.layers.0.mlp.fc1.weight", "vision_model.encoder.layers.0.mlp.fc1.weight"],
                 D, "text_encoder", None, id="full clip is a text encoder"),
    pytest.param(["vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.embeddings.patch_embedding.weight"],
                 D, "clip_vision", None, id="clip vision"),
    pytest.param(["model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"], D, "upscaler", None, id="upscaler esrgan old"),
    pytest.param(["conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight"], D, "upscaler", None, id="upscaler esrgan"),
    pytest.param(["conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight"], D, "upscaler", None, id="upscaler realesrgan"),
    pytest.param(["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"],
                 LLM, None, None, id="llm"),
    pytest.param(["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", "pooler.dense.weight"],
                 ModelType.EMBEDDING, None, None, id="sentence embedding (bert)"),
    pytest.param(["foo.weight", "bar.bias"], None, None, None, id="nothing matches"),
]  # fmt: skip


@pytest.mark.parametrize(("names", "mtype", "kind", "family"), SAFETENSORS_CASES)
def test_safetensors_kind_and_family(
    tmp_path: Path, names: list[str], mtype: ModelType | None, kind: str | None, family: str | None
) -> None:
    probe = probe_file(write(tmp_path / "m.safetensors", safetensors_bytes(names)))
    assert probe.format is Format.SAFETENSORS
    assert (probe.type, probe.kind, probe.family) == (mtype, kind, family), probe.reason
    assert probe.tensor_count == len(names)
    assert probe.reason


def test_every_rule_names_a_known_kind_and_every_kind_rule_has_a_case() -> None:
    assert {r.kind for r in KIND_RULES} - {None} <= set(KNOWN_KINDS)
    tested = {p.values[2] for p in SAFETENSORS_CASES}
    assert {r.kind for r in KIND_RULES} <= tested
    assert {r.family for r in FAMILY_RULES} <= {p.values[3] for p in SAFETENSORS_CASES}


def test_the_reason_names_the_rule_and_an_example(tmp_path: Path) -> None:
    names = ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]
    probe = probe_file(write(tmp_path / "m.safetensors", safetensors_bytes(names)))
    assert "lora_unet_" in probe.reason and repr(names[0]) in probe.reason
    assert "family sd15" in probe.reason


def test_safetensors_dtypes_count_and_metadata(tmp_path: Path) -> None:
    names = {"double_blocks.0.a.weight": "F8_E4M3", "double_blocks.0.b.weight": "F8_E4M3",
             "double_blocks.0.norm.scale": "BF16"}  # fmt: skip
    meta = {"format": "pt", "modelspec.title": "Mine"}
    probe = probe_file(write(tmp_path / "m.safetensors", safetensors_bytes(names, meta)))
    assert probe.dtypes == (("F8_E4M3", 2), ("BF16", 1)) and probe.dtype == "F8_E4M3"
    assert probe.tensor_count == 3
    assert probe.meta == meta and probe.metadata == (("format", "pt"), ("modelspec.title", "Mine"))
    assert probe.architecture is None and probe.file_type is None


@pytest.mark.parametrize(
    ("key", "value", "family"),
    [("modelspec.architecture", "stable-diffusion-xl-v1-base/lora", "sdxl"),
     ("modelspec.architecture", "flux-1-dev/lora", "flux"),
     ("ss_base_model_version", "sd_v1", "sd15"),
     ("ss_base_model_version", "sd3", "sd3"),
     ("ss_base_model_version", "sd_v2", None)],
)  # fmt: skip
def test_family_from_trainer_metadata_when_names_do_not_tell(
    tmp_path: Path, key: str, value: str, family: str | None
) -> None:
    names = ["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"]
    data = safetensors_bytes(names, {key: value, "ss_network_dim": "16"})
    probe = probe_file(write(tmp_path / "m.safetensors", data))
    assert (probe.kind, probe.family) == ("lora", family)
    if family:
        assert f"__metadata__ {key}" in probe.reason


def test_tensor_names_win_over_metadata(tmp_path: Path) -> None:
    names = ["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"]
    data = safetensors_bytes(names, {"ss_base_model_version": "sdxl_base_v1-0"})
    assert probe_file(write(tmp_path / "m.safetensors", data)).family == "flux"


def test_the_format_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    probe = probe_file(write(tmp_path / "model.gguf", safetensors_bytes(["emb_params"])))
    assert (probe.format, probe.kind) == (Format.SAFETENSORS, "embedding")
    assert probe_file(write(tmp_path / "model.safetensors", llm_gguf())).format is Format.GGUF


def test_an_empty_header_is_safetensors_without_a_guess(tmp_path: Path) -> None:
    probe = probe_file(write(tmp_path / "m.safetensors", struct.pack("<Q", 2) + b"{}"))
    assert (probe.format, probe.tensor_count, probe.kind) == (Format.SAFETENSORS, 0, None)
    assert probe.reason == "no rule matched the tensor names"


# --- GGUF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "extra", "mtype", "kind", "family"),
    [pytest.param("llama", {}, LLM, "gguf", "llama", id="llama"),
     pytest.param("qwen2", {}, LLM, "gguf", "qwen2", id="qwen2"),
     pytest.param("llama", {"type": "adapter"}, LLM, "lora", "llama", id="llm lora adapter"),
     pytest.param("bert", {}, ModelType.EMBEDDING, "gguf", "bert", id="embedding model"),
     pytest.param("clip", {}, ModelType.VISION, "gguf", "clip", id="mmproj"),
     pytest.param("flux", {}, D, "diffusion_model", "flux", id="diffusion flux"),
     pytest.param("sd3", {}, D, "diffusion_model", "sd3", id="diffusion sd3"),
     pytest.param("sd1", {}, D, "diffusion_model", "sd15", id="diffusion sd1 is sd15"),
     pytest.param("wan", {}, D, "diffusion_model", "wan", id="diffusion wan"),
     pytest.param("t5encoder", {}, D, "text_encoder", None, id="t5 text encoder")],
)  # fmt: skip
def test_gguf_llm_or_diffusion(
    tmp_path: Path,
    arch: str,
    extra: dict[str, str],
    mtype: ModelType,
    kind: str,
    family: str | None,
) -> None:
    probe = probe_file(write(tmp_path / "m.gguf", llm_gguf(arch, general=extra)))
    assert probe.format is Format.GGUF
    assert (probe.type, probe.kind, probe.family) == (mtype, kind, family), probe.reason
    assert probe.architecture == arch and probe.name == f"My {arch}"
    assert f"general.architecture {arch!r}" in probe.reason


def test_gguf_header_fields(tmp_path: Path) -> None:
    probe = probe_file(write(tmp_path / "m.gguf", llm_gguf("llama", file_type=15)))
    assert (probe.version, probe.tensor_count) == (3, 291)
    assert (probe.file_type, probe.quantization) == (15, "Q4_K_M")
    assert probe.dtypes == () and probe.metadata == ()


def test_gguf_version_2_big_endian_and_unknown_file_types(tmp_path: Path) -> None:
    data = llm_gguf("qwen2", file_type=999, o=">")
    probe = probe_file(write(tmp_path / "be.gguf", data))
    assert (probe.architecture, probe.name) == ("qwen2", "My qwen2")
    assert (probe.file_type, probe.quantization) == (999, None)
    v2 = gguf_bytes(
        [kv_str("general.architecture", "flux"), kv_u32("general.file_type", 1)], version=2
    )
    probe = probe_file(write(tmp_path / "v2.gguf", v2))
    assert (probe.version, probe.family, probe.quantization) == (2, "flux", "F16")


def test_gguf_without_architecture_is_gguf_without_a_guess(tmp_path: Path) -> None:
    probe = probe_file(write(tmp_path / "m.gguf", gguf_bytes(every_type())))
    assert probe.format is Format.GGUF and probe.architecture is None
    assert (probe.type, probe.kind, probe.family) == (None, None, None)
    assert "without general.architecture" in probe.reason


def test_a_wanted_key_of_the_wrong_type_is_ignored(tmp_path: Path) -> None:
    kvs = [kv_u32("general.architecture", 7), kv_str("general.file_type", "Q4_K_M")]
    probe = probe_file(write(tmp_path / "m.gguf", gguf_bytes(kvs)))
    assert (probe.format, probe.architecture, probe.file_type) == (Format.GGUF, None, None)


def test_gguf_metadata_beyond_the_limit_is_not_read(tmp_path: Path) -> None:
    path = write(tmp_path / "m.gguf", llm_gguf())
    probe = probe_file(path, gguf_limit=100)
    assert probe.format is Format.UNKNOWN and "larger than 100 bytes" in probe.reason
    assert probe_file(path, gguf_limit=os.path.getsize(path)).format is Format.GGUF


# --- broken, hostile and odd inputs --------------------------------------------------------------


def _st_header(raw: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(raw) if length is None else length) + raw


GOOD_KVS = [kv_str("general.architecture", "llama")]
MALFORMED = [
    pytest.param(b"", "empty file", id="zero bytes"),
    pytest.param(b"\x05\x00\x00", "too short", id="three bytes"),
    pytest.param(_st_header(b'{"a": 1', 100), "truncated", id="truncated safetensors header"),
    pytest.param(_st_header(b"{}", 2**40), "more than 100000000", id="huge declared header"),
    pytest.param(_st_header(b"{}", MAX_SAFETENSORS_HEADER + 1), "more than", id="header just over the limit"),
    pytest.param(_st_header(b"{not json}"), "not JSON", id="non-JSON header"),
    pytest.param(_st_header(b"{\xff\xfe}"), "not JSON", id="header not UTF-8"),
    pytest.param(_st_header(b"[1, 2]"), "a JSON list, not a map", id="header a JSON list"),
    pytest.param(_st_header(b"{}" + b"[" * 100_000), "not JSON", id="trailing junk"),
    pytest.param(_st_header(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not JSON", id="deeply nested JSON"),
    pytest.param(_st_header(b'{"t": {"dtype": "F16", "shape": [1]}}'), "no data_offsets", id="tensor without offsets"),
    pytest.param(_st_header(b'{"t": {"dtype": 5, "shape": [1], "data_offsets": [0, 2]}}'), "no dtype", id="dtype not a string"),
    pytest.param(_st_header(b'{"t": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}}'), "no shape", id="negative shape"),
    pytest.param(_st_header(b'{"t": [1, 2]}'), "is not a map", id="tensor entry not a map"),
    pytest.param(_st_header(b'{"__metadata__": {"a": 1}}'), "__metadata__", id="metadata values not strings"),
    pytest.param(_st_header(b'{"__metadata__": []}'), "__metadata__", id="metadata not a map"),
    pytest.param(b"GGUX" + bytes(20), "more than", id="bad GGUF magic"),
    pytest.param(gguf_bytes(GOOD_KVS, version=1), "version 1 is not supported", id="GGUF version 1"),
    pytest.param(gguf_bytes(GOOD_KVS, version=7), "version 7 is not supported", id="GGUF version 7"),
    pytest.param(gguf_bytes(GOOD_KVS)[:40], "ends early", id="GGUF cut in a key"),
    pytest.param(b"GGUF\x03\x00\x00", "too short", id="GGUF cut in the header"),
    pytest.param(gguf_bytes([gstr("general.architecture") + struct.pack("<IQ", STRING, 2**62) + b"llama"]),
                 "ends early", id="GGUF string longer than the file"),
    pytest.param(gguf_bytes([gstr("k") + struct.pack("<IQ", STRING, 2**64 - 1)]), "ends early", id="GGUF string length 2**64-1"),
    pytest.param(gguf_bytes([kv_array("a", STRING, 2**63, b"")]), "cannot fit", id="GGUF array of 2**63 strings"),
    pytest.param(gguf_bytes([kv_array("a", U64, 2**60, b"")]), "ends early", id="GGUF array of 2**60 numbers"),
    pytest.param(gguf_bytes([kv_array("a", ARRAY, 2**40, b"")]), "cannot fit", id="GGUF array of 2**40 arrays"),
    pytest.param(gguf_bytes([kv("a", 13, b"\x00" * 8)]), "unknown value type 13", id="GGUF unknown value type"),
    pytest.param(gguf_bytes([kv_array("a", 99, 1, b"\x00" * 8)]), "unknown value type 99", id="GGUF unknown array type"),
    pytest.param(gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", ARRAY, 1) * 6 + struct.pack("<IQ", U8, 0))]),
                 "nested deeper", id="GGUF arrays nested too deep"),
    pytest.param(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**50) + bytes(40), "cannot fit", id="GGUF 2**50 key/values"),
    pytest.param(b"GGUF" + struct.pack("<IQQ", 3, 2**50, 0), "tensors cannot fit", id="GGUF 2**50 tensors"),
    pytest.param(b"PK\x03\x04" + bytes(60), "zip archive", id="zip (torch .ckpt)"),
    pytest.param(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8", "pickle", id="pickle (old torch .pt)"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_files_are_unknown_with_a_reason(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    probe = probe_file(write(tmp_path / "bad.safetensors", data))
    assert probe.format is Format.UNKNOWN, probe
    assert reason in probe.reason and probe.reason
    assert (probe.type, probe.kind, probe.family) == (None, None, None)


def test_a_folder_a_missing_file_and_a_fifo_are_unknown(tmp_path: Path) -> None:
    assert probe_file(tmp_path).reason == "a folder, not a file"
    missing = probe_file(tmp_path / "nope.safetensors")
    assert missing.format is Format.UNKNOWN and missing.reason.startswith("cannot read:")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        assert probe_file(tmp_path / "fifo").reason == "not a file"  # and did not hang


def test_a_safetensors_length_starting_like_a_pickle_is_still_safetensors(tmp_path: Path) -> None:
    raw = json.dumps({"emb_params": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}})
    raw += " " * (0x0280 - len(raw))  # the length's first bytes are \x80\x02, as a pickle's
    data = struct.pack("<Q", len(raw)) + raw.encode() + b"\x00\x00"
    assert data[:2] == b"\x80\x02"
    assert probe_file(write(tmp_path / "m.safetensors", data)).kind == "embedding"


# --- disagreement --------------------------------------------------------------------------------


def test_disagreement_names_what_differs(tmp_path: Path) -> None:
    lora = probe_file(write(tmp_path / "l.safetensors", safetensors_bytes(SDXL_LORA)))
    assert lora.disagreement("lora", D, "sdxl") is None
    assert lora.disagreement("lora", D, "SDXL-1.0") is None
    message = lora.disagreement("checkpoint", LLM, "sd15")
    assert message is not None
    assert "kind 'checkpoint' but the file looks like 'lora'" in message
    assert "type 'llm'" in message and "family 'sd15'" in message
    assert lora.disagreement("lora") is None, "what is not declared is not compared"


def test_disagreement_of_gguf_and_of_unknown_files(tmp_path: Path) -> None:
    flux = probe_file(write(tmp_path / "f.gguf", llm_gguf("flux")))
    assert flux.disagreement("gguf", D, "flux1-dev") is None, "kind gguf fits every GGUF"
    assert flux.disagreement("diffusion_model", D, "sd1.5") is not None
    assert flux.disagreement("text_encoder") is not None
    junk = probe_file(write(tmp_path / "j.safetensors", b"junk" * 10))
    assert junk.disagreement("vae", D, "sdxl") is None, "no guess, no disagreement"


# --- random input --------------------------------------------------------------------------------

VALID_GGUF = llm_gguf()
VALID_SAFETENSORS = safetensors_bytes(SDXL_CKPT, {"a": "b"})
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` cut short, or with a few bytes overwritten."""
    cut = st.integers(0, len(base)).map(lambda n: base[:n])
    edits = st.lists(
        st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
    return cut | edits.map(lambda es: bytes(_apply(bytearray(base), es)))


def _apply(data: bytearray, edits: list[tuple[int, int]]) -> bytearray:
    for at, value in edits:
        data[at] = value
    return data


RANDOM_FILES = (
    st.binary(max_size=300)
    | st.binary(max_size=200).map(lambda b: b"GGUF" + struct.pack("<I", 3) + b)
    | st.binary(max_size=200).map(lambda b: struct.pack("<Q", len(b)) + b)
    | st.dictionaries(st.text(max_size=8), _json, max_size=4).map(lambda d: _st_header(json.dumps(d).encode()))
    | _mutate(VALID_GGUF)
    | _mutate(VALID_SAFETENSORS)
)  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=RANDOM_FILES)
def test_any_bytes_give_a_probe_and_never_raise(tmp_path: Path, data: bytes) -> None:
    probe = probe_file(write(tmp_path / "random.bin", data))
    assert isinstance(probe, Probe) and probe.reason
    assert probe.format in Format
    if probe.format is Format.UNKNOWN:
        assert (probe.type, probe.kind, probe.family) == (None, None, None)
