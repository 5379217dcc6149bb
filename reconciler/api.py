"""The one entry point: what the CLI (and a launcher, or ``mlib serve``) calls.

Each function takes plain arguments, returns frozen values, and raises
:class:`~reconciler.errors.ReconcilerError` subclasses for anything a user can fix.

The executor, the hashing code and the dependency checks are imported by the functions that use
them: a plan replayed from the cache is done in ~0.2 s, of which importing those would be a third.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import cache, lockfile, observe, planner, resolve, stamps
from reconciler.actions import Action, ActionKind, Plan
from reconciler.errors import (
    InvalidInputError,
    LockFileError,
    Problem,
    ReconcilerError,
    StalePlanError,
    VersionRangeError,
)
from reconciler.facts import LinkRecord, PathFacts, SourceFacts
from reconciler.fsops import atomic_write
from reconciler.index import DB_NAME, Row, open_index
from reconciler.index import Query as Query  # re-exported: api.Query is the list filter
from reconciler.library import LibraryModels, Skipped, gc_paused
from reconciler.loaders import load_json, load_manifest, read_text
from reconciler.lock import library_lock
from reconciler.model import ImportMode, LinkMode, LocalSource, Manifest
from reconciler.render import plan_to_json
from reconciler.replay import PlanOptions as PlanOptions  # re-exported with the rest
from reconciler.replay import PlanResult as PlanResult
from reconciler.replay import Space as Space
from reconciler.replay import make_plan as make_plan
from reconciler.replay import replayed_plan
from reconciler.replay import space_needed as space_needed
from reconciler.translation_files import load_translations
from reconciler.translations import Translation, select
from reconciler.versions import parse_range

if TYPE_CHECKING:
    from reconciler.doctor import Check
    from reconciler.executor import Progress, Report, Step

log = logging.getLogger(__name__)

MANIFEST_NAME = "mlib.yaml"


def load(manifest: Path) -> Manifest:
    """Read and check a manifest; raises :class:`InvalidInputError` with every problem. The value
    is the one remembered in the library's cache when the manifest's text, mlib's code and the
    rest of its inputs are as they were (what a plan remembers too): at 100k models, reading it
    afresh costs seconds, a remembered one a fraction of that."""
    return cache.remembered_manifest(cache.ManifestInput.read(manifest))


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


_RAISE: Any = object()


def load_json_file(path: Path, missing: Any = _RAISE) -> Any:
    """The JSON in ``path`` (``missing`` when there is no such file, if given); a file that is not
    JSON is a :class:`ReconcilerError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing is _RAISE:
            raise
        return missing
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ReconcilerError(f"{path} is not valid JSON ({exc})") from None


def links_of(root: Path, model_id: str) -> list[LinkRecord]:
    """The links the registry says mlib made for ``model_id``."""
    if not (root / DB_NAME).exists():
        return []
    with open_index(root) as index:
        return [r for r in index.links() if r.model_id == model_id]


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
    from reconciler.doctor import Status

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


def _make_plan(
    manifest_path: Path,
    options: PlanOptions,
    *,
    replay: bool,
    found: cache.ManifestInput | None = None,
) -> PlanResult:
    """The plan replayed when nothing it was made from changed (``replay``), else made in full
    (and kept for the next time); ``found`` is the manifest when the caller has read it."""
    found = found or cache.ManifestInput.read(manifest_path)
    if replay:
        kept = replayed_plan(found, manifest_path, options)
        if kept is not None:
            return kept
    with gc_paused():  # everything built here lasts until the plan is made: nothing to collect
        return _full_plan(manifest_path, options, found)


def _full_plan(manifest_path: Path, options: PlanOptions, found: cache.ManifestInput) -> PlanResult:
    began = time.time_ns()
    manifest = cache.remembered_manifest(found)
    check_real_nesting(manifest)
    translations = select_translations(manifest)
    root = manifest.library
    library = observe.observe_library(root)
    sources = {
        spec.source.path: observe.observe_source(spec.source.path)
        for spec in manifest.models
        if isinstance(spec.source, LocalSource)
        and (spec.id not in library or spec.source.mode is ImportMode.MOVE)
    }
    locks = lockfile.read_lock(lockfile.lock_path(manifest))
    resolved = resolve.resolve_remotes(
        manifest, library, locks, offline=options.offline, locked=options.locked
    )
    desired = planner.desire(manifest, translations, library, sources, resolved.remotes)
    index_texts: dict[str, str] = {}
    registry: list[LinkRecord] = []
    if (root / DB_NAME).exists():
        with open_index(root) as index:
            index_texts = index.metadata_texts()
            registry = index.links()
    paths, found_links = observe_links(manifest, desired, registry)
    observed = planner.Observed(
        library=library,
        sources=sources,
        paths=paths,
        registry=tuple(registry),
        index=index_texts,
        app_dirs={app.name: app.models_dir.is_dir() for app in manifest.apps},
        found_links=tuple(found_links),
        staging=tuple(observe.staging_leftovers(root)),
        remotes=resolved.remotes,
        configs={
            app.name: observe.observe_config(app.config_file)
            for app in manifest.apps
            if app.link is LinkMode.CONFIG
        },
        adopting=_adopting(root),
    )
    result = planner.plan(manifest, desired, observed, translations, prune=options.prune)
    checks = _probe_warnings(manifest, sources)
    if checks:
        result = replace(result, warnings=(*result.warnings, *checks))
    if not resolved.networked:  # what a server said may change without any stamp changing
        _remember(found, manifest, observed, result, options, began)
    return PlanResult(manifest_path, result, options, (manifest, translations, observed, options))


def check_real_nesting(manifest: Manifest) -> None:
    """Refuse an app's models_dir inside the library, or the library inside it, once symlinks
    are followed (the manifest's own check compares the paths as written): links made there
    would land in the library, or the app would see every model twice."""
    library = os.path.realpath(manifest.library)
    for app in manifest.apps:
        models_dir = os.path.realpath(app.models_dir)
        inside = models_dir == library or models_dir.startswith(library.rstrip(os.sep) + os.sep)
        if inside or library.startswith(models_dir.rstrip(os.sep) + os.sep):
            where = "is inside" if inside else "contains"
            raise InvalidInputError(
                [
                    Problem(
                        str(manifest.path),
                        None,
                        f"apps.{app.name}.models_dir",
                        f"{app.models_dir} {where} the library {manifest.library} once "
                        f"symlinks are followed (real paths {models_dir} and {library})",
                        "keep the library and every app's models folder apart",
                    )
                ]
            )


def _probe_warnings(manifest: Manifest, sources: Mapping[str, SourceFacts]) -> tuple[str, ...]:
    """A warning for each single file about to be imported whose header disagrees with the
    manifest's kind, type or family (:mod:`reconciler.probe`: a check, never a gate)."""
    from reconciler.probe import probe_file

    out = []
    for spec in manifest.models:
        facts = sources.get(spec.source.path) if isinstance(spec.source, LocalSource) else None
        if facts is None or facts.error is not None or facts.is_dir:
            continue
        said = probe_file(facts.path).disagreement(spec.kind, spec.type, spec.family)
        if said:
            out.append(f"{spec.id}: {said}; check the manifest (imported as declared)")
    return tuple(out)


def _remember(
    found: cache.ManifestInput,
    manifest: Manifest,
    observed: planner.Observed,
    plan: Plan,
    options: PlanOptions,
    began: int,
) -> None:
    """Keep ``plan`` with the probes of everything it was made from, if they all had settled by
    the time observing began (else a change in the same clock tick could go unseen)."""
    root = manifest.library
    if not root.is_dir():
        return
    lstat, stat = observe.library_probes(root, observed.library)
    more = observe.link_probes(
        [app.models_dir for app in manifest.apps],
        observed.paths,
        observe.library_targets(observed.library),
    )
    sources = observe.source_probes(observed.sources.values())
    for extra_lstat, extra_stat in (more, sources):
        lstat |= extra_lstat
        stat |= extra_stat
    stat |= {str(root / DB_NAME), str(root / (DB_NAME + "-wal")), str(root / observe.STAGING)}
    stat.add(str(root / planner.PARTIAL))  # a download's files, cleared once no plan needs them
    stat.add(str(lockfile.lock_path(manifest)))
    stat.update(observed_config.path for observed_config in observed.configs.values())
    stat.add(str(root / planner.ADOPTING))
    for folder in manifest.translations:
        stat.add(str(folder))
        stat.update(str(p) for p in folder.glob("*.json"))
    probes = stamps.Probes.of(lstat, stat, [str(root)])
    stamp = stamps.take(probes)
    if stamp.newest_ns >= began - stamps.SETTLED_NS:
        log.debug("plan not kept: something changed less than %d ns before it", stamps.SETTLED_NS)
        return
    memo = cache.Memo.of(plan, probes, stamp)
    cache.remember_plan(found, root, options.prune, memo, options.asked())


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    report: Report


def save_plan(result: PlanResult, path: Path, *, prune: bool) -> None:
    """Write a plan to apply later: its actions and the fingerprint of what it saw."""
    data = {
        "format": "mlib-plan",
        "manifest": str(result.manifest_path.absolute()),
        "prune": prune,
        "fingerprint": result.fingerprint,
        "plan": plan_to_json(result.plan),
    }
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def check_saved_plan(path: Path) -> None:
    """Raise :class:`StalePlanError` if the plan saved at ``path`` is no longer exact (the
    manifest or the disk changed since); ``apply`` checks again under the library lock."""
    saved = read_saved_plan(path)
    manifest_path = Path(saved.get("manifest") or "")
    now = make_plan(manifest_path, prune=bool(saved.get("prune", False)))
    _check_not_stale(saved, now, path)


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
    offline: bool = False,
    locked: bool = False,
    jobs: int = 1,
    lock_timeout: float = 10.0,
    progress: Progress | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    on_step: Callable[[Step], None] | None = None,
    on_start: Callable[[Action], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ApplyResult:
    """Plan again under the library lock and execute; a saved plan must still be exact. With
    ``locked``, mlib.lock must be current for every remote model, and only it is used. The lock
    gets an entry for each model downloaded."""
    saved_data = read_saved_plan(saved) if saved is not None else None
    if saved_data is not None:
        prune = bool(saved_data.get("prune", False))
        manifest_path = Path(saved_data.get("manifest") or manifest_path)
    manifest = cache.remembered_manifest(cache.ManifestInput.read(manifest_path))
    if locked:
        problems = resolve.lock_problems(manifest, lockfile.read_lock(lockfile.lock_path(manifest)))
        if problems:
            raise LockFileError(
                f"{lockfile.lock_path(manifest)} is out of date with the manifest, so --locked "
                "refuses to apply (run 'mlib lock', review and commit it):\n  "
                + "\n  ".join(problems)
            )
    root = manifest.library
    check_real_nesting(manifest)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file, or a symlink to nowhere, where the library should be
        raise ReconcilerError(
            f"cannot create the library folder {root}: {exc.strerror} (move what is there away, "
            "or point 'library:' elsewhere)"
        ) from None
    with library_lock(root, lock_timeout):
        result = make_plan(manifest_path, prune=prune, offline=offline, locked=locked)
        if saved_data is not None:
            _check_not_stale(saved_data, result, saved or Path())
        space = space_needed(result)
        if space is not None and space.short:
            raise ReconcilerError(
                f"not enough space in {space.where}: the plan writes {space.needed} bytes and "
                f"{space.free} are free (free some space, or move the library)"
            )
        if on_plan is not None:
            on_plan(result.plan)
        with open_index(root) as index:
            from reconciler.executor import Executor

            runner = Executor(
                root,
                index,
                utc_now,
                progress,
                jobs=jobs,
                offline=result.options.offline,
                on_step=on_step,
                on_start=on_start,
                on_downloaded=_lock_download(manifest),
                cancelled=cancelled,
            )
            report = runner.run(result.plan)
        _forget_removed_from_lock(manifest)
        _forget_adopted(root, report)
    return ApplyResult(result.plan, report)


def _adopting(root: Path) -> dict[str, tuple[str, str]]:
    """adopting.json, read only when there is one (the adoption module is not light)."""
    if not (root / planner.ADOPTING).exists():
        return {}
    from reconciler import adoption

    return adoption.read_adopting(root)


def _forget_adopted(root: Path, report: Report) -> None:
    """Drop from adopting.json the copies now set aside (their links follow in the same plan)."""
    from reconciler.executor import Outcome

    done = {
        s.action.path
        for s in report.steps
        if s.action.kind is ActionKind.SET_ASIDE and s.outcome is Outcome.DONE
    }
    if not done:
        return
    from reconciler import adoption

    left = {p: v for p, v in adoption.read_adopting(root).items() if p not in done}
    path = root / adoption.ADOPTING_FILE
    if left:
        atomic_write(path, adoption.adopting_text(left).encode("utf-8"))
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class AdoptReport:
    """What ``mlib adopt`` found in an app folder and wrote into the manifest."""

    scan: Any  # reconciler.adoption.Scan
    proposal: Any  # reconciler.adoption.Proposal
    written: bool
    manifest_before: str
    pending: Path  # adopting.json, and its bytes before (None: there was none)
    pending_before: bytes | None = None


def adopt(manifest_path: Path, folder: Path, target: str, *, write: bool = True) -> AdoptReport:
    """Scan ``folder`` (laid out as the app target ``target`` lays out models), and add to the
    manifest a model per distinct file, moved into the library and linked back where it was
    (identical copies the library already holds are linked to that model and set aside).
    Nothing moves until the plan is applied; :func:`undo_adopt` restores the manifest."""
    from reconciler import adoption, manifest_edit

    manifest = load(manifest_path)
    apps = {a.name: a for a in manifest.apps}
    if target not in apps:
        raise InvalidInputError(
            [
                Problem(
                    str(manifest_path),
                    None,
                    "apps",
                    f"no app target '{target}'",
                    f"use one of: {', '.join(apps) or 'none (add one under apps:)'}",
                )
            ]
        )
    app = apps[target]
    if os.path.realpath(folder) != os.path.realpath(app.models_dir):
        raise InvalidInputError(
            [
                Problem(
                    str(manifest_path),
                    None,
                    f"apps.{target}.models_dir",
                    f"{folder} is not the models folder of '{target}' ({app.models_dir})",
                    f"adopt {app.models_dir}, or point '{target}' at {folder} first",
                )
            ]
        )
    if app.link is LinkMode.CONFIG:
        raise InvalidInputError(
            [
                Problem(
                    str(manifest_path),
                    None,
                    f"apps.{target}.link",
                    "adopting links each file back where it was; 'link: config' cannot (ComfyUI "
                    "would list the library's names instead)",
                    "adopt with 'link: auto', then switch to config mode if you want",
                )
            ]
        )
    translation = select_translations(manifest)[target]
    if not isinstance(translation, Translation):
        raise ReconcilerError(f"cannot adopt for {target}: {translation}")
    root = manifest.library
    found = adoption.scan(app.models_dir, translation, library=root)  # the paths links will have
    library = observe.observe_library(root)
    known: dict[str, tuple[str, str]] = {}  # what the library holds -> (model, name shown)
    for model_id, m in library.items():
        if m.metadata is None:
            continue
        files = m.metadata.files
        if len(files) == 1:
            known[files[0].sha256] = (model_id, files[0].path)
        digest = adoption.tree_digest((f.path, f.sha256) for f in files)
        known[digest] = (model_id, m.metadata.cleaned_name)
    taken = {spec.id for spec in manifest.models} | set(library)
    library_real = os.path.realpath(root) + os.sep
    linked = {  # models already linked somewhere in this app folder
        "/".join(os.path.relpath(os.path.realpath(link.target), library_real).split(os.sep)[:3])
        for link in found.library_links
    }
    proposal = adoption.propose(found, target, known, taken, linked)
    for entry in proposal.entries:  # as a person would write them: relative when beside
        entry["source"] = manifest_edit.parse_source(entry["source"]["path"], manifest_path, "move")
    before = read_text(manifest_path, "manifest")
    pending = root / adoption.ADOPTING_FILE
    pending_before = pending.read_bytes() if pending.exists() else None
    if write and (proposal.entries or proposal.overrides):
        overrides = [
            (model, target, {k: v for k, v in (("folder", f), ("filename", n)) if v})
            for model, f, n in proposal.overrides
        ]
        manifest_edit.add_models(manifest_path, proposal.entries, overrides)
        if proposal.set_aside:
            entries = adoption.read_adopting(root)
            entries.update({p: (sha, model) for p, sha, model in proposal.set_aside})
            (root / ".mlib").mkdir(parents=True, exist_ok=True)
            text = adoption.adopting_text(entries)
            atomic_write(root / adoption.ADOPTING_FILE, text.encode("utf-8"))
    return AdoptReport(found, proposal, write, before, pending, pending_before)


def undo_adopt(manifest_path: Path, report: AdoptReport) -> bool:
    """Put the manifest and adopting.json back as they were before :func:`adopt`; False (and
    nothing changed) when another apply has carried out part of the adoption meanwhile: its
    models are in the library now, and their entries must stay or their links would go."""
    if not report.written:
        return True
    manifest = load(manifest_path)
    adopted = {spec.id for spec in manifest.models} - {
        spec.id for spec in load_manifest(manifest_path, text=report.manifest_before).models
    }
    if any((manifest.library / model_id / "metadata.json").exists() for model_id in adopted):
        log.warning("an apply carried out the adoption meanwhile: the manifest keeps it")
        return False
    atomic_write(manifest_path, report.manifest_before.encode("utf-8"))
    if report.pending_before is not None:
        atomic_write(report.pending, report.pending_before)
    else:
        report.pending.unlink(missing_ok=True)
    return True


def _lock_download(manifest: Manifest) -> Callable[[Action, Path], None]:
    """What records in mlib.lock a download complete in staging (its origin, and its files with
    their hashes), before the model is renamed into the library: a kill at any point leaves
    either the model absent or the model locked, never installed and not locked."""
    path = lockfile.lock_path(manifest)
    specs = {spec.id: spec for spec in manifest.models}

    def record(action: Action, folder: Path) -> None:
        entry = lockfile.entry_of_download(specs[action.model], action, folder)
        if entry is None:
            return
        entries = lockfile.read_lock(path)
        entries[action.model] = entry
        # The temporary file in the library's staging (when on the same filesystem): a kill
        # leaves it where the next apply clears it, not beside the manifest for ever.
        atomic_write(path, lockfile.lock_text(entries).encode("utf-8"), tmp_dir=_staging(manifest))

    return record


def _forget_removed_from_lock(manifest: Manifest) -> None:
    """Drop from mlib.lock the models no longer remote in the manifest, so that the lock an
    apply leaves is current ('lock --check' passes, 'apply --locked' accepts it)."""
    path = lockfile.lock_path(manifest)
    entries = lockfile.read_lock(path)
    remote = {spec.id for spec in manifest.models if lockfile.is_remote(spec)}
    if set(entries) <= remote:
        return
    kept = {model: entry for model, entry in entries.items() if model in remote}
    log.info(
        "mlib.lock: dropping %s (no longer in the manifest)",
        ", ".join(sorted(set(entries) - remote)),
    )
    atomic_write(path, lockfile.lock_text(kept).encode("utf-8"), tmp_dir=_staging(manifest))


def _staging(manifest: Manifest) -> Path | None:
    staging = manifest.library / planner.STAGING
    return None if staging.is_symlink() else staging


@dataclass(frozen=True)
class LockReport:
    path: Path
    locked: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (model id, why)


def lock(manifest_path: Path) -> LockReport:
    """Resolve every remote source of the manifest afresh (the network) and write mlib.lock.

    A model that cannot be resolved keeps its old entry, if any, and is reported. Hashes already
    known (the library's metadata of the same origin, or the old entry) are kept.
    """
    manifest = cache.remembered_manifest(cache.ManifestInput.read(manifest_path))
    path = lockfile.lock_path(manifest)
    try:
        old = lockfile.read_lock(path)
    except LockFileError as exc:  # what 'mlib lock' is for: write it again, from scratch
        log.warning("%s; writing a new one", exc)
        old = {}
    library = observe.observe_library(manifest.library)
    resolved = resolve.resolve_remotes(manifest, library, old, fresh=True)
    entries: dict[str, lockfile.LockEntry] = {}
    failed: list[tuple[str, str]] = []
    for spec in manifest.models:
        facts = resolved.remotes.get(spec.id)
        if facts is None:
            continue
        if facts.error is not None:
            failed.append((spec.id, f"{facts.error} ({facts.fix})" if facts.fix else facts.error))
            if spec.id in old:
                entries[spec.id] = old[spec.id]
            continue
        lib = library.get(spec.id)
        known = lib.metadata if lib is not None else None
        entries[spec.id] = lockfile.entry_of(spec, facts, known, old.get(spec.id))
    # The temporary file in the library's staging (when on the same filesystem): a kill
    # leaves it where the next apply clears it, not beside the manifest for ever.
    atomic_write(path, lockfile.lock_text(entries).encode("utf-8"), tmp_dir=_staging(manifest))
    return LockReport(
        path, tuple(sorted(e for e in entries if e not in dict(failed))), tuple(failed)
    )


def lock_check(manifest_path: Path) -> list[str]:
    """Why mlib.lock is out of date with the manifest (empty: it is current). No network."""
    manifest = cache.remembered_manifest(cache.ManifestInput.read(manifest_path))
    return resolve.lock_problems(manifest, lockfile.read_lock(lockfile.lock_path(manifest)))


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
    from reconciler import hashing

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
                    got = hashing.hash_file(path)
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
