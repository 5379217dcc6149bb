"""The pure planner: ``desire`` turns the manifest into wanted models and links, ``plan`` compares
them with the observed facts and returns the ordered :class:`~reconciler.actions.Plan`.

No I/O, no clock, no randomness (a test enforces the imports): the same inputs always give the
same plan, which is what lets ``mlib apply PLANFILE`` refuse a plan whose world has changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from reconciler.actions import (
    ORDER,
    Action,
    ActionKind,
    Conflict,
    ConflictKind,
    Drift,
    DriftKind,
    ImportFile,
    NoOp,
    Plan,
    human_bytes,
)
from reconciler.errors import NamingError
from reconciler.facts import (
    ConfigFacts,
    LibraryModel,
    LinkRecord,
    PathFacts,
    PathKind,
    RemoteFacts,
    SourceFacts,
)
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    metadata_to_dict,
    overrides_to_dict,
    source_to_dict,
)
from reconciler.model import (
    AppOverride,
    AppTarget,
    LinkMode,
    LocalSource,
    Manifest,
    Metadata,
    ModelSpec,
    Overrides,
)
from reconciler.naming import check_relpath, clean_filename
from reconciler.translations import LinkWant, Translation, links_for
from reconciler.versions import parse_range

STAGING = ".mlib/staging"
#: Copies ``mlib adopt`` found identical to a library file, to be set aside for links.
ADOPTING = ".mlib/adopting.json"
#: Downloaded files waiting for their model folder; kept across applies so downloads resume.
PARTIAL = ".mlib/staging/partial"
_MODE_TEXT = {"auto": "symlink; hardlink or copy where the filesystem refuses symlinks"}
TRASH = ".mlib/trash"


# --- what the manifest wants ------------------------------------------------------------------


@dataclass(frozen=True)
class WantedLink:
    app: str
    path: str  # absolute path of the link in the app's models folder
    target: str  # absolute path of the file or model folder it shows
    model: str
    file: str  # relative path in the model folder; "" for a folder link
    mode: str  # the app target's link mode (auto | symlink | hardlink | copy)


@dataclass(frozen=True)
class WantedModel:
    spec: ModelSpec
    folder: str
    #: Files of the model (relative paths) with sizes: from metadata, or from the source to import.
    files: tuple[tuple[str, int], ...]
    #: The library model this one is renamed from, when its id changed in the manifest.
    rename_from: str | None = None
    #: Set when the model must be imported from its source.
    imports: tuple[ImportFile, ...] = ()
    links: tuple[WantedLink, ...] = ()


@dataclass(frozen=True)
class WantedConfig:
    """``link: config``: a model folder (``path``, relative to the library) that ComfyUI's
    ``folder`` (checkpoints, loras...) should search, through mlib's section of
    extra_model_paths.yaml."""

    app: str
    folder: str
    path: str
    model: str


@dataclass(frozen=True)
class Desired:
    models: tuple[WantedModel, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    noops: tuple[NoOp, ...] = ()
    configs: tuple[WantedConfig, ...] = ()

    @property
    def links(self) -> tuple[WantedLink, ...]:
        return tuple(link for m in self.models for link in m.links)


@dataclass(frozen=True)
class Observed:
    """Everything the planner knows about the disk (built by ``observe``)."""

    library: Mapping[str, LibraryModel] = field(default_factory=dict)
    sources: Mapping[str, SourceFacts] = field(default_factory=dict)
    paths: Mapping[str, PathFacts] = field(default_factory=dict)
    registry: tuple[LinkRecord, ...] = ()
    index: Mapping[str, str] = field(default_factory=dict)  # model id -> metadata_json in models.db
    app_dirs: Mapping[str, bool] = field(default_factory=dict)  # target name -> models_dir exists
    found_links: tuple[str, ...] = ()  # symlinks into the library found in app folders
    staging: tuple[str, ...] = ()
    #: Remote sources resolved for the models to download (from the network or mlib.lock).
    remotes: Mapping[str, RemoteFacts] = field(default_factory=dict)
    #: ``link: config`` app targets: their extra_model_paths.yaml, by target name.
    configs: Mapping[str, ConfigFacts] = field(default_factory=dict)
    #: Copies ``mlib adopt`` found identical to a model's file, to be replaced by links:
    #: path -> (sha256, model id) (``.mlib/adopting.json``).
    adopting: Mapping[str, tuple[str, str]] = field(default_factory=dict)


#: A WantedModel without its links: spec, folder, files, rename_from, imports.
_Pending = tuple[ModelSpec, str, tuple[tuple[str, int], ...], str | None, tuple[ImportFile, ...]]


def desire(
    manifest: Manifest,
    translations: Mapping[str, Translation | str],
    library: Mapping[str, LibraryModel],
    sources: Mapping[str, SourceFacts],
    remotes: Mapping[str, RemoteFacts] | None = None,
) -> Desired:
    """The wanted models and links. ``translations`` maps each app target to its selected
    translation, or to the reason none could be selected; ``remotes`` holds the resolved remote
    sources of models to download, by model id."""
    remotes = remotes or {}
    root = str(manifest.library)
    conflicts: list[Conflict] = []
    noops: list[NoOp] = []
    wanted_ids = {spec.id for spec in manifest.models}
    renamable = {mid: m for mid, m in library.items() if mid not in wanted_ids and m.metadata}
    models: list[_Pending] = []  # the WantedModels but their links, which come next
    for spec in manifest.models:
        folder = os.path.join(root, spec.id)
        existing = library.get(spec.id)
        if existing is not None:
            if existing.metadata is None:
                conflicts.append(
                    Conflict(
                        ConflictKind.SOURCE,
                        spec.id,
                        os.path.join(folder, "metadata.json"),
                        f"the model folder exists but {existing.error}",
                        "restore metadata.json, or move the folder away so mlib re-imports it",
                    )
                )
                continue
            files = tuple((f.path, f.size) for f in existing.metadata.files)
            models.append((spec, folder, files, None, ()))
            continue
        origin = _rename_origin(spec, renamable)
        if origin is not None:
            renamable.pop(origin.id)
            assert origin.metadata is not None
            files = tuple((f.path, f.size) for f in origin.metadata.files)
            models.append((spec, folder, files, origin.id, ()))
            continue
        if not isinstance(spec.source, LocalSource):
            fetched = _downloads(spec, folder, remotes.get(spec.id), conflicts)
            if fetched is not None:
                models.append(
                    (spec, folder, tuple((f.dest, f.size) for f in fetched), None, fetched)
                )
            continue
        facts = sources.get(spec.source.path)
        if facts is None or facts.error is not None:
            why = "was not looked at" if facts is None else facts.error
            conflicts.append(
                Conflict(
                    ConflictKind.SOURCE,
                    spec.id,
                    spec.source.path,
                    f"source {spec.source.path} {why}",
                    "fix source.path in the manifest, or put the file back",
                )
            )
            continue
        imports = _imports(spec, facts, conflicts)
        if imports is None:
            continue
        files = tuple((f.dest, f.size) for f in imports)
        models.append((spec, folder, files, None, imports))
    admits: dict[tuple[str, str], bool] = {}
    configs: list[WantedConfig] = []
    wanted = [
        WantedModel(
            spec,
            folder,
            files,
            rename_from,
            imports,
            tuple(
                _links(
                    spec, folder, files, manifest, translations, noops, conflicts, admits, configs
                )
            ),
        )
        for spec, folder, files, rename_from, imports in models
    ]
    wanted = _resolve_claims(wanted, conflicts)
    return Desired(tuple(wanted), tuple(conflicts), tuple(noops), tuple(configs))


def _rename_origin(spec: ModelSpec, candidates: Mapping[str, LibraryModel]) -> LibraryModel | None:
    """A library model not wanted under its own id that is this spec's model under an old id."""
    for model_id in sorted(candidates):
        meta = candidates[model_id].metadata
        assert meta is not None
        same_source = meta.source == spec.source
        hashes = meta.hashes
        same_pin = spec.sha256 is not None and hashes is not None and hashes.sha256 == spec.sha256
        if same_source or same_pin:
            return candidates[model_id]
    return None


def _imports(
    spec: ModelSpec, facts: SourceFacts, conflicts: list[Conflict]
) -> tuple[ImportFile, ...] | None:
    assert isinstance(spec.source, LocalSource)
    out: list[ImportFile] = []
    try:
        if facts.is_dir:
            # A bundle keeps its published relative names: its files refer to each other.
            for rel, st in facts.files:
                check_relpath(rel)
                if _own_name(rel):
                    raise NamingError(_own_name(rel))
                out.append(ImportFile(os.path.join(facts.path, rel), rel, st.size))
        else:
            ((name, st),) = facts.files
            out.append(ImportFile(facts.path, clean_filename(name), st.size))
    except NamingError as exc:
        conflicts.append(
            Conflict(ConflictKind.SOURCE, spec.id, facts.path, str(exc), "rename the source file")
        )
        return None
    return tuple(out)


def _downloads(
    spec: ModelSpec, folder: str, facts: RemoteFacts | None, conflicts: list[Conflict]
) -> tuple[ImportFile, ...] | None:
    """The files to fetch for a remote model, or None (a conflict says why)."""
    if facts is None or facts.error is not None:
        conflicts.append(
            Conflict(
                ConflictKind.SOURCE,
                spec.id,
                folder,
                facts.error if facts is not None and facts.error else "the source was not resolved",
                facts.fix if facts is not None and facts.fix else "run 'mlib lock' while online",
            )
        )
        return None
    out = []
    for f in facts.files:
        problem = _own_name(f.path)
        try:
            check_relpath(f.path)
        except NamingError as exc:
            problem = str(exc)
        if problem:
            conflicts.append(
                Conflict(ConflictKind.SOURCE, spec.id, f.url, problem, "exclude that file")
            )
            return None
        out.append(ImportFile(f.url, f.path, f.size, f.sha256 or ""))
    return tuple(out)


def _own_name(path: str) -> str:
    """Why a source file may not have ``path`` in a model folder: mlib's own files are there."""
    if path in (METADATA_FILE, OVERRIDES_FILE):
        return f"the source has a file named {path}, the name of mlib's own record of the model"
    return ""


def _override(spec: ModelSpec, target: str) -> AppOverride:
    for o in spec.apps:
        if o.target == target:
            return o
    return _default_override(target)


@cache
def _default_override(target: str) -> AppOverride:
    return AppOverride(target)


def _admits(versions: str, version: str, memo: dict[tuple[str, str], bool]) -> bool:
    """Whether the range ``versions`` holds ``version``; parsed once per pair and ``desire``."""
    key = (versions, version)
    found = memo.get(key)
    if found is None:
        found = memo[key] = parse_range(versions).contains(version)
    return found


def _links(
    spec: ModelSpec,
    model_folder: str,
    files: tuple[tuple[str, int], ...],
    manifest: Manifest,
    translations: Mapping[str, Translation | str],
    noops: list[NoOp],
    conflicts: list[Conflict],
    admits: dict[tuple[str, str], bool],
    configs: list[WantedConfig],
) -> list[WantedLink]:
    out: list[WantedLink] = []
    if not files:
        primary = ""
    elif len(files) == 1:
        primary = files[0][0]
    else:
        primary = max(files, key=lambda f: (f[1], f[0]))[0]
    for app in manifest.apps:
        override = _override(spec, app.name)
        if not override.enabled:
            noops.append(NoOp(spec.id, f"not linked into {app.name}: disabled in the manifest"))
            continue
        if not _admits(override.versions, app.version, admits):
            noops.append(
                NoOp(
                    spec.id,
                    f"not linked into {app.name}: {app.app} {app.version} is outside "
                    f"{override.versions}",
                )
            )
            continue
        translation = translations.get(app.name)
        if not isinstance(translation, Translation):
            continue  # reported once per app by plan()
        wants = links_for(
            translation,
            type=spec.type.value,
            family=spec.family,
            kind=spec.kind,
            tags=spec.tags,
            files=[f for f, _ in files],
            cleaned_name=spec.cleaned_name,
        )
        if not wants:
            conflicts.append(
                Conflict(
                    ConflictKind.TRANSLATION,
                    spec.id,
                    str(app.models_dir),
                    f"no rule of {translation.source} places a {spec.type.value} {spec.kind} "
                    f"for {app.name}",
                    "check the model's kind, or add a rule in a user translation",
                )
            )
            continue
        if app.link is LinkMode.CONFIG:
            _config_wants(spec, app, override, wants, noops, conflicts, configs)
            continue
        models_dir, mode = str(app.models_dir), app.link.value
        for want in wants:
            folder = override.folder or want.folder
            name = want.name
            if override.filename and (want.file == primary or want.file is None):
                name = override.filename
            target = model_folder if want.file is None else os.path.join(model_folder, want.file)
            if want.file is None and mode == "hardlink":
                conflicts.append(
                    Conflict(
                        ConflictKind.TRANSLATION,
                        spec.id,
                        os.path.join(models_dir, folder, name),
                        f"{app.name} links by hardlink, and a folder cannot be hardlinked",
                        "use 'link: auto' (a folder falls back to a copy) or symlink/copy",
                    )
                )
                continue
            out.append(
                WantedLink(
                    app=app.name,
                    path=os.path.join(models_dir, folder, name),
                    target=target,
                    model=spec.id,
                    file=want.file or "",
                    mode=mode,
                )
            )
    return out


def _config_wants(
    spec: ModelSpec,
    app: AppTarget,
    override: AppOverride,
    wants: Sequence[LinkWant],
    noops: list[NoOp],
    conflicts: list[Conflict],
    configs: list[WantedConfig],
) -> None:
    """``link: config``: the ComfyUI folders whose search should include the model's folder.
    ComfyUI lists the files in it under their library names, in the folder's top level."""
    folders: list[str] = []
    for want in wants:
        if want.file is None:  # a folder model: ComfyUI would list the folders in it
            conflicts.append(
                Conflict(
                    ConflictKind.TRANSLATION,
                    spec.id,
                    str(app.config_file),
                    f"{app.name} uses 'link: config', which cannot show a folder model "
                    f"({spec.kind}) as one entry",
                    "give this model a symlink-mode app target, or disable it for this one",
                )
            )
            return
        folder = (override.folder or want.folder).split("/", 1)[0]
        if folder not in folders:
            folders.append(folder)
    if override.filename:
        noops.append(
            NoOp(spec.id, f"{app.name} ('link: config') shows library names: filename not used")
        )
    configs.extend(WantedConfig(app.name, folder, spec.id, spec.id) for folder in folders)


def _resolve_claims(models: list[WantedModel], conflicts: list[Conflict]) -> list[WantedModel]:
    """Two models wanting one link path: the smaller id keeps it, the others get a conflict."""
    owner: dict[str, str] = {}
    for m in sorted(models, key=lambda m: m.spec.id):
        for link in m.links:
            owner.setdefault(link.path, m.spec.id)
    out = []
    for m in models:
        if all(owner[link.path] == m.spec.id for link in m.links):
            out.append(m)  # the common case: nothing to drop, so no copy
            continue
        kept = []
        for link in m.links:
            if owner[link.path] == m.spec.id:
                kept.append(link)
            else:
                conflicts.append(
                    Conflict(
                        ConflictKind.CLAIMED_TWICE,
                        m.spec.id,
                        link.path,
                        f"{owner[link.path]} already links this path",
                        "give one of them a 'filename' or 'folder' override for this app",
                    )
                )
        out.append(replace(m, links=tuple(kept)))
    return out


# --- compare and order ------------------------------------------------------------------------


@dataclass
class _Builder:
    actions: list[Action] = field(default_factory=list)
    noops: list[NoOp] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def act(self, kind: ActionKind, model: str, reason: str, **kw: Any) -> None:
        self.actions.append(Action(kind, model, reason, **kw))


def plan(
    manifest: Manifest,
    desired: Desired,
    observed: Observed,
    translations: Mapping[str, Translation | str],
    *,
    prune: bool = False,
) -> Plan:
    """Compare ``desired`` with ``observed``; every difference becomes an action or a conflict."""
    b = _Builder(noops=list(desired.noops), conflicts=list(desired.conflicts))
    root = str(manifest.library)
    for app in manifest.apps:
        _plan_app(app, translations.get(app.name), observed, desired, b)
        if app.link is LinkMode.CONFIG:
            _plan_config(app, str(manifest.library), desired, observed.configs.get(app.name), b)
    partial = [p for p in observed.staging if _in_partial(p)]
    for leftover in observed.staging:
        if leftover not in partial:
            b.act(
                ActionKind.CLEAR_STAGING,
                "",
                "left by an interrupted apply (mlib's own)",
                path=leftover,
            )
    overrides_texts: dict[tuple[AppOverride, ...], str] = {}
    for m in desired.models:
        _plan_model(m, root, observed, b, overrides_texts)
    for m in desired.models:
        _plan_finish_move(m, observed, b)
    _plan_links(desired, observed, b)
    _plan_unwanted(desired, observed, root, prune, b)
    _plan_partial(partial, b)
    actions = sorted(enumerate(b.actions), key=lambda ia: (ORDER[ia[1].kind], ia[0]))
    return Plan(
        actions=tuple(a for _, a in actions),
        noops=tuple(b.noops),
        conflicts=tuple(b.conflicts),
        drift=tuple(b.drift),
        warnings=tuple(b.warnings),
    )


def _vacated(b: _Builder) -> frozenset[str]:
    """Paths the plan's own actions empty before links are made: the sources of ``move``
    imports (an adopted file's own place) and moved sources removed by FINISH_MOVE."""
    out: set[str] = set()
    for a in b.actions:
        if a.kind is ActionKind.IMPORT and a.mode == "move":
            out.update(f.source for f in a.files)
            if a.target:  # a moved bundle's own folder: emptied, then removed
                out.add(a.target)
        elif a.kind is ActionKind.FINISH_MOVE:
            out.add(a.path)
    return frozenset(out)


def _adopted(
    link: WantedLink, kind: PathKind, vacated: frozenset[str], observed: Observed, b: _Builder
) -> bool:
    """A file where ``link`` goes that adoption put there to be replaced: the model's own moved
    source (gone by the time links are made), or a copy ``mlib adopt`` found identical to the
    model's file (set aside to .mlib/trash/, its sha256 checked again first). Plans the link."""
    copy = observed.adopting.get(link.path)
    if link.path not in vacated and (
        kind is not PathKind.FILE or copy is None or copy[1] != link.model
    ):
        return False
    if link.path not in vacated:
        assert copy is not None
        b.act(
            ActionKind.SET_ASIDE,
            link.model,
            "adopted: the same bytes as the library's file (sha256 checked before it is moved); "
            "set aside in .mlib/trash/ so the link takes its place",
            path=link.path,
            target=link.target,
            data=copy[0],
        )
    b.act(
        ActionKind.LINK,
        link.model,
        f"adopted: {link.app} sees it where it was, now from the library",
        path=link.path,
        target=link.target,
        mode=link.mode,
        app=link.app,
    )
    return True


def _plan_finish_move(m: WantedModel, observed: Observed, b: _Builder) -> None:
    """A ``move`` interrupted after its model folder was renamed into place left the source:
    remove it when it is the very file the library holds (same inode), else report it."""
    source = m.spec.source
    lib = observed.library.get(m.spec.id)
    if not isinstance(source, LocalSource) or source.mode.value != "move" or m.imports:
        return
    if any(link.path == source.path for link in m.links):
        return  # adopted: the model's own link stands where its source was
    facts = observed.sources.get(source.path)
    if lib is None or facts is None or facts.error is not None or facts.link:
        return  # a symlink where the source was is a link (mlib's, after adoption): not a source
    held = dict(lib.present)
    if facts.is_dir:
        pairs = [(os.path.join(facts.path, rel), rel, st) for rel, st in facts.files]
    elif len(held) == 1:
        pairs = [(facts.path, next(iter(held)), facts.files[0][1])]
    else:
        return
    for path, rel, st in pairs:
        kept = held.get(rel)
        if kept is not None and (kept.dev, kept.inode) == (st.dev, st.inode):
            b.act(
                ActionKind.FINISH_MOVE,
                m.spec.id,
                "an interrupted move left the source; it is the library's file (same inode)",
                path=path,
                target=os.path.join(m.folder, rel),
            )
        else:
            message = "a moved source is still there (not the library's file); remove it yourself"
            b.drift.append(Drift(DriftKind.FILE_EXTRA, m.spec.id, path, message))


def _plan_app(
    app: AppTarget,
    translation: Translation | str | None,
    observed: Observed,
    desired: Desired,
    b: _Builder,
) -> None:
    if not isinstance(translation, Translation):
        b.conflicts.append(
            Conflict(
                ConflictKind.TRANSLATION,
                "",
                str(app.models_dir),
                translation or f"no translation for {app.app}",
                "add a translation for this app and version, or fix 'app:'/'variant:'",
            )
        )
        return
    if not observed.app_dirs.get(app.name, False) and any(
        link.app == app.name for link in desired.links
    ):
        b.act(
            ActionKind.MKDIR,
            "",
            f"{app.name}'s models folder does not exist yet; it will be created",
            path=str(app.models_dir),
            app=app.name,
        )


#: The section of extra_model_paths.yaml that is mlib's (observe.CONFIG_SECTION says the same).
CONFIG_SECTION = "mlib"


def _plan_config(
    app: AppTarget, library: str, desired: Desired, facts: ConfigFacts | None, b: _Builder
) -> None:
    """Keep mlib's section of ``app``'s extra_model_paths.yaml listing, per ComfyUI folder, the
    model folders it should search (relative to ``base_path``, the library)."""
    path = str(app.config_file)
    if facts is not None and facts.error is not None:
        b.conflicts.append(
            Conflict(
                ConflictKind.FILE_IN_THE_WAY,
                "",
                path,
                f"{path} {facts.error}; mlib will not rewrite it",
                "fix the file (or move it away), then plan again",
            )
        )
        return
    by_folder: dict[str, list[str]] = {}
    for c in desired.configs:
        if c.app == app.name:
            by_folder.setdefault(c.folder, []).append(c.path)
    wanted: tuple[tuple[str, str], ...] | None = None
    if by_folder:
        listed = ((f, "\n".join(sorted(paths)) + "\n") for f, paths in sorted(by_folder.items()))
        wanted = (("base_path", library), *listed)
    current = facts.section if facts is not None else None
    if current == wanted:
        if wanted is not None:
            b.noops.append(NoOp("", f"{app.name}: mlib's section of {path} is up to date", path))
        return
    count = sum(len(p) for p in by_folder.values())
    reason = (
        f"{app.name} ('link: config'): list {count} model folder{'s' if count != 1 else ''} in "
        f"{len(by_folder)} ComfyUI folder{'s' if len(by_folder) != 1 else ''}"
        if wanted is not None
        else f"{app.name}: no model to show any more; remove mlib's section"
    )
    data = {"section": None if wanted is None else dict(wanted), "name": CONFIG_SECTION}
    b.act(ActionKind.WRITE_CONFIG, "", reason, path=path, app=app.name, data=_json(data))
    if current is not None:
        b.drift.append(Drift(DriftKind.CONFIG_STALE, "", path, "mlib's section differs"))
    elif wanted is not None:
        b.drift.append(Drift(DriftKind.CONFIG_STALE, "", path, "mlib's section is missing"))


def _plan_model(
    m: WantedModel,
    root: str,
    observed: Observed,
    b: _Builder,
    overrides_texts: dict[tuple[AppOverride, ...], str],
) -> None:
    spec = m.spec
    overrides_json = overrides_texts.get(spec.apps)
    if overrides_json is None:  # most models share their overrides (none, mostly): one text each
        overrides_json = overrides_texts[spec.apps] = _json(overrides_to_dict(Overrides(spec.apps)))
    if m.imports and not isinstance(spec.source, LocalSource):
        _plan_download(m, overrides_json, observed, b)
        return
    if m.imports:
        source = spec.source
        assert isinstance(source, LocalSource)
        data = {"metadata": _partial_metadata(spec), "overrides": json.loads(overrides_json)}
        count = "" if len(m.imports) == 1 else f"{len(m.imports)} files "
        facts = observed.sources.get(source.path)
        b.act(
            ActionKind.IMPORT,
            spec.id,
            f"new model: {source.mode.value} {count}from {source.path}",
            path=m.folder,
            target=source.path if facts is not None and facts.is_dir else "",
            mode=source.mode.value,
            files=m.imports,
            data=_json(data),
            size=sum(f.size for f in m.imports),
        )
        b.act(ActionKind.INDEX_UPSERT, spec.id, "index the new model", path=m.folder)
        b.drift.append(Drift(DriftKind.MODEL_MISSING, spec.id, m.folder, "not in the library"))
        return
    if m.rename_from is not None:
        old = observed.library[m.rename_from]
        assert old.metadata is not None
        b.act(
            ActionKind.RENAME,
            spec.id,
            f"renamed in the manifest (was {m.rename_from}); files are moved, not re-imported",
            path=old.folder,
            target=m.folder,
        )
        b.act(ActionKind.INDEX_DELETE, m.rename_from, "the model moved", path=old.folder)
        meta = old.metadata
        current_text: str | None = None
        overrides_text: str | None = old.overrides_text
    else:
        lib = observed.library[spec.id]
        assert lib.metadata is not None
        meta = lib.metadata
        current_text = lib.metadata_text
        overrides_text = lib.overrides_text
        _file_drift(lib, b)
        if meta.source != spec.source and not isinstance(spec.source, LocalSource):
            b.conflicts.append(
                Conflict(
                    ConflictKind.SOURCE,
                    spec.id,
                    m.folder,
                    f"the manifest now names another source ({spec.source.kind.value}) than the "
                    f"one this model was installed from ({meta.origin or meta.source.kind.value})",
                    "mlib does not replace an installed model's files: move its folder out of "
                    "the library (or give the model a new name) to download the new source",
                )
            )
            return
    changed = not _follows(meta, spec)
    if changed or m.rename_from is not None:
        wanted = _updated(meta, spec)
        b.act(
            ActionKind.WRITE_METADATA,
            spec.id,
            "metadata follows the manifest (" + ", ".join(_changed(meta, wanted)) + ")"
            if changed
            else "metadata follows the new id",
            path=os.path.join(m.folder, "metadata.json"),
            data=_json(metadata_to_dict(wanted)),
        )
        if current_text is not None:
            b.drift.append(
                Drift(DriftKind.METADATA_STALE, spec.id, m.folder, "differs from the manifest")
            )
    else:
        b.noops.append(NoOp(spec.id, "metadata matches the manifest", m.folder))
    new_overrides = overrides_text != overrides_json
    if new_overrides:
        b.act(
            ActionKind.WRITE_OVERRIDES,
            spec.id,
            "overrides follow the manifest's apps: entries",
            path=os.path.join(m.folder, "overrides.json"),
            data=overrides_json,
        )
    if changed or m.rename_from is not None:
        b.act(ActionKind.INDEX_UPSERT, spec.id, "index the updated metadata", path=m.folder)
    elif new_overrides:  # the index row holds the overrides too (mlib list --app reads them)
        b.act(ActionKind.INDEX_UPSERT, spec.id, "index the new overrides", path=m.folder)
    elif observed.index.get(spec.id) != current_text:
        reason = "index row missing" if spec.id not in observed.index else "index row out of date"
        b.drift.append(Drift(DriftKind.INDEX_STALE, spec.id, m.folder, reason))
        b.act(ActionKind.INDEX_UPSERT, spec.id, reason, path=m.folder)


def _plan_download(m: WantedModel, overrides_json: str, observed: Observed, b: _Builder) -> None:
    spec = m.spec
    facts = observed.remotes[spec.id]
    metadata = _partial_metadata(spec) | {"origin": facts.origin}
    data = {"metadata": metadata, "overrides": json.loads(overrides_json), "etag": facts.etag}
    known = sum(f.size for f in m.imports if f.size >= 0)
    unknown = sum(1 for f in m.imports if f.size < 0)
    count = "1 file" if len(m.imports) == 1 else f"{len(m.imports)} files"
    size = human_bytes(known) + (f" + {unknown} of unknown size" if unknown else "")
    where = "mlib.lock" if facts.locked else "the network"
    b.act(
        ActionKind.DOWNLOAD,
        spec.id,
        f"new model: download {count} ({size}) from {facts.origin} (resolved from {where})",
        path=m.folder,
        mode="download",
        files=m.imports,
        data=_json(data),
        size=known,
    )
    b.act(ActionKind.INDEX_UPSERT, spec.id, "index the new model", path=m.folder)
    b.drift.append(Drift(DriftKind.MODEL_MISSING, spec.id, m.folder, "not in the library"))


def _file_drift(lib: LibraryModel, b: _Builder) -> None:
    assert lib.metadata is not None
    present = dict(lib.present)
    extra = dict(lib.extra)
    for entry in lib.metadata.files:
        st = present.get(entry.path)
        if st is not None and st.size == entry.size:
            continue
        path = os.path.join(lib.folder, entry.path)
        if st is not None:
            message = f"size {st.size} differs from metadata ({entry.size}); run 'mlib verify'"
            b.drift.append(Drift(DriftKind.FILE_CHANGED, lib.id, path, message))
            continue
        b.drift.append(Drift(DriftKind.FILE_MISSING, lib.id, path, "listed in metadata, missing"))
        # A file the user renamed: exactly one unlisted file of the same size takes the name back.
        same = [name for name, size in extra.items() if size == entry.size]
        if len(same) == 1:
            b.act(
                ActionKind.RENAME,
                lib.id,
                f"restore the name from metadata ({same[0]} looks renamed: same size)",
                path=os.path.join(lib.folder, same[0]),
                target=path,
                mode="file",
            )
            del extra[same[0]]
        else:
            b.conflicts.append(
                Conflict(
                    ConflictKind.SOURCE,
                    lib.id,
                    path,
                    "a file of this model is missing",
                    "put it back, or move the model folder away so mlib re-imports it",
                )
            )
    for name in sorted(extra):
        message = "not listed in metadata (left alone)"
        b.drift.append(Drift(DriftKind.FILE_EXTRA, lib.id, os.path.join(lib.folder, name), message))


def _plan_links(desired: Desired, observed: Observed, b: _Builder) -> None:
    registry = {r.link_path: r for r in observed.registry}
    vacated = _vacated(b)
    for link in desired.links:
        facts = observed.paths.get(link.path)
        kind = facts.kind if facts is not None else PathKind.MISSING
        record = registry.get(link.path)
        if kind is PathKind.MISSING:
            b.act(
                ActionKind.LINK,
                link.model,
                f"{link.app} should see it ({_MODE_TEXT.get(link.mode, link.mode)})",
                path=link.path,
                target=link.target,
                mode=link.mode,
                app=link.app,
            )
            b.drift.append(Drift(DriftKind.LINK_MISSING, link.model, link.path, "no link yet"))
            continue
        assert facts is not None
        if kind is PathKind.SYMLINK:
            if facts.points_to == link.target:
                b.noops.append(NoOp(link.model, f"linked into {link.app}", link.path))
                if record is None:
                    b.act(
                        ActionKind.LINK,
                        link.model,
                        "the link is right; record it as mlib's",
                        path=link.path,
                        target=link.target,
                        mode="symlink",
                        app=link.app,
                        data="adopt",
                    )
                continue
            ours = record is not None or _inside(facts.points_to, observed, desired)
            if ours:
                b.act(
                    ActionKind.RELINK,
                    link.model,
                    f"points to {facts.points_to}, should point to {link.target}",
                    path=link.path,
                    target=link.target,
                    mode=link.mode,
                    app=link.app,
                )
                b.drift.append(Drift(DriftKind.LINK_WRONG, link.model, link.path, "wrong target"))
            else:
                b.conflicts.append(
                    Conflict(
                        ConflictKind.FOREIGN_LINK,
                        link.model,
                        link.path,
                        f"a link mlib did not make is there (to {facts.points_to})",
                        "remove or rename it yourself, or give this model a 'filename' override",
                    )
                )
                b.drift.append(Drift(DriftKind.FOREIGN, link.model, link.path, "foreign link"))
            continue
        if (
            record is not None
            and record.model_id == link.model
            and record.mode
            in (
                "hardlink",
                "copy",
            )
        ):
            b.noops.append(NoOp(link.model, f"{record.mode} in {link.app}", link.path))
            continue
        if _adopted(link, kind, vacated, observed, b):
            continue
        b.conflicts.append(
            Conflict(
                ConflictKind.FILE_IN_THE_WAY,
                link.model,
                link.path,
                f"a {kind.value} that mlib did not make is where the link should go",
                "move it away (or into the library with 'mlib adopt'); mlib never overwrites it",
            )
        )
        b.drift.append(Drift(DriftKind.FOREIGN, link.model, link.path, f"foreign {kind.value}"))


def _inside(path: str | None, observed: Observed, desired: Desired) -> bool:
    if path is None:
        return False
    roots = {os.path.dirname(os.path.dirname(os.path.dirname(m.folder))) for m in desired.models}
    roots |= {
        os.path.dirname(os.path.dirname(os.path.dirname(m.folder)))
        for m in observed.library.values()
    }
    return any((path + os.sep).startswith(r + os.sep) for r in roots if r)


def _in_partial(path: str) -> bool:
    parent = os.path.dirname(path)
    return os.path.basename(parent) == "partial" and os.path.dirname(parent).endswith(STAGING)


def fetch_key(f: ImportFile) -> str:
    """The name of ``f``'s file in ``.mlib/staging/partial/``: its sha256 when known (the same
    bytes are the same file, whatever the URL), else a digest of its URL."""
    return f.sha256 or hashlib.sha256(f.source.encode("utf-8", "surrogatepass")).hexdigest()


def _plan_partial(partial: Sequence[str], b: _Builder) -> None:
    """Clear the files in ``.mlib/staging/partial/`` that no download of this plan resumes
    (its model left the manifest, or its URL or bytes changed): else they would stay for ever,
    each up to a whole model's size. All are kept while a source cannot be resolved: its
    download may well need them, and a flaky server must not cost a whole download."""
    if not partial or any(c.kind is ConflictKind.SOURCE for c in b.conflicts):
        return
    needed = {fetch_key(f) for a in b.actions if a.kind is ActionKind.DOWNLOAD for f in a.files}
    for path in partial:
        if os.path.basename(path).split(".", 1)[0] not in needed:
            b.act(
                ActionKind.CLEAR_STAGING,
                "",
                "a download that no model of the manifest needs any more (mlib's own)",
                path=path,
            )


def _plan_unwanted(
    desired: Desired, observed: Observed, root: str, prune: bool, b: _Builder
) -> None:
    wanted_paths = {link.path for link in desired.links}
    registered = {r.link_path for r in observed.registry}
    for record in observed.registry:
        if record.link_path in wanted_paths:
            continue
        facts = observed.paths.get(record.link_path)
        gone = facts is None or facts.kind is PathKind.MISSING
        b.act(
            ActionKind.UNLINK,
            record.model_id,
            "already gone; forget it" if gone else f"{record.app} should no longer see it",
            path=record.link_path,
            mode=record.mode,
            app=record.app,
            target=os.path.join(root, record.model_id, record.file),
        )
        if not gone:
            b.drift.append(
                Drift(DriftKind.LINK_EXTRA, record.model_id, record.link_path, "no longer wanted")
            )
    for path in observed.found_links:
        if path in wanted_paths or path in registered:
            continue
        facts = observed.paths.get(path)
        b.act(
            ActionKind.UNLINK,
            "",
            "a symlink into the library that no model wants here",
            path=path,
            mode="symlink",
            target=(facts.points_to or "") if facts else "",
        )
    wanted = {m.spec.id for m in desired.models} | {
        m.rename_from for m in desired.models if m.rename_from
    }
    for model_id, lib in sorted(observed.library.items()):
        if model_id in wanted:
            continue
        if prune:
            b.act(
                ActionKind.TRASH,
                model_id,
                "not in the manifest (--prune): moved to .mlib/trash, not deleted",
                path=lib.folder,
                target=os.path.join(root, TRASH),
            )
            if model_id in observed.index:
                b.act(ActionKind.INDEX_DELETE, model_id, "pruned", path=lib.folder)
        else:
            b.drift.append(
                Drift(DriftKind.MODEL_UNMANAGED, model_id, lib.folder, "not in the manifest")
            )
            b.noops.append(
                NoOp(model_id, "not in the manifest; kept (--prune moves it to the trash)")
            )
    for model_id in sorted(observed.index):
        if model_id not in observed.library and model_id not in wanted:
            b.act(ActionKind.INDEX_DELETE, model_id, "no such model folder any more")
            b.drift.append(Drift(DriftKind.INDEX_STALE, model_id, "", "row without a folder"))


# --- helpers ----------------------------------------------------------------------------------


def _partial_metadata(spec: ModelSpec) -> dict[str, Any]:
    """What an import knows before hashing; the executor adds files, hashes and times."""
    return {
        "schema_version": 1,
        "id": spec.id,
        "official_name": spec.name,
        "cleaned_name": spec.cleaned_name,
        "model_type": spec.type.value,
        "family": spec.family,
        "kind": spec.kind,
        "tags": list(spec.tags),
        "source": source_to_dict(spec.source),
    }


def _updated(meta: Metadata, spec: ModelSpec) -> Metadata:
    return replace(
        meta,
        id=spec.id,
        official_name=spec.name,
        cleaned_name=spec.cleaned_name,
        model_type=spec.type,
        family=spec.family,
        kind=spec.kind,
        tags=spec.tags,
        source=spec.source,
    )


def _follows(meta: Metadata, spec: ModelSpec) -> bool:
    """``_updated(meta, spec) == meta``, without building the updated value."""
    return (
        meta.id == spec.id
        and meta.official_name == spec.name
        and meta.cleaned_name == spec.cleaned_name
        and meta.model_type == spec.type
        and meta.family == spec.family
        and meta.kind == spec.kind
        and meta.tags == spec.tags
        and meta.source == spec.source
    )


def _changed(old: Metadata, new: Metadata) -> list[str]:
    fields = ("id", "official_name", "model_type", "family", "kind", "tags", "source")
    return [f for f in fields if getattr(old, f) != getattr(new, f)]


def _mode_text(spec: ModelSpec) -> str:
    assert isinstance(spec.source, LocalSource)
    return {"copy": "copy", "hardlink": "hardlink", "move": "move"}[spec.source.mode.value]


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
