"""The one entry point: what the CLI (and a launcher, or ``mlib serve``) calls.

Each function takes plain arguments, returns frozen values, and raises
:class:`~reconciler.errors.ReconcilerError` subclasses for anything a user can fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from reconciler import observe, planner
from reconciler.actions import Plan
from reconciler.doctor import Check, Status
from reconciler.errors import (
    InvalidInputError,
    Problem,
    ReconcilerError,
    StalePlanError,
    VersionRangeError,
)
from reconciler.executor import Executor, Progress, Report
from reconciler.facts import LinkRecord, PathFacts
from reconciler.fsops import atomic_write
from reconciler.hashing import hash_file
from reconciler.index import DB_NAME, Row, open_index
from reconciler.index import Query as Query  # re-exported: api.Query is the list filter
from reconciler.library import LibraryModels, Skipped, gc_paused
from reconciler.loaders import load_json, load_manifest, read_text
from reconciler.lock import library_lock
from reconciler.manifest import DEFAULT_LIBRARY, resolve_path
from reconciler.model import ImportMode, LocalSource, Manifest
from reconciler.render import plan_to_json
from reconciler.translations import Translation, load_translations, select
from reconciler.versions import parse_range

log = logging.getLogger(__name__)

MANIFEST_NAME = "mlib.yaml"


def load(manifest: Path) -> Manifest:
    """Read and check a manifest; raises :class:`InvalidInputError` with every problem."""
    return load_manifest(manifest)


@dataclass(frozen=True)
class RebuildReport:
    root: Path
    indexed: int
    skipped: tuple[Skipped, ...]
    seconds: float

    @property
    def found(self) -> int:
        return self.indexed + len(self.skipped)


def rebuild_index(root: Path, *, lock_timeout: float = 10.0) -> RebuildReport:
    """Rebuild ``models.db`` from every ``metadata.json`` under ``root``, atomically.

    Under the library lock, so no ``apply`` writes links into the old index meanwhile (the new
    one carries them over). Readers see the old index or the new one. A corrupt models.db does not
    stop it: it is kept beside as ``models.db.corrupt-<time>`` and replaced.
    """
    _require_root(root)
    started = time.perf_counter()
    with (
        library_lock(root, lock_timeout),
        gc_paused(),
        open_index(root, rebuild=True) as index,
    ):
        models = LibraryModels(root)
        indexed = index.rebuild(models)
    skipped = models.skipped
    seconds = time.perf_counter() - started
    log.info("indexed %d models in %.2f s (%d skipped)", indexed, seconds, len(skipped))
    return RebuildReport(root, indexed, tuple(skipped), seconds)


def query(root: Path, q: Query, manifest: Manifest | None = None) -> list[Row]:
    """Models in the index matching ``q``.

    With ``q.app`` and a manifest that defines that target, a model also has to admit the target's
    app version in its override's range; without a manifest only ``enabled`` is checked.
    """
    _require_root(root)
    with open_index(root) as index:
        rows = index.query(q)
    target = manifest.app(q.app) if manifest is not None and q.app is not None else None
    if target is None:
        return rows
    return [r for r in rows if _admits(r, target.name, target.version)]


def _admits(row: Row, target: str, version: str) -> bool:
    override = row.overrides.get(target)
    if override is None:
        return True
    try:
        return parse_range(override["versions"]).contains(version)
    except VersionRangeError:
        return False


def _require_root(root: Path) -> None:
    if not root.is_dir():
        raise InvalidInputError(
            [Problem(str(root), None, "", "library root not found", "check --root or 'library:'")]
        )


def doctor(root: Path) -> list[Check]:
    from reconciler import doctor as checks

    return checks.run(root)


def install_missing(found: list[Check]) -> int:
    """``pip install`` what :func:`doctor` found missing, with the running interpreter."""
    wanted = [c.install for c in found if c.status is Status.MISSING and c.install]
    if not wanted:
        return 0
    log.info("installing %s", " ".join(wanted))
    return subprocess.call([sys.executable, "-m", "pip", "install", *wanted])


STARTER = """\
# mlib manifest: the wanted state of your model library. Edit, then run `mlib plan`.
# Format: see the README of mlib; check it with `mlib validate`.
version: 1

# The canonical library, relative to this file. Every model lives here once.
library: shared-resources/models

# Extra folders of app translations, searched before the bundled ones.
# translations: [my-translations/]

# The apps that should see the models, each with its installed version and models folder.
apps:
  comfy:
    app: comfyui
    version: "0.3.62"
    models_dir: ../ComfyUI/models
    link: auto          # auto | symlink | hardlink | copy

# The models. A source is one of  hf: org/repo,  url: https://...,  path: /local/file.
models: []
#  - name: SDXL Base 1.0
#    type: diffusion          # llm | diffusion | embedding | audio | vision | other
#    family: sdxl
#    kind: checkpoint
#    source: {hf: stabilityai/stable-diffusion-xl-base-1.0, files: [sd_xl_base_1.0.safetensors]}
#    tags: [base]
#    apps: {comfy: ">=0.3"}   # a version range, false, or {versions, enabled, folder, filename}
"""


def init(path: Path, force: bool = False) -> None:
    """Write a commented starter manifest; never overwrites one unless ``force``."""
    if path.exists() and not force:
        raise InvalidInputError(
            [Problem(str(path), None, "", "already exists", "edit it, or pass --force to replace")]
        )
    atomic_write(path, STARTER.encode("utf-8"))


# --- plan / apply / status / verify -------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    manifest: Manifest
    plan: Plan
    #: Everything the plan was computed from (manifest, translations, observed facts, prune).
    seen: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def _digest(self) -> str:
        return hashlib.sha256(repr(self.seen).encode("utf-8")).hexdigest()

    #: sha256 over :attr:`seen`; computed when asked for (``plan -o``, applying a saved plan): on
    #: 100k models it costs as much as the rest of a no-op plan.
    fingerprint = cached_property(_digest)


def select_translations(manifest: Manifest) -> dict[str, Translation | str]:
    """The translation each app target uses, or why there is none."""
    user, bundled = load_translations(manifest.translations)
    out: dict[str, Translation | str] = {}
    for app in manifest.apps:
        try:
            out[app.name] = select(user, bundled, app.app, app.variant, app.version)
        except ReconcilerError as exc:
            out[app.name] = str(exc)
    return out


def observe_links(
    manifest: Manifest, desired: planner.Desired, registry: list[LinkRecord]
) -> tuple[dict[str, PathFacts], list[str]]:
    """What stands at every link path the plan looks at, in path order, and the symlinks into the
    library found in the app folders (:func:`observe.symlinks_into`).

    Each path is read once: every symlink in the app folders is observed, and kept as found when
    it points into the library.
    """
    symlinks = {p for app in manifest.apps for p in observe.symlinks_under(app.models_dir)}
    paths = {link.path for link in desired.links} | {r.link_path for r in registry}
    facts = observe.observe_paths(sorted(paths | symlinks))
    found = [p for p in facts if p in symlinks and observe.points_into(facts[p], manifest.library)]
    paths.update(found)
    return {p: f for p, f in facts.items() if p in paths}, found


def make_plan(manifest_path: Path, *, prune: bool = False) -> PlanResult:
    """Load, observe, and plan. Reads only: nothing on disk changes."""
    with gc_paused():  # everything built here lasts until the plan is made: nothing to collect
        return _make_plan(manifest_path, prune)


def _make_plan(manifest_path: Path, prune: bool) -> PlanResult:
    manifest = _load_remembered(manifest_path)
    translations = select_translations(manifest)
    root = manifest.library
    library = observe.observe_library(root)
    sources = {
        spec.source.path: observe.observe_source(spec.source.path)
        for spec in manifest.models
        if isinstance(spec.source, LocalSource)
        and (spec.id not in library or spec.source.mode is ImportMode.MOVE)
    }
    desired = planner.desire(manifest, translations, library, sources)
    index_texts: dict[str, str] = {}
    registry: list[LinkRecord] = []
    if (root / DB_NAME).exists():
        with open_index(root) as index:
            index_texts = index.metadata_texts()
            registry = index.links()
    paths, found = observe_links(manifest, desired, registry)
    observed = planner.Observed(
        library=library,
        sources=sources,
        paths=paths,
        registry=tuple(registry),
        index=index_texts,
        app_dirs={app.name: app.models_dir.is_dir() for app in manifest.apps},
        found_links=tuple(found),
        staging=tuple(observe.staging_leftovers(root)),
    )
    result = planner.plan(manifest, desired, observed, translations, prune=prune)
    return PlanResult(manifest, result, (manifest, translations, observed, prune))


# --- the manifest, remembered between plans -----------------------------------------------------
#
# Reading a manifest costs ~45 us a model (YAML, schema, names, version ranges): 4.5 s for 100k
# models, three times the rest of a no-op plan. Its value depends only on its text, its path (and
# the current folder, for a relative one), the home folder, and mlib's code and libraries, so
# ``make_plan`` keeps the last value in ``<library>/.mlib/cache/``, keyed by all of those, and
# loads it back (~2 us a model) when nothing of it changed. Only a manifest without problems is
# kept; an edited manifest is read in full, and every problem is reported as always.

_CACHE_FORMAT = b"mlib-manifest-cache/1"
#: The classes a cache file may name: the manifest's values and paths, nothing else.
_CACHE_CLASSES = frozenset(
    {
        ("reconciler.model", name)
        for name in (
            "Manifest",
            "AppTarget",
            "ModelSpec",
            "AppOverride",
            "HfSource",
            "UrlSource",
            "LocalSource",
            "ModelType",
            "LinkMode",
            "ImportMode",
        )
    }
    | {("pathlib", name) for name in ("Path", "PosixPath", "WindowsPath")}
)
_LIBRARY_LINE = re.compile(
    r"""^library:[ \t]*(?:"([^"\\\n]*)"|'([^'\n]*)'|([^\s#'"{\[][^#\n]*?))[ \t]*(?:\#.*)?$""",
    re.MULTILINE,
)


def _load_remembered(manifest_path: Path) -> Manifest:
    """:func:`load`, or the value it gave last time for exactly the same inputs."""
    text = read_text(manifest_path, "manifest")
    home = Path.home()
    key = _manifest_key(manifest_path, home, text)
    guess = _cache_path(_library_guess(manifest_path, home, text), manifest_path)
    cached = _read_cached(guess, key)
    if cached is not None:
        return cached
    manifest = load_manifest(manifest_path, home, text=text)
    _write_cached(_cache_path(manifest.library, manifest_path), key, manifest)
    return manifest


def _manifest_key(manifest_path: Path, home: Path, text: str) -> bytes:
    parts = (
        _CACHE_FORMAT.decode(),
        _code_digest(),
        str(manifest_path),
        os.getcwd(),
        str(home),
        hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    )
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest().encode()


@cache
def _code_digest() -> str:
    """mlib's own code and bundled schemas, and the versions of what reading a manifest uses."""
    import packaging
    import yaml

    import reconciler

    digest = hashlib.sha256(f"{sys.version}|{sys.platform}|{yaml.__version__}|".encode())
    digest.update(f"{packaging.__version__}|{reconciler.__version__}|".encode())
    package = Path(__file__).parent
    for path in sorted([*package.glob("*.py"), *package.glob("schemas/*.json")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _library_guess(manifest_path: Path, home: Path, text: str) -> Path:
    """Where the manifest's library is, read from its ``library:`` line without parsing it.

    Only says where to look for the cache; a wrong guess just misses it (the key holds the whole
    text, so a file found anywhere can only be this manifest's value).
    """
    found = _LIBRARY_LINE.search(text)
    value = next((g for g in found.groups() if g is not None), None) if found else None
    base = Path(os.path.normpath(manifest_path.absolute())).parent
    return resolve_path(value or DEFAULT_LIBRARY, base, home)


def _cache_path(library: Path, manifest_path: Path) -> Path:
    where = hashlib.sha256(os.fsencode(os.path.abspath(manifest_path))).hexdigest()[:16]
    return library / ".mlib" / "cache" / f"manifest-{where}.pickle"


class _CacheUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CACHE_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a manifest cache")
        return super().find_class(module, name)


def _read_cached(path: Path, key: bytes) -> Manifest | None:
    try:
        with open(path, "rb") as fh:
            header = fh.readline()
            if header.rstrip(b"\n").split(b" ")[:2] != [_CACHE_FORMAT, key]:
                return None
            payload = fh.read()
        if header.split()[2] != hashlib.sha256(payload).hexdigest().encode():
            return None
        value = _CacheUnpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # whatever is wrong with a cache file, the manifest is read instead
        log.debug("manifest cache %s not used: %s", path, exc)
        return None
    return value if isinstance(value, Manifest) else None


def _write_cached(path: Path, key: bytes, manifest: Manifest) -> None:
    """Keep ``manifest`` for the next plan; only in an existing library, and never an error."""
    if not path.parent.parent.parent.is_dir():
        return  # no library yet: a plan creates nothing
    payload = pickle.dumps(manifest, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(payload).hexdigest().encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, b" ".join((_CACHE_FORMAT, key, digest)) + b"\n" + payload)
    except OSError as exc:
        log.debug("manifest cache %s not written: %s", path, exc)


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    report: Report


def save_plan(result: PlanResult, path: Path, *, prune: bool) -> None:
    """Write a plan to apply later: its actions and the fingerprint of what it saw."""
    data = {
        "format": "mlib-plan",
        "manifest": str(result.manifest.path.absolute()),
        "prune": prune,
        "fingerprint": result.fingerprint,
        "plan": plan_to_json(result.plan),
    }
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def read_saved_plan(path: Path) -> dict[str, Any]:
    doc = load_json(path, "saved plan")
    data = doc.data
    if not isinstance(data, dict) or data.get("format") != "mlib-plan":
        raise InvalidInputError(
            [Problem(doc.file, None, "format", "not a plan saved by 'mlib plan -o'", "save one")]
        )
    return data


def apply(
    manifest_path: Path,
    *,
    saved: Path | None = None,
    prune: bool = False,
    lock_timeout: float = 10.0,
    progress: Progress | None = None,
) -> ApplyResult:
    """Plan again under the library lock and execute; a saved plan must still be exact."""
    saved_data = read_saved_plan(saved) if saved is not None else None
    if saved_data is not None:
        prune = bool(saved_data.get("prune", False))
        manifest_path = Path(saved_data.get("manifest") or manifest_path)
    root = load(manifest_path).library
    root.mkdir(parents=True, exist_ok=True)
    with library_lock(root, lock_timeout):
        result = make_plan(manifest_path, prune=prune)
        if saved_data is not None:
            _check_not_stale(saved_data, result, saved or Path())
        with open_index(root) as index:
            report = Executor(root, index, utc_now, progress).run(result.plan)
    return ApplyResult(result.plan, report)


def _check_not_stale(saved: dict[str, Any], now: PlanResult, path: Path) -> None:
    if saved.get("fingerprint") == now.fingerprint:
        return
    before = {_action_line(a) for a in saved.get("plan", {}).get("actions", [])}
    after = {_action_line(a) for a in plan_to_json(now.plan)["actions"]}
    changes = [f"  no longer planned: {line}" for line in sorted(before - after)]
    changes += [f"  now also needed: {line}" for line in sorted(after - before)]
    if not changes:
        changes = ["  the same actions, but the files they act on changed since"]
    raise StalePlanError(
        f"{path}: the plan is stale: the manifest or the disk changed since it was saved "
        "(run 'mlib plan -o' again and review it)\n" + "\n".join(changes)
    )


def _action_line(a: dict[str, Any]) -> str:
    return f"{a.get('kind')} {a.get('model') or ''} {a.get('path') or ''}".strip()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Mismatch:
    model: str
    path: str
    message: str


@dataclass(frozen=True)
class VerifyResult:
    checked_files: int
    checked_bytes: int
    mismatches: tuple[Mismatch, ...]


def verify(root: Path, ids: list[str] | None = None) -> VerifyResult:
    """Rehash every file of the given models (all by default) and compare with metadata."""
    _require_root(root)
    library = observe.observe_library(root)
    wanted = ids or sorted(library)
    mismatches: list[Mismatch] = []
    files = size = 0
    with open_index(root) as index:
        for model_id in wanted:
            lib = library.get(model_id)
            if lib is None:
                mismatches.append(Mismatch(model_id, "", "no such model in the library"))
                continue
            if lib.metadata is None:
                mismatches.append(Mismatch(model_id, lib.folder, lib.error or "bad metadata"))
                continue
            for entry in lib.metadata.files:
                path = Path(lib.folder) / entry.path
                try:
                    got = hash_file(path)
                except OSError as exc:
                    mismatches.append(Mismatch(model_id, str(path), f"unreadable: {exc.strerror}"))
                    continue
                files += 1
                size += got.size
                if (got.size, got.sha256, got.blake3) != (entry.size, entry.sha256, entry.blake3):
                    what = "size" if got.size != entry.size else "content (sha256)"
                    mismatches.append(
                        Mismatch(model_id, str(path), f"{what} differs from metadata.json")
                    )
                else:
                    index.cache_hashes(path, got.sha256, got.blake3)
    return VerifyResult(files, size, tuple(mismatches))
