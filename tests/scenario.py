"""Build real scenarios on disk for end-to-end tests: sources, a manifest, an empty ComfyUI folder,
and the checks that say whether a library, its sources and an app folder are what they should be.

Everything is written under a folder the test gives (its ``tmp_path``); the ``mlib`` console script
of the running venv is run as a subprocess, always with a timeout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MLIB = Path(sys.executable).parent / "mlib"
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MANIFEST = REPO / "manifests" / "example.yaml"
MAKE_EXAMPLE = REPO / "manifests" / "make_example.py"
MiB = 1 << 20

#: Files the library keeps beside the model folders (the index and mlib's own folder).
LIBRARY_EXTRAS = frozenset({"models.db", "models.db-wal", "models.db-shm", "models.db-journal"})


class StillBroken(AssertionError):
    """Raised by the final check of a test marked ``xfail(raises=StillBroken, strict=True)``: only
    the known bug counts as the expected failure; any other failure (a broken setup) is reported."""


def mlib(manifest: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``mlib -m MANIFEST ARGS...`` to completion (raises on timeout)."""
    return subprocess.run(
        [str(MLIB), "-m", str(manifest), *args],
        cwd=manifest.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mlib_popen(manifest: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``mlib -m MANIFEST ARGS...``; the caller waits on it with a timeout."""
    return subprocess.Popen(
        [str(MLIB), "-m", str(manifest), *args],
        cwd=manifest.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def safetensors_bytes(payload: int, seed: int) -> bytes:
    """A valid .safetensors file: one U8 tensor of ``payload`` pseudo-random bytes (so no two
    files share content and a wrong byte anywhere changes the sha256)."""
    header = {
        "__metadata__": {"format": "pt", "seed": str(seed)},
        "weight": {"dtype": "U8", "shape": [payload], "data_offsets": [0, payload]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + random.Random(seed).randbytes(payload)


# --- a scenario of several local models ---------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: where it is relative to the source, and its bytes."""

    rel: str  # "" for a single-file source
    data: bytes

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ModelCase:
    name: str
    kind: str
    mode: str  # copy | hardlink | move
    source: str  # relative to the scenario folder
    files: tuple[SourceFile, ...]
    #: model-relative path of each source file in the library (single files get a cleaned name)
    library_names: tuple[str, ...]
    #: (path below the app's models folder, path below the model folder; "" = the folder itself)
    links: tuple[tuple[str, str], ...]
    family: str = "sdxl"
    type: str = "diffusion"
    slug: str = ""

    @property
    def id(self) -> str:
        return f"{self.type}/{self.family}/{self.slug}"

    @property
    def is_folder(self) -> bool:
        return self.files[0].rel != ""


@dataclass
class Scenario:
    folder: Path
    models: tuple[ModelCase, ...]
    manifest: Path = field(init=False)
    library: Path = field(init=False)
    models_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.manifest = self.folder / "mlib.yaml"
        self.library = self.folder / "library"
        self.models_dir = self.folder / "ComfyUI" / "models"

    def source_path(self, model: ModelCase, f: SourceFile) -> Path:
        base = self.folder / model.source
        return base / f.rel if f.rel else base

    def model_folder(self, model: ModelCase) -> Path:
        return self.library / model.id

    def write(self, *, link: str = "auto") -> Scenario:
        """Write every source file and the manifest; make the app's empty models folder."""
        for model in self.models:
            for f in model.files:
                path = self.source_path(model, f)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.data)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": 1,
            "library": "library",
            "apps": {
                "comfy": {
                    "app": "comfyui",
                    "version": "0.3.62",
                    "models_dir": "ComfyUI/models",
                    "link": link,
                }
            },
            "models": [
                {
                    "name": m.name,
                    "type": m.type,
                    "family": m.family,
                    "kind": m.kind,
                    "source": {"path": m.source, "mode": m.mode},
                }
                for m in self.models
            ],
        }
        self.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self

    def remove(self) -> None:
        shutil.rmtree(self.folder)

    # -- checks; each returns a list of problems (empty when all is well) -----------------------

    def library_problems(self) -> list[str]:
        """Every model folder outside ``.mlib`` is complete: metadata.json parses and lists exactly
        the files present, with the right sizes and sha256, and those are the source's bytes."""
        problems: list[str] = []
        if not self.library.exists():
            return problems
        by_id = {m.id: m for m in self.models}
        for entry in sorted(self.library.iterdir()):
            if entry.name == ".mlib" or entry.name in LIBRARY_EXTRAS:
                continue
            if not entry.is_dir():
                problems.append(f"stray file {entry} at the library's top level")
                continue
            for family in sorted(entry.iterdir()):
                if not family.is_dir():
                    problems.append(f"stray file {family}")
                    continue
                for folder in sorted(family.iterdir()):
                    model_id = folder.relative_to(self.library).as_posix()
                    model = by_id.get(model_id)
                    if model is None:
                        problems.append(f"unexpected model folder {model_id}")
                        continue
                    problems += self.model_problems(model)
        return problems

    def model_problems(self, model: ModelCase) -> list[str]:
        folder = self.model_folder(model)
        where = model.id
        try:
            meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return [f"{where}: partial model folder: metadata.json unreadable ({exc})"]
        problems: list[str] = []
        if meta.get("id") != model.id:
            problems.append(f"{where}: metadata id is {meta.get('id')!r}")
        if not (folder / "overrides.json").is_file():
            problems.append(f"{where}: overrides.json missing")
        else:
            json.loads((folder / "overrides.json").read_text(encoding="utf-8"))
        present = {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() or p.is_symlink()
        } - {"metadata.json", "overrides.json"}
        listed = {f["path"]: f for f in meta.get("files", [])}
        if set(listed) != present:
            problems.append(
                f"{where}: metadata lists {sorted(listed)}, folder has {sorted(present)}"
            )
        expected = dict(zip(model.library_names, model.files, strict=True))
        if set(expected) != present:
            problems.append(f"{where}: expected files {sorted(expected)}, found {sorted(present)}")
        for rel in sorted(present & set(listed)):
            path = folder / rel
            entry = listed[rel]
            size = path.stat().st_size
            digest = sha256_file(path)
            if size != entry.get("size") or digest != entry.get("sha256"):
                problems.append(f"{where}/{rel}: size/sha256 differ from metadata.json")
            if rel in expected and digest != expected[rel].sha256:
                problems.append(f"{where}/{rel}: not the bytes of its source")
        return problems

    def source_problems(self) -> list[str]:
        """Every source file holds its original bytes; a ``move`` source may be gone only once its
        model folder is complete and verified."""
        problems: list[str] = []
        for model in self.models:
            complete: bool | None = None
            for f in model.files:
                path = self.source_path(model, f)
                if not path.exists():
                    if model.mode != "move":
                        problems.append(f"{path}: source gone ({model.mode} never removes it)")
                        continue
                    if complete is None:
                        complete = self.model_folder(model).is_dir() and not self.model_problems(
                            model
                        )
                    if not complete:
                        problems.append(f"{path}: moved away before {model.id} was complete")
                    continue
                if sha256_file(path) != f.sha256:
                    problems.append(f"{path}: source bytes changed")
        # Nothing new beside the sources either (mlib writes only in the library and app folders).
        sources = {self.source_path(m, f) for m in self.models for f in m.files}
        downloads = self.folder / "downloads"
        extra = sorted(p for p in downloads.rglob("*") if not p.is_dir() and p not in sources)
        problems += [f"{p}: appeared beside the sources" for p in extra]
        return problems

    def expected_links(self) -> dict[str, Path]:
        """App-relative link path -> the library path it must show."""
        out: dict[str, Path] = {}
        for model in self.models:
            for link, inside in model.links:
                target = self.model_folder(model)
                out[link] = target / inside if inside else target
        return out

    def app_problems(self) -> list[str]:
        """The app folder holds exactly the expected links, each showing the right library path."""
        return link_problems(self.models_dir, app_entries(self.models_dir), self.expected_links())

    def staging_entries(self) -> list[str]:
        staging = self.library / ".mlib" / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def app_entries(models_dir: Path) -> dict[str, str]:
    """Everything in an app's models folder that is not a plain folder, by relative path: symlinks
    (never followed) and files, with their kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(models_dir):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(models_dir).as_posix()
            if path.is_symlink():
                out[rel] = "symlink"
            elif path.is_file():
                out[rel] = "file"
    return out


@functools.cache
def _blob(payload: int, seed: int) -> bytes:
    return safetensors_bytes(payload, seed)


def crash_models(scale: int = MiB) -> tuple[ModelCase, ...]:
    """Five models: big single files (copy and move), a multi-file bundle of a few MB each (copy)
    and a small bundle (move). Sizes are multiples of ``scale``."""
    bundle = (
        SourceFile("model_index.json", b'{"_class_name": "StableDiffusionXLPipeline"}\n'),
        SourceFile("unet/config.json", b'{"in_channels": 4}\n'),
        SourceFile("unet/diffusion_pytorch_model.safetensors", _blob(4 * scale, 11)),
        SourceFile("vae/diffusion_pytorch_model.safetensors", _blob(2 * scale, 12)),
        SourceFile("text_encoder/model.safetensors", _blob(3 * scale, 13)),
    )
    small_bundle = (
        SourceFile("model_index.json", b'{"_class_name": "TinyPipeline"}\n'),
        SourceFile("unet/diffusion_pytorch_model.safetensors", _blob(scale // 2, 21)),
        SourceFile("vae/diffusion_pytorch_model.safetensors", _blob(scale // 4, 22)),
    )
    return (
        ModelCase(
            name="Big Checkpoint",
            slug="big_checkpoint",
            kind="checkpoint",
            mode="copy",
            source="downloads/big-checkpoint.safetensors",
            files=(SourceFile("", _blob(24 * scale, 1)),),
            library_names=("big-checkpoint.safetensors",),
            links=(("checkpoints/big-checkpoint.safetensors", "big-checkpoint.safetensors"),),
        ),
        ModelCase(
            name="Moved LoRA",
            slug="moved_lora",
            kind="lora",
            mode="move",
            source="downloads/moved lora (v1).safetensors",
            files=(SourceFile("", _blob(16 * scale, 2)),),
            library_names=("moved_lora_v1.safetensors",),
            links=(("loras/moved_lora_v1.safetensors", "moved_lora_v1.safetensors"),),
        ),
        ModelCase(
            name="Text Encoder",
            slug="text_encoder",
            kind="text_encoder",
            mode="copy",
            source="downloads/t5-encoder.safetensors",
            files=(SourceFile("", _blob(16 * scale, 3)),),
            library_names=("t5-encoder.safetensors",),
            links=(("text_encoders/t5-encoder.safetensors", "t5-encoder.safetensors"),),
        ),
        ModelCase(
            name="Pipeline Bundle",
            slug="pipeline_bundle",
            kind="diffusers",
            mode="copy",
            source="downloads/pipeline-bundle",
            files=bundle,
            library_names=tuple(f.rel for f in bundle),
            links=(("diffusers/pipeline_bundle", ""),),
        ),
        ModelCase(
            name="Moved Bundle",
            slug="moved_bundle",
            kind="diffusers",
            mode="move",
            source="downloads/moved-bundle",
            files=small_bundle,
            library_names=tuple(f.rel for f in small_bundle),
            links=(("diffusers/moved_bundle", ""),),
        ),
    )


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def link_problems(
    models_dir: Path, found: Mapping[str, object], expected: Mapping[str, Path | str]
) -> list[str]:
    """How the app folder's entries ``found`` (relative paths) differ from the ``expected``
    links (relative path -> the library path each must show)."""
    problems: list[str] = []
    if set(found) != set(expected):
        problems.append(f"app folder has {sorted(found)}, expected {sorted(expected)}")
    for rel, target in expected.items():
        path = models_dir / rel
        if rel in found and os.path.realpath(path) != os.path.realpath(target):
            problems.append(f"{rel} shows {os.path.realpath(path)}, expected {target}")
    return problems


def project(folder: Path, models: Sequence[Mapping[str, object]]) -> Path:
    """``folder/mlib.yaml`` with the library in ``folder/lib``, one ComfyUI app target ``comfy``
    (its models folder ``folder/comfy`` made) and ``models``; returns its path."""
    manifest = folder / "mlib.yaml"
    (folder / "comfy").mkdir(parents=True, exist_ok=True)
    write_yaml(
        manifest,
        {
            "version": 1,
            "library": "lib",
            "apps": {"comfy": {"app": "comfyui", "version": "0.3.62", "models_dir": "comfy"}},
            "models": models,
        },
    )
    return manifest


def write_yaml(path: Path, doc: Any) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


# --- the repository's example, rebuilt in a temp folder -----------------------------------------


def make_example(
    folder: Path, *, link: str = "auto", comfy: str = "ComfyUI", apps_off: tuple[str, ...] = ()
) -> Path:
    """The example of ``manifests/``: its files made by ``make_example.py`` in ``folder/example``
    and its manifest at ``folder/manifests/example.yaml`` (so its relative paths hold as they are),
    with the app target's ``link`` mode and ComfyUI folder name changed when asked, and the models
    named in ``apps_off`` not linked into it."""
    subprocess.run(
        [sys.executable, str(MAKE_EXAMPLE), str(folder / "example")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    doc = read_yaml(EXAMPLE_MANIFEST)
    doc["apps"]["comfy"]["link"] = link
    doc["apps"]["comfy"]["models_dir"] = f"../example/{comfy}/models"
    for model in doc["models"]:
        if model["name"] in apps_off:
            model["apps"] = {"comfy": False}
    manifest = folder / "manifests" / "example.yaml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_yaml(manifest, doc)
    (folder / "example" / comfy / "models").mkdir(parents=True, exist_ok=True)
    return manifest
