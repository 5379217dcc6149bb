"""Synthetic model libraries for tests and benchmarks.

:func:`make_library` writes N model folders ``<root>/<type>/<family>/<name>/metadata.json`` (and,
optionally, ``overrides.json``) built from :mod:`reconciler.model` values through
:func:`reconciler.metadata.metadata_to_dict` and :func:`reconciler.metadata.dumps`, so every file is
exactly what mlib itself would write. Only the metadata is written: the weight files it describes do
not exist (the index never opens them).

Everything is drawn from a ``random.Random(seed)``: the same ``(n, tags_per_model, seed,
with_overrides)`` gives the same library, byte for byte, and the returned summary gives the exact
counts a caller can assert against (per tag, type, family, kind and app).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    dumps,
    metadata_to_dict,
    overrides_to_dict,
)
from reconciler.model import (
    AppOverride,
    FileEntry,
    HfSource,
    ImportMode,
    LocalSource,
    Metadata,
    ModelType,
    Overrides,
    Source,
    UrlSource,
)

#: The fixed tag vocabulary (40 tags); each model gets ``tags_per_model`` distinct ones of these.
VOCABULARY: tuple[str, ...] = (
    "base", "instruct", "chat", "fp16", "bf16", "fp8", "q4_k_m", "q8_0", "anime", "realistic",
    "photo", "style", "character", "concept", "upscale", "inpaint", "pose", "sfw", "merge",
    "finetune", "distilled", "turbo", "lightning", "lcm", "hires", "portrait", "landscape",
    "architecture", "3d", "pixel-art", "watercolor", "vision", "speech", "multilingual", "code",
    "math", "reasoning", "long-context", "tool-use", "experimental",
)  # fmt: skip

#: Families by type; a family name belongs to one type only, so a family count is unambiguous.
FAMILIES: dict[ModelType, tuple[str, ...]] = {
    ModelType.LLM: ("llama", "qwen", "mistral", "gemma", "phi"),
    ModelType.DIFFUSION: ("sd15", "sdxl", "flux", "sd3.5", "pixart"),
    ModelType.EMBEDDING: ("bge", "e5", "minilm"),
    ModelType.AUDIO: ("whisper", "bark"),
    ModelType.VISION: ("clip", "siglip"),
    ModelType.OTHER: ("misc",),
}

#: Kinds by type (a kind such as ``gguf`` or ``other`` appears under several types).
KINDS: dict[ModelType, tuple[str, ...]] = {
    ModelType.LLM: ("gguf", "diffusers", "other"),
    ModelType.DIFFUSION: ("checkpoint", "lora", "vae", "controlnet", "upscaler", "embedding"),
    ModelType.EMBEDDING: ("embedding", "gguf"),
    ModelType.AUDIO: ("audio_encoder", "other"),
    ModelType.VISION: ("clip_vision", "other"),
    ModelType.OTHER: ("other",),
}

#: Relative frequency of each type, so that the counts differ from type to type.
TYPE_WEIGHTS: dict[ModelType, int] = {
    ModelType.LLM: 30,
    ModelType.DIFFUSION: 45,
    ModelType.EMBEDDING: 10,
    ModelType.AUDIO: 6,
    ModelType.VISION: 6,
    ModelType.OTHER: 3,
}

#: App targets named in ``overrides.json`` when ``with_overrides`` is set.
APPS: tuple[str, ...] = ("comfy", "forge", "ollama")

_EXTENSIONS = {"gguf": ".gguf", "diffusers": ".safetensors"}
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def make_library(
    root: Path, n: int, *, tags_per_model: int = 5, seed: int = 0, with_overrides: bool = False
) -> dict[str, Any]:
    """Write ``n`` synthetic models under ``root`` and return what was written.

    Model names carry the seed, so libraries made with different seeds can share a root. The
    returned dict holds:

    - ``n``, ``seed``, ``root``;
    - ``tags``, ``types``, ``families``, ``kinds``: ``{value: number of models}``; ``tags`` counts
      models (a model's tags are distinct);
    - ``apps``: ``{app: number of models enabled for it}`` (no override entry means enabled), only
      the apps of :data:`APPS`; ``overrides``: how many overrides.json files were written;
    - ``models``: one dict per model, in id order, with ``id``, ``type``, ``family``, ``kind``,
      ``tags`` (tuple), ``official_name``, ``cleaned_name``, ``size_bytes``, ``sha256`` and
      ``apps`` (``{app: enabled}`` for the apps it has an override for), for brute-force checks.
    """
    if not 0 <= tags_per_model <= len(VOCABULARY):
        raise ValueError(f"tags_per_model must be between 0 and {len(VOCABULARY)}")
    rng = random.Random(seed)
    types = list(TYPE_WEIGHTS)
    weights = list(TYPE_WEIGHTS.values())
    made_dirs: set[str] = set()
    root_s = os.fspath(root)
    tag_counts: Counter[str] = Counter()
    type_counts: Counter[str] = Counter()
    family_counts: Counter[str] = Counter()
    kind_counts: Counter[str] = Counter()
    enabled_counts: Counter[str] = Counter({app: 0 for app in APPS})
    models: list[dict[str, Any]] = []
    overrides_written = 0

    for i in range(n):
        model_type = rng.choices(types, weights)[0]
        family = rng.choice(FAMILIES[model_type])
        kind = rng.choice(KINDS[model_type])
        tags = tuple(rng.sample(VOCABULARY, tags_per_model))
        name = f"{family}-{kind}-s{seed}-{i:06d}".replace("_", "-")
        model_id = f"{model_type.value}/{family}/{name}"
        official = f"Synth {family.upper()} {kind.replace('_', ' ').title()} S{seed} #{i:06d}"
        files = _files(rng, seed, i, name, kind)
        stamp = (_EPOCH + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = Metadata(
            id=model_id,
            official_name=official,
            cleaned_name=name,
            model_type=model_type,
            family=family,
            kind=kind,
            source=_source(seed, i, name, files[-1].path),
            files=files,
            added_at=stamp,
            updated_at=stamp,
            tags=tags,
        )

        parent = os.path.join(root_s, model_type.value, family)
        if parent not in made_dirs:
            os.makedirs(parent, exist_ok=True)
            made_dirs.add(parent)
        folder = os.path.join(parent, name)
        os.mkdir(folder)
        with open(os.path.join(folder, METADATA_FILE), "wb") as fh:
            fh.write(dumps(metadata_to_dict(meta)))

        apps: dict[str, bool] = {}
        if with_overrides:
            overrides = _overrides(rng)
            if overrides is not None:
                apps = {o.target: o.enabled for o in overrides.apps}
                with open(os.path.join(folder, OVERRIDES_FILE), "wb") as fh:
                    fh.write(dumps(overrides_to_dict(overrides)))
                overrides_written += 1
        for app in APPS:
            if apps.get(app, True):
                enabled_counts[app] += 1

        tag_counts.update(tags)
        type_counts[model_type.value] += 1
        family_counts[family] += 1
        kind_counts[kind] += 1
        primary = meta.primary
        models.append(
            {
                "id": model_id,
                "type": model_type.value,
                "family": family,
                "kind": kind,
                "tags": tags,
                "official_name": official,
                "cleaned_name": name,
                "size_bytes": meta.size_bytes,
                "sha256": None if primary is None else primary.sha256,
                "apps": apps,
            }
        )

    models.sort(key=lambda m: m["id"])
    return {
        "n": n,
        "seed": seed,
        "root": root_s,
        "tags": dict(tag_counts),
        "types": dict(type_counts),
        "families": dict(family_counts),
        "kinds": dict(kind_counts),
        "apps": dict(enabled_counts),
        "overrides": overrides_written,
        "models": models,
    }


def fake_hex(seed: int, *parts: object) -> str:
    """A well-formed, deterministic 64-hex digest (sha256 of the seed and ``parts``)."""
    key = "/".join(map(str, (seed, *parts)))
    return hashlib.sha256(key.encode()).hexdigest()


def _files(rng: random.Random, seed: int, i: int, name: str, kind: str) -> tuple[FileEntry, ...]:
    weights = name + _EXTENSIONS.get(kind, ".safetensors")
    out = [
        FileEntry(
            weights,
            rng.randrange(1 << 20, 8 << 30),
            fake_hex(seed, i, weights, "sha256"),
            fake_hex(seed, i, weights, "blake3"),
        )
    ]
    if i % 5 == 0:  # every fifth model is a small bundle: weights plus a config
        out.append(
            FileEntry(
                "config.json",
                rng.randrange(100, 10_000),
                fake_hex(seed, i, "config.json", "sha256"),
                fake_hex(seed, i, "config.json", "blake3"),
            )
        )
    return tuple(sorted(out, key=lambda f: f.path))


def _source(seed: int, i: int, name: str, filename: str) -> Source:
    match i % 3:
        case 0:
            return HfSource(repo=f"synth/{name}", revision=fake_hex(seed, "rev", i)[:40])
        case 1:
            return UrlSource(url=f"https://models.invalid/{name}/{filename}", filename=filename)
        case _:
            return LocalSource(path=f"/downloads/{filename}", mode=ImportMode.COPY)


def _overrides(rng: random.Random) -> Overrides | None:
    """About a third of models have no overrides.json; the rest name some apps, some disabled."""
    if rng.random() < 0.35:
        return None
    apps = []
    for app in APPS:
        roll = rng.random()
        if roll < 0.4:
            continue
        apps.append(AppOverride(target=app, enabled=roll >= 0.7, versions=">=0.1"))
    return Overrides(apps=tuple(apps))
