"""The one entry point: what the CLI (and a launcher, or ``mlib serve``) calls.

Each function takes plain arguments, returns frozen values, and raises
:class:`~reconciler.errors.ReconcilerError` subclasses for anything a user can fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
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
from reconciler.facts import LinkRecord
from reconciler.fsops import atomic_write
from reconciler.hashing import hash_file
from reconciler.index import DB_NAME, Query, Row, open_index
from reconciler.library import Skipped, read_entries
from reconciler.loaders import load_json, load_manifest
from reconciler.lock import library_lock
from reconciler.model import LocalSource, Manifest
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


def rebuild_index(root: Path) -> RebuildReport:
    """Rebuild ``models.db`` from every ``metadata.json`` under ``root``, in one transaction."""
    _require_root(root)
    started = time.perf_counter()
    entries, skipped = read_entries(root)
    with open_index(root) as index:
        indexed = index.rebuild(entries)
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
    #: sha256 over everything the plan was computed from (manifest, translations, observed facts).
    fingerprint: str


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


def make_plan(manifest_path: Path, *, prune: bool = False) -> PlanResult:
    """Load, observe, and plan. Reads only: nothing on disk changes."""
    manifest = load(manifest_path)
    translations = select_translations(manifest)
    root = manifest.library
    library = observe.observe_library(root)
    sources = {
        spec.source.path: observe.observe_source(spec.source.path)
        for spec in manifest.models
        if isinstance(spec.source, LocalSource) and spec.id not in library
    }
    desired = planner.desire(manifest, translations, library, sources)
    index_texts: dict[str, str] = {}
    registry: list[LinkRecord] = []
    if (root / DB_NAME).exists():
        with open_index(root) as index:
            index_texts = index.metadata_texts()
            registry = index.links()
    found = sorted(
        {p for app in manifest.apps for p in observe.symlinks_into(app.models_dir, root)}
    )
    paths = {link.path for link in desired.links} | {r.link_path for r in registry} | set(found)
    observed = planner.Observed(
        library=library,
        sources=sources,
        paths=observe.observe_paths(sorted(paths)),
        registry=tuple(registry),
        index=index_texts,
        app_dirs={app.name: app.models_dir.is_dir() for app in manifest.apps},
        found_links=tuple(found),
        staging=tuple(observe.staging_leftovers(root)),
    )
    result = planner.plan(manifest, desired, observed, translations, prune=prune)
    digest = hashlib.sha256(repr((manifest, translations, observed, prune)).encode("utf-8"))
    return PlanResult(manifest, result, digest.hexdigest())


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
