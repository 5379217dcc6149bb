"""SIGKILL ``mlib apply`` at random moments of one mixed scenario and check DESIGN §6 after each.

The scenario ("world") is one folder: sources in ``downloads/``, a manifest, a library, a ComfyUI
folder holding the user's own files, and files of the user's beside all of that. A local
``UrlServer`` serves two models and a fake Hub (``FakeHub``) a three-file repository, throttled
so that a download lasts long enough to be killed.
The manifest alternates between two stages, so every ``apply --prune`` has work of every kind:

===========  ====================================  ======================================
model        stage A                               stage B
===========  ====================================  ======================================
base         "Base Checkpoint" (copy, 1 file)      renamed "Base Checkpoint XL": rename,
                                                   relink
encoder      copy, linked                          ``apps: {comfy: false}``: unlink
bundle       copy of a diffusers folder            left the manifest: prune (trash)
moved_lora   move of one file                      prune
moved_bundle move of a diffusers folder            prune
url_vae      URL download                          prune
hub_bundle   Hub download of a diffusers folder    prune
             (3 files: fetched in parallel)
url_upscaler --                                    URL download
extra_lora   --                                    hardlink import
===========  ====================================  ======================================

Back from B to A, the pruned models come back (the user drops new copies of the moved files),
the B-only ones are pruned, the checkpoint is renamed back and the encoder linked again.

Each kill: start ``mlib apply -y --prune`` for the next stage and SIGKILL it (seeded): half of
the runs after a random delay within the time an unkilled run of that transition takes, half
right after a random file-system call (``HOOK``) of a random action of the plan, of the kind
aimed at least often so far. Then check

* right after the kill: every model folder in the library is complete (metadata.json lists
  exactly the files present, sizes and sha256 right, and they are the source's bytes); every link
  in the app folder is a symlink into the library (one left dangling by a rename is counted, not
  an error: the next apply relinks it); the user's files unchanged;
* after ``apply -y --prune`` again: exit 0, ``plan --prune --detailed-exitcode`` exit 0, ``verify``
  exit 0, ``lock --check`` exit 0 (mlib.lock current), the library holds exactly the stage's models, the app folder exactly their links plus
  the user's own files, ``.mlib/staging`` is empty, sources and foreign files hash as before.

Where a kill landed is read from what the converging apply still had to do (the first action of
the unkilled run's list it repeats) and from what stood in ``.mlib/staging``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from scenario import (
    MLIB,
    MiB,
    SourceFile,
    app_entries,
    link_problems,
    safetensors_bytes,
    sha256_file,
)
from servers import HOST, FakeHub, UrlServer

Stage = Literal["A", "B"]
#: A transition: "0A" from an empty library to stage A, "AB" and "BA" between the stages.
Transition = Literal["0A", "AB", "BA"]
RUN_TIMEOUT = 120.0
POLL = 0.001
#: The URL server's pace for the model files: a download lasts a good part of a run.
DEFAULT_RATE = 24 * MiB
#: A kill's delay is drawn in [0, this x the unkilled run's duration].
SPREAD = 1.1
HUB_REPO = "org/tiny-pipeline"
LIBRARY_EXTRAS = frozenset({"models.db", "models.db-wal", "models.db-shm", "models.db-journal"})


# --- the models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    key: str  #: the same model in both stages (renamed or not)
    name: str
    kind: str
    mode: str  #: copy | move | hardlink | url
    source: str  #: a path below the world folder, or a path on the URL server
    files: tuple[SourceFile, ...]
    library_names: tuple[str, ...]  #: model-relative path of each file in the library
    links: tuple[tuple[str, str], ...]  #: (path below ComfyUI/models, path below the model)
    slug: str
    linked: bool = True
    type: str = "diffusion"
    family: str = "sdxl"

    @property
    def id(self) -> str:
        return f"{self.type}/{self.family}/{self.slug}"

    @property
    def local(self) -> bool:
        return self.mode not in ("url", "hf")


@functools.cache
def _blob(payload: int, seed: int) -> bytes:
    return safetensors_bytes(payload, seed)


@functools.cache
def catalogue(scale: int) -> dict[Stage, tuple[Model, ...]]:
    """The models of each stage; file sizes are multiples of ``scale`` bytes."""

    def blob(units: float, seed: int) -> bytes:
        return _blob(int(units * scale), seed)

    def single(
        key: str,
        name: str,
        kind: str,
        mode: str,
        source: str,
        file: str,
        folder: str,
        slug: str,
        units: float,
        seed: int,
    ) -> Model:
        return Model(
            key,
            name,
            kind,
            mode,
            source,
            (SourceFile("", blob(units, seed)),),
            (file,),
            ((f"{folder}/{file}", file),),
            slug,
        )

    bundle_files = (
        SourceFile("model_index.json", b'{"_class_name": "StableDiffusionXLPipeline"}\n'),
        SourceFile("unet/config.json", b'{"in_channels": 4}\n'),
        SourceFile("unet/diffusion_pytorch_model.safetensors", blob(6, 11)),
        SourceFile("vae/diffusion_pytorch_model.safetensors", blob(2, 12)),
        SourceFile("text_encoder/model.safetensors", blob(3, 13)),
    )
    small_bundle = (
        SourceFile("model_index.json", b'{"_class_name": "TinyPipeline"}\n'),
        SourceFile("unet/diffusion_pytorch_model.safetensors", blob(2, 21)),
        SourceFile("vae/diffusion_pytorch_model.safetensors", blob(1, 22)),
    )
    base = single(
        "base",
        "Base Checkpoint",
        "checkpoint",
        "copy",
        "downloads/base-checkpoint.safetensors",
        "base-checkpoint.safetensors",
        "checkpoints",
        "base_checkpoint",
        12,
        1,
    )
    encoder = single(
        "encoder",
        "Text Encoder",
        "text_encoder",
        "copy",
        "downloads/t5-encoder.safetensors",
        "t5-encoder.safetensors",
        "text_encoders",
        "text_encoder",
        6,
        2,
    )
    bundle = Model(
        "bundle",
        "Pipeline Bundle",
        "diffusers",
        "copy",
        "downloads/pipeline-bundle",
        bundle_files,
        tuple(f.rel for f in bundle_files),
        (("diffusers/pipeline_bundle", ""),),
        "pipeline_bundle",
    )
    moved_lora = single(
        "moved_lora",
        "Moved LoRA",
        "lora",
        "move",
        "downloads/moved lora (v1).safetensors",
        "moved_lora_v1.safetensors",
        "loras",
        "moved_lora",
        6,
        3,
    )
    moved_bundle = Model(
        "moved_bundle",
        "Moved Bundle",
        "diffusers",
        "move",
        "downloads/moved-bundle",
        small_bundle,
        tuple(f.rel for f in small_bundle),
        (("diffusers/moved_bundle", ""),),
        "moved_bundle",
    )
    url_vae = single(
        "url_vae",
        "URL VAE",
        "vae",
        "url",
        "/files/sdxl-vae.safetensors",
        "sdxl-vae.safetensors",
        "vae",
        "url_vae",
        10,
        4,
    )
    url_upscaler = single(
        "url_upscaler",
        "URL Upscaler",
        "upscaler",
        "url",
        "/files/4x-upscaler.safetensors",
        "4x-upscaler.safetensors",
        "upscale_models",
        "url_upscaler",
        8,
        5,
    )
    extra_lora = single(
        "extra_lora",
        "Extra LoRA",
        "lora",
        "hardlink",
        "downloads/extra-lora.safetensors",
        "extra-lora.safetensors",
        "loras",
        "extra_lora",
        4,
        6,
    )
    hub_files = (
        SourceFile("model_index.json", b'{"_class_name": "TinyHubPipeline"}\n'),
        SourceFile("unet/diffusion_pytorch_model.safetensors", blob(4, 31)),
        SourceFile("vae/diffusion_pytorch_model.safetensors", blob(2, 32)),
    )
    hub_bundle = Model("hub_bundle", "Hub Pipeline", "diffusers", "hf", HUB_REPO, hub_files,
                       tuple(f.rel for f in hub_files), (("diffusers/hub_pipeline", ""),),
                       "hub_pipeline")  # fmt: skip
    stage_a = (base, encoder, bundle, moved_lora, moved_bundle, url_vae, hub_bundle)
    stage_b = (
        dataclasses.replace(base, name="Base Checkpoint XL", slug="base_checkpoint_xl"),
        dataclasses.replace(encoder, linked=False),
        url_upscaler,
        extra_lora,
    )
    return {"A": stage_a, "B": stage_b}


def remote_models(scale: int, mode: str) -> list[Model]:
    return [m for models in catalogue(scale).values() for m in models if m.mode == mode]


@dataclass
class Servers:
    url: UrlServer
    hub: FakeHub

    def env(self) -> dict[str, str]:
        """What the mlib subprocesses need to find the fake Hub and leave the real one alone."""
        return {
            **os.environ,
            "HF_ENDPOINT": self.hub.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": HOST,
            "no_proxy": HOST,
        }


@contextmanager
def model_servers(scale: int, rate: int = DEFAULT_RATE) -> Iterator[Servers]:
    """The URL models on a URL server, the Hub model on a fake Hub; each GET of a model file
    (on the Hub: of an LFS file, from its CDN) throttled to ``rate`` bytes a second."""
    with UrlServer() as srv, FakeHub() as hub:
        for m in remote_models(scale, "url"):
            srv.add(m.source, m.files[0].data)
            srv.slow(rate, times=1 << 30, path=m.source)
        for m in remote_models(scale, "hf"):
            hub.add_repo(m.source, {f.rel: f.data for f in m.files})
            for f in m.files:
                if f.rel.endswith(".safetensors"):
                    hub.slow(rate, times=1 << 30, path=hub.lfs_path(m.source, f.rel))
        yield Servers(srv, hub)


# --- one world ----------------------------------------------------------------------------------


class World:
    """A scenario folder: sources, manifest, library, ComfyUI folder and the user's own files."""

    def __init__(self, folder: Path, servers: Servers, scale: int) -> None:
        self.folder = folder
        self.servers = servers
        self.env = servers.env()
        self.scale = scale
        self.manifest = folder / "mlib.yaml"
        self.library = folder / "library"
        self.models_dir = folder / "ComfyUI" / "models"
        self.stage: Stage | None = None
        self.known = {m.id: m for ms in catalogue(scale).values() for m in ms}
        self.local = {m.key: m for ms in catalogue(scale).values() for m in ms if m.local}
        self.foreign: dict[str, tuple[str, str]] = {}
        self.stale_ids: set[str] = set()  #: renamed folders whose metadata.json has the old id

    def create(self) -> World:
        for m in self.local.values():
            self._write_source(m)
        self.models_dir.mkdir(parents=True)
        # The user's own things, which mlib must never touch: a real model file and a note in
        # ComfyUI's folders, their own symlink there, a file beside the library, another app.
        own = {
            self.models_dir / "checkpoints" / "my-own-model.safetensors": _blob(4096, 900),
            self.models_dir / "loras" / "README.txt": b"my loras, do not touch\n",
            self.folder / "ComfyUI" / "extra_model_paths.yaml": b"# the user's own file\n",
            self.folder / "notes.txt": b"next to the library\n",
            self.folder / "elsewhere" / "vae.bin": _blob(2048, 901),
            self.folder / "other-app" / "models" / "x.safetensors": _blob(1024, 902),
        }
        for path, data in own.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self.models_dir / "vae").mkdir(exist_ok=True)
        os.symlink("../../../elsewhere/vae.bin", self.models_dir / "vae" / "my-link.bin")
        self.foreign = self.snapshot_foreign()
        return self

    def _write_source(self, m: Model) -> None:
        for f in m.files:
            path = self.source_path(m, f)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f.data)

    def source_path(self, m: Model, f: SourceFile) -> Path:
        base = self.folder / m.source
        return base / f.rel if f.rel else base

    def model_folder(self, m: Model) -> Path:
        return self.library / m.id

    def models(self, stage: Stage | None = None) -> tuple[Model, ...]:
        stage = stage or self.stage
        return catalogue(self.scale)[stage] if stage else ()

    def write_stage(self, stage: Stage) -> None:
        """The manifest of ``stage``; a moved model coming back gets a new source file (the
        user drops a new copy in downloads/), when its old one was moved into the library."""
        for m in self.models(stage):
            gone = not all(self.source_path(m, f).exists() for f in m.files)
            if m.mode == "move" and gone and not self.model_folder(m).exists():
                self._write_source(m)
        entries: list[dict[str, Any]] = []
        for m in self.models(stage):
            source: dict[str, Any] = {"path": m.source, "mode": m.mode}
            if m.mode == "url":
                source = {"url": self.servers.url.url(m.source)}
            elif m.mode == "hf":
                source = {"hf": m.source}
            entry: dict[str, Any] = {
                "name": m.name,
                "type": m.type,
                "family": m.family,
                "kind": m.kind,
                "source": source,
            }
            if not m.linked:
                entry["apps"] = {"comfy": False}
            entries.append(entry)
        doc = {
            "version": 1,
            "library": "library",
            "apps": {
                "comfy": {"app": "comfyui", "version": "0.3.62", "models_dir": "ComfyUI/models"}
            },
            "models": entries,
        }
        self.manifest.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        self.stage = stage

    # -- snapshots and checks (each returns problems; empty when all is well) -------------------

    def snapshot_foreign(self) -> dict[str, tuple[str, str]]:
        """The user's own files and links, by path below the world folder: what they are and
        their sha256 or link text. (Sources are checked against their known bytes instead.)"""
        out: dict[str, tuple[str, str]] = {}
        skip = (self.library, self.folder / "downloads", self.manifest, self.folder / "mlib.lock")
        for path in sorted(self.folder.rglob("*")):
            if any(path == s or s in path.parents for s in skip):
                continue
            rel = path.relative_to(self.folder).as_posix()
            if path.is_symlink():
                target = os.readlink(path)
                if not target.startswith("../../../elsewhere"):
                    continue  # one of mlib's links
                out[rel] = ("symlink", target)
            elif path.is_file():
                out[rel] = ("file", sha256_file(path))
        return out

    def foreign_problems(self) -> list[str]:
        now = self.snapshot_foreign()
        return [
            f"the user's {rel} changed: {was} -> {now.get(rel)}"
            for rel, was in self.foreign.items()
            if now.get(rel) != was
        ] + [
            f"{rel} appeared among the user's files" for rel in sorted(set(now) - set(self.foreign))
        ]

    def source_problems(self) -> list[str]:
        """Every source holds its bytes; a ``move`` source may be gone only once its model is
        complete in the library (or was, before a later stage pruned it)."""
        problems: list[str] = []
        for m in self.local.values():
            for f in m.files:
                path = self.source_path(m, f)
                if not path.exists():
                    if m.mode != "move":
                        problems.append(f"{path}: source gone ({m.mode} never removes it)")
                    elif self.model_folder(m).exists() and self.model_problems(m):
                        problems.append(f"{path}: moved away before {m.id} was complete")
                    continue
                if sha256_file(path) != f.sha256:
                    problems.append(f"{path}: source bytes changed")
        sources = {self.source_path(m, f) for m in self.local.values() for f in m.files}
        downloads = self.folder / "downloads"
        extra = sorted(p for p in downloads.rglob("*") if not p.is_dir() and p not in sources)
        return problems + [f"{p}: appeared beside the sources" for p in extra]

    def library_problems(self, expected: set[str] | None = None) -> list[str]:
        """Every model folder is complete and one of the known models (``expected``: exactly
        these ids)."""
        problems: list[str] = []
        found: set[str] = set()
        if not self.library.exists():
            return problems if not expected else [f"no library; expected {sorted(expected)}"]
        for entry in sorted(self.library.iterdir()):
            if entry.name == ".mlib" or entry.name in LIBRARY_EXTRAS:
                continue
            if not entry.is_dir() or entry.is_symlink():
                problems.append(f"stray {entry} at the library's top level")
                continue
            for family in sorted(entry.iterdir()):
                if not family.is_dir():
                    problems.append(f"stray file {family}")
                    continue
                for folder in sorted(family.iterdir()):
                    model_id = folder.relative_to(self.library).as_posix()
                    found.add(model_id)
                    model = self.known.get(model_id)
                    if model is None:
                        problems.append(f"unexpected model folder {model_id}")
                    else:
                        problems += self.model_problems(model)
        if expected is not None and found != expected:
            problems.append(f"library holds {sorted(found)}, expected {sorted(expected)}")
        return problems

    def model_problems(self, m: Model) -> list[str]:
        folder = self.model_folder(m)
        try:
            meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            json.loads((folder / "overrides.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return [f"{m.id}: partial model folder: {exc}"]
        problems: list[str] = []
        if meta.get("id") != m.id:
            renamed = {o.id for o in self.known.values() if o.key == m.key} - {m.id}
            if meta.get("id") in renamed:
                # Killed between the rename of the folder and the write of its metadata: the
                # files are complete, the id is the old one; the next apply rewrites it (and
                # until then 'mlib index rebuild' skips the model, saying why).
                self.stale_ids.add(m.id)
            else:
                problems.append(f"{m.id}: metadata id is {meta.get('id')!r}")
        present = {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() or p.is_symlink()
        } - {"metadata.json", "overrides.json"}
        listed = {f["path"]: f for f in meta.get("files", [])}
        expected = dict(zip(m.library_names, m.files, strict=True))
        if set(listed) != present or set(expected) != present:
            problems.append(
                f"{m.id}: metadata lists {sorted(listed)}, folder has {sorted(present)}, "
                f"expected {sorted(expected)}"
            )
        for rel in sorted(present & set(listed) & set(expected)):
            path = folder / rel
            digest = sha256_file(path)
            if path.stat().st_size != listed[rel].get("size") or digest != listed[rel].get(
                "sha256"
            ):
                problems.append(f"{m.id}/{rel}: size/sha256 differ from metadata.json")
            if digest != expected[rel].sha256:
                problems.append(f"{m.id}/{rel}: not the bytes of its source")
        return problems

    def expected_links(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for m in self.models():
            if m.linked:
                for link, inside in m.links:
                    out[link] = self.model_folder(m) / inside if inside else self.model_folder(m)
        return out

    def mlib_entries(self) -> dict[str, str]:
        """What stands in the app folder apart from the user's own things."""
        own = {
            Path(rel).relative_to("ComfyUI/models").as_posix()
            for rel in self.foreign
            if rel.startswith("ComfyUI/models/")
        }
        return {rel: kind for rel, kind in app_entries(self.models_dir).items() if rel not in own}

    def app_problems_after_kill(self) -> tuple[list[str], list[str]]:
        """(problems, dangling): every entry of mlib's is a symlink into the library showing a
        complete model's file or folder; dangling ones are listed apart (a rename moved their
        target and the next apply relinks them)."""
        problems: list[str] = []
        dangling: list[str] = []
        library = os.path.realpath(self.library) + os.sep
        for rel, kind in self.mlib_entries().items():
            path = self.models_dir / rel
            if kind != "symlink":
                problems.append(f"unexpected {kind} {rel} in the app folder")
                continue
            real = os.path.realpath(path)
            if not real.startswith(library):
                problems.append(f"{rel} -> {real}, outside the library")
            elif not os.path.exists(real):
                dangling.append(rel)
            else:
                model_id = "/".join(Path(real).relative_to(self.library).parts[:3])
                if model_id not in self.known:
                    problems.append(f"{rel} shows {real}, not a model's file")
        return problems, dangling

    def app_problems(self) -> list[str]:
        return link_problems(self.models_dir, self.mlib_entries(), self.expected_links())

    def staging(self) -> list[str]:
        """What ``.mlib/staging`` holds: model folders, and ``partial/<file>`` entries."""
        root = self.library / ".mlib" / "staging"
        if not root.is_dir():
            return []
        out: list[str] = []
        for p in sorted(root.iterdir()):
            if p.name == "partial" and p.is_dir():
                out += [f"partial/{q.name}" for q in sorted(p.iterdir())]
            else:
                out.append(p.name)
        return out

    def partial_bytes(self) -> int:
        partial = self.library / ".mlib" / "staging" / "partial"
        return sum(p.stat().st_size for p in partial.glob("*.part")) if partial.is_dir() else 0


# --- running mlib -------------------------------------------------------------------------------


#: The real ``mlib`` entry point behind a wrapper that counts the calls that change the file
#: system (``os.rename``, ``os.link``, ``os.fsync``...: the points between two steps of an action)
#: and SIGKILLs its own process right after call number ``MLIB_FAULT_AT`` (0: never), having
#: noted which call it was in ``MLIB_FAULT_NOTE``; ``MLIB_FAULT_COUNT`` gets the names of every
#: call of a run that ends, and "@<kind>" where each action of the plan begins.
HOOK = """
import atexit, os, signal, sys
_at = int(os.environ.get("MLIB_FAULT_AT") or 0)
_calls = []
_count = [0]
def _wrap(name):
    orig = getattr(os, name)
    def hooked(*args, **kwargs):
        result = orig(*args, **kwargs)
        _calls.append(name)
        _count[0] += 1
        if _count[0] == _at:
            with open(os.environ["MLIB_FAULT_NOTE"], "w") as fh:
                fh.write(f"os.{name} {args[0] if args else ''}")
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(os, name, hooked)
for _name in ("mkdir", "rmdir", "rename", "replace", "link", "symlink", "unlink", "fsync"):
    _wrap(_name)
from reconciler import executor as _executor
_do = _executor.Executor.do
def _marked(self, action):
    _calls.append("@" + action.kind.value)
    return _do(self, action)
_executor.Executor.do = _marked
if os.environ.get("MLIB_FAULT_COUNT"):
    def _save():
        with open(os.environ["MLIB_FAULT_COUNT"], "w") as fh:
            fh.write("\\n".join(_calls))
    atexit.register(_save)
from reconciler.cli import main
main(prog_name="mlib")
"""


def mlib_cmd(world: World, *args: str) -> list[str]:
    return [str(MLIB), "-m", str(world.manifest), *args]


def hooked_cmd(world: World, *args: str) -> list[str]:
    return [sys.executable, "-c", HOOK, "-m", str(world.manifest), *args]


def run_mlib(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mlib_cmd(world, *args),
        cwd=world.folder,
        env=world.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


APPLY = ("apply", "-y", "--prune")
_STEP = re.compile(r"^  (ok|FAILED|skipped)\s+(\S+)\s+(.*)$")


def steps_of(world: World, stdout: str) -> list[tuple[str, str, str]]:
    """(outcome, kind, where) of each step an apply printed; ``where`` relative to the world
    folder and cut at its first " (" (the detail; the same cut on both sides of a comparison)."""
    out: list[tuple[str, str, str]] = []
    prefix = str(world.folder) + os.sep
    for line in stdout.splitlines():
        match = _STEP.match(line)
        if match:
            outcome, kind, rest = match.groups()
            out.append((outcome, kind, rest.replace(prefix, "").split(" (")[0]))
    return out


@dataclass
class Reference:
    """An unkilled run of one transition: how long it took, the actions it did, and the file
    system calls it made (the hook's count)."""

    duration: float
    steps: list[tuple[str, str]]
    calls: int
    #: the file-system calls (numbers from 1) made in start-up and the prefetch of downloads
    #: ("start-up"), then in each action, with its kind: a kill at a random call of a random
    #: action of the kind least aimed at lands as often in a rename or a link as in an import
    spans: list[tuple[str, list[int]]] = field(default_factory=list)

    def pick(self, rng: random.Random, aimed: Counter[str]) -> tuple[str, int]:
        """A random call of a random action of a kind (or of start-up): (kind, call). The kind
        is one this run has aimed at least often so far (``aimed``), so that the kills spread
        over every kind of action, renames and prunes as much as imports."""
        if not self.spans:
            return "start-up", 1
        kinds = sorted({k for k, _ in self.spans})
        fewest = min(aimed[k] for k in kinds)
        kind = rng.choice([k for k in kinds if aimed[k] == fewest])
        return kind, rng.choice(rng.choice([calls for k, calls in self.spans if k == kind]))


@dataclass
class Kill:
    n: int
    transition: Transition
    how: Literal["timed", "fs-call"]
    point: str  #: "+0.123s" or "call 57/210"
    finished_first: bool
    landed: str
    staging: list[str]
    dangling: list[str]
    stale_ids: list[str]
    violations: list[str] = field(default_factory=list)
    #: for a kill at a file-system call: the kind of action (or start-up) that call belongs to
    #: in the unkilled run, where the kill was aimed ("landed" is what was left to do after it)
    aimed: str = ""

    def line(self) -> str:
        what = "finished before the kill" if self.finished_first else self.landed
        extra = f"; staging {self.staging}" if self.staging else ""
        extra += f"; {len(self.dangling)} dangling link(s)" if self.dangling else ""
        extra += f"; old id in metadata.json of {self.stale_ids}" if self.stale_ids else ""
        bad = f"\n    VIOLATIONS: {self.violations}" if self.violations else ""
        aimed = f" in {self.aimed}" if self.aimed else ""
        return f"#{self.n:02d} {self.transition} {self.how} {self.point}{aimed}: {what}{extra}{bad}"


@dataclass
class Summary:
    kills: list[Kill]
    references: dict[Transition, Reference]
    seed: int
    seconds: float
    scale: int
    violations: list[str]

    @property
    def killed(self) -> list[Kill]:
        return [k for k in self.kills if not k.finished_first]

    def phases(self) -> dict[str, Counter[str]]:
        """Kills by phase, then by how they were made."""
        out: dict[str, Counter[str]] = {}
        for k in self.kills:
            out.setdefault(_phase_group(k), Counter())[k.how] += 1
        return out

    def text(self) -> str:
        refs = ", ".join(
            f"{t} {r.duration:.2f} s, {len(r.steps)} actions, {r.calls} fs calls"
            for t, r in self.references.items()
        )
        lines = [f"unkilled runs: {refs}"]
        lines.append(
            f"kills: {len(self.kills)} ({len(self.killed)} while apply worked, "
            f"{len(self.kills) - len(self.killed)} after it finished); seed {self.seed}; "
            f"{self.seconds:.0f} s"
        )
        lines.append(
            "landed: "
            + ", ".join(f"{p} {sum(c.values())}" for p, c in sorted(self.phases().items()))
        )
        aimed = Counter(k.aimed for k in self.kills if k.aimed)
        lines.append("aimed at: " + ", ".join(f"{a} {n}" for a, n in sorted(aimed.items())))
        lines.append(f"violations: {len(self.violations)}")
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)

    def markdown(self, command: str) -> str:
        machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
        sizes = sum(
            len(f.data) for ms in catalogue(self.scale).values() for m in ms for f in m.files
        )
        rows = "\n".join(
            f"| {p} | {c['timed']} | {c['fs-call']} | {sum(c.values())} |"
            for p, c in sorted(self.phases().items())
        )
        ref = "; ".join(
            f"{_TRANSITIONS[t]}: {r.duration:.2f} s, {len(r.steps)} actions"
            for t, r in self.references.items()
        )
        aimed = Counter(k.aimed for k in self.kills if k.aimed)
        aimed_rows = "\n".join(f"| {kind} | {n} |" for kind, n in sorted(aimed.items()))
        dangling = sum(1 for k in self.kills if k.dangling)
        stale = sum(1 for k in self.kills if k.stale_ids)
        timed = sum(1 for k in self.kills if k.how == "timed")
        return f"""## Fault injection: SIGKILL of `mlib apply`

`{command}` ({machine}; {self.seconds:.0f} s; the runner is `tests/faults/run.py`, its CI
subset `tests/faults/test_faults.py`).

One scenario mixes local imports (copy and move, single files and diffusers folders, a
hardlink), two URL downloads from a local server and a three-file repository from a fake
Hugging Face Hub (throttled so that a kill lands mid-download; those files are fetched in
parallel),
a rename (a model's name changed between two runs), links and unlinks (an app override
disabling a model) and `--prune`: {sizes / MiB:.0f} MiB of models in all. The manifest
alternates between two stages, so every `mlib apply -y --prune` has work of every kind
({ref}). Half the runs are SIGKILLed after a random delay within 1.1x the time an unkilled
run of the same transition takes ("timed": they land where the time goes, in start-up,
copies and downloads); the other half ("fs call") right after one of the calls that change
the file system (`os.rename`, `replace`, `link`, `symlink`, `unlink`, `mkdir`, `rmdir`,
`fsync`): a random call of a random action in the unkilled run (or of its start-up and
parallel prefetch), of a kind of action aimed at least often so far, so that they land as
often in a rename or a link as in an import, between any two steps of it. Seed {self.seed}.

After every kill: every model folder in the library is complete (metadata.json lists exactly the
files present, with their sizes and sha256, and they are the source's bytes), every link in the
app folder points into the library, the user's source files and foreign files (a model file and
a note in ComfyUI's folders, a symlink of their own, a file beside the library, another app's
folder) hash as before. After `apply -y --prune` again: exit 0, `plan --prune
--detailed-exitcode` exits 0, `verify` exits 0, `lock --check` exits 0, the library and the app folder hold exactly the
manifest, `.mlib/staging` is empty, sources and foreign files unchanged.

| | |
|---|---|
| kills | {len(self.kills)}: {timed} timed, {len(self.kills) - timed} at a file-system call; {len(self.killed)} while apply worked |
| kills that left a dangling link (a rename done, its relink not yet; the re-apply relinks it) | {dangling} |
| kills between a rename and its metadata write (files complete, metadata.json still has the old id: `mlib index rebuild` skips the model until the next apply rewrites it) | {stale} |
| violations | **{len(self.violations)}** |

Where the kills landed: the first action of the unkilled run that the re-apply still had to do
("staging": its model folder was being built in `.mlib/staging`):

| landed in | timed | fs call | kills |
|---|---|---|---|
{rows}

The kills at a file-system call by the kind of action that call belongs to in the unkilled run
(where each was aimed; a kill right after an action's last call lands in the next action):

| aimed at | kills |
|---|---|
{aimed_rows}
"""


_TRANSITIONS: dict[Transition, str] = {"0A": "empty to A", "AB": "A to B", "BA": "B to A"}


def _phase_group(k: Kill) -> str:
    if k.finished_first:
        return "finished before the kill"
    return k.landed.split(":")[0]


def landed(ref: Reference, steps: list[tuple[str, str, str]], staged: list[str]) -> str:
    """Where a kill landed: in the first action of the unkilled run that the re-apply had to
    do again (``steps``), before the first (start-up: planning), or after the last."""
    # By kind and name: the same action may name its path otherwise once half done (an
    # index_delete names the model, not its folder, once the folder went to the trash).
    again = {(kind, Path(where).name) for _, kind, where in steps}
    remaining = [(k, w) for k, w in ref.steps if (k, Path(w).name) in again]
    if not remaining:
        return "after the last action: index and lock"
    if len(remaining) == len(ref.steps) and not staged:
        return "start-up: reading, planning"
    kind, where = remaining[0]
    models = [s for s in staged if not s.startswith("partial/")]
    staging = " (staging)" if kind in ("import", "download") and models else ""
    return f"{kind}{staging}: {Path(where).name}"


def start_apply(world: World, *, at: int = 0, count: Path | None = None) -> subprocess.Popen[str]:
    env = dict(world.env, MLIB_FAULT_AT=str(at), MLIB_FAULT_NOTE=str(world.folder / ".note"))
    if count is not None:
        env["MLIB_FAULT_COUNT"] = str(count)
    return subprocess.Popen(
        hooked_cmd(world, *APPLY),
        cwd=world.folder,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def reference_run(world: World, stage: Stage) -> tuple[Reference, list[str]]:
    """An unkilled apply of ``stage``: its duration, actions and file system calls, and the
    problems after it."""
    world.write_stage(stage)
    count = world.folder / ".count"
    started = time.monotonic()
    proc = start_apply(world, count=count)
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    duration = time.monotonic() - started
    problems = [] if proc.returncode == 0 else [f"unkilled apply failed:\n{stdout}{stderr}"]
    steps = [(kind, where) for _, kind, where in steps_of(world, stdout)]
    calls, spans = _spans(count.read_text().split() if count.exists() else [])
    count.unlink(missing_ok=True)
    problems += converged_problems(world)
    return Reference(duration, steps, calls, spans), problems


def _spans(names: list[str]) -> tuple[int, list[tuple[str, list[int]]]]:
    """(number of calls, their numbers by span: before the first action, then each action)."""
    spans: list[tuple[str, list[int]]] = [("start-up", [])]
    n = 0
    for name in names:
        if name.startswith("@"):
            spans.append((name[1:], []))
        else:
            n += 1
            spans[-1][1].append(n)
    return n, [(kind, calls) for kind, calls in spans if calls]


def converged_problems(world: World) -> list[str]:
    """After an apply that exited 0: plan empty, verify clean, exactly the manifest on disk."""
    problems: list[str] = []
    procs = {
        cmd: subprocess.Popen(
            mlib_cmd(world, *cmd.split()),
            cwd=world.folder,
            env=world.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for cmd in ("plan --prune --detailed-exitcode", "verify", "lock --check")
    }
    for cmd, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        if proc.returncode != 0 or "Traceback" in stderr:
            problems.append(f"{cmd} exited {proc.returncode}:\n{stdout}{stderr}")
    problems += world.library_problems({m.id for m in world.models()})
    problems += world.app_problems() + world.source_problems() + world.foreign_problems()
    if world.staging():
        problems.append(f"staging not cleared: {world.staging()}")
    return problems


def kill_once(
    world: World, n: int, transition: Transition, *, delay: float = 0.0, at: int = 0, ref: Reference
) -> Kill:
    """One apply of ``transition`` killed after ``delay`` seconds or right after file system
    call number ``at``; the checks after the kill, the re-apply and the checks after it."""
    stage: Stage = "A" if transition in ("0A", "BA") else "B"
    world.write_stage(stage)
    note = world.folder / ".note"
    note.unlink(missing_ok=True)
    proc = start_apply(world, at=at)
    started = time.monotonic()
    violations: list[str] = []
    try:
        while proc.poll() is None and (at or time.monotonic() - started < delay):
            if time.monotonic() - started > RUN_TIMEOUT:
                violations.append(f"apply ran for more than {RUN_TIMEOUT} s")
                break
            time.sleep(POLL)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finished = proc.returncode != -signal.SIGKILL
    if finished and proc.returncode != 0:
        violations.append(f"the apply that was not killed failed:\n{stdout}{stderr}")
    point = f"+{delay:.3f}s" if not at else f"call {at}/{ref.calls}"
    if note.exists():
        point += f" ({note.read_text().replace(str(world.folder) + os.sep, '')})"
        note.unlink()
    staged = world.staging()
    app, dangling = world.app_problems_after_kill()
    world.stale_ids.clear()
    after = world.library_problems() + app + world.source_problems() + world.foreign_problems()
    stale_ids = sorted(world.stale_ids)
    violations += [f"after the kill: {p}" for p in after]
    r = run_mlib(world, *APPLY)
    if r.returncode != 0 or "Traceback" in r.stderr:
        violations.append(f"the re-apply exited {r.returncode}:\n{r.stdout}{r.stderr}")
    where = landed(ref, steps_of(world, r.stdout), staged)
    world.stale_ids.clear()
    violations += [f"after the re-apply: {p}" for p in converged_problems(world)]
    if world.stale_ids:
        violations.append(f"after the re-apply: old id still in {sorted(world.stale_ids)}")
    how: Literal["timed", "fs-call"] = "fs-call" if at else "timed"
    return Kill(
        n,
        transition,
        how,
        point,
        finished,
        where,
        staged,
        dangling,
        stale_ids,
        [f"kill #{n} ({transition} {point}): {v}" for v in violations],
    )


def empty_trash(world: World) -> None:
    """The user empties mlib's trash now and then (it is theirs; mlib only fills it)."""
    shutil.rmtree(world.library / ".mlib" / "trash", ignore_errors=True)


def run(
    base: Path,
    *,
    kills: int,
    seed: int,
    scale: int = MiB // 2,
    chain: int = 10,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Unkilled runs of each transition (timed, counted), then ``kills`` killed applies in
    worlds of ``chain`` transitions each (the first from an empty library): half after a
    random delay, half right after a random file system call. ``log`` gets each
    kill's line as it happens."""
    started = time.monotonic()
    rng = random.Random(seed)
    violations: list[str] = []
    with model_servers(scale) as server:
        ref_world = World(base / "reference", server, scale).create()
        references: dict[Transition, Reference] = {}
        stages: dict[Transition, Stage] = {"0A": "A", "AB": "B", "BA": "A"}
        for first, stage in stages.items():
            ref, problems = reference_run(ref_world, stage)
            references[first] = ref
            violations += [f"unkilled {first}: {p}" for p in problems]
            empty_trash(ref_world)
        shutil.rmtree(ref_world.folder)
        done: list[Kill] = []
        world: World | None = None
        for n in range(kills):
            position = n % chain
            if position == 0:
                if world is not None:
                    shutil.rmtree(world.folder)
                world = World(base / f"world{n // chain:02d}", server, scale).create()
            assert world is not None
            transition: Transition = "0A" if position == 0 else ("AB" if position % 2 else "BA")
            ref = references[transition]
            if n % 4 in (0, 3):  # timed and at calls alike in every kind of transition
                kill = kill_once(
                    world, n, transition, delay=rng.uniform(0, SPREAD * ref.duration), ref=ref
                )
            else:
                kind, call = ref.pick(rng, Counter(k.aimed for k in done))
                kill = replace(kill_once(world, n, transition, at=call, ref=ref), aimed=kind)
            done.append(kill)
            violations += kill.violations
            empty_trash(world)
            if log is not None:
                log(kill.line())
        if world is not None:
            shutil.rmtree(world.folder)
    return Summary(done, references, seed, time.monotonic() - started, scale, violations)


def isolated_environment(home: Path) -> dict[str, str]:
    """The variables the mlib subprocesses of a standalone run get (as tests/conftest.py
    does for pytest): a fake HOME and HF cache, no proxy for the local server."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "HF_HOME": str(home / ".cache" / "huggingface"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "NO_PROXY": HOST,
        "no_proxy": HOST,
    }


def apply_environment(env: Mapping[str, str]) -> None:
    """Set ``env`` for this process and its children; no manifest, Hub endpoint or token."""
    os.environ.update(env)
    for name in ("MLIB_MANIFEST", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        os.environ.pop(name, None)
