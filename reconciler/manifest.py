"""The manifest's meaning: turn a schema-checked document into a :class:`Manifest`, or problems.

Pure: paths are resolved lexically against the manifest's folder and the given home folder, so the
same document always gives the same value. Every problem is collected; nothing stops at the first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

from reconciler.document import Document, PathKey
from reconciler.errors import InvalidInputError, NamingError, Problem, VersionRangeError
from reconciler.model import (
    AppOverride,
    AppTarget,
    HfSource,
    ImportMode,
    LinkMode,
    LocalSource,
    Manifest,
    ModelSpec,
    ModelType,
    Source,
    UrlSource,
)
from reconciler.naming import check_relpath, clean_slug
from reconciler.versions import parse_range, parse_version

DEFAULT_LIBRARY = "shared-resources/models"
SOURCE_KINDS = ("hf", "url", "path")
#: Options each source kind accepts besides its own key.
SOURCE_OPTIONS: Mapping[str, frozenset[str]] = {
    "hf": frozenset({"revision", "files", "exclude"}),
    "url": frozenset({"filename"}),
    "path": frozenset({"mode"}),
}
_ALL_OPTIONS = frozenset().union(*SOURCE_OPTIONS.values())
_GLOB_CHARS = frozenset("*?[")
_TYPE_VALUES = frozenset(t.value for t in ModelType)


def interpret(
    doc: Document, manifest_path: Path, home: Path, schema_problems: list[Problem]
) -> Manifest:
    """Build the manifest value from ``doc``; raise one error holding every problem found.

    ``schema_problems`` are the JSON Schema findings for the same document; the semantic checks here
    add to them (and replace the schema's generic wording where they say the same thing better).
    """
    reader = _Reader(doc, manifest_path, home)
    manifest = reader.manifest()
    mine = {(p.path, p.line) for p in reader.problems}
    problems = reader.problems + [p for p in schema_problems if (p.path, p.line) not in mine]
    if problems:
        order = sorted(set(problems), key=lambda p: (p.line or 0, p.path, p.message))
        raise InvalidInputError(order)
    return manifest


def resolve_path(text: str, base: Path, home: Path) -> Path:
    """``~`` expands to ``home``; relative paths are taken from ``base``; result is normalised."""
    if text == "~" or text.startswith(("~/", "~\\")):
        text = str(home) + text[1:]
    path = Path(text)
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _resolve_text(text: str, base: str, home: str) -> str:
    """``str(resolve_path(text, Path(base), Path(home)))`` without the Path objects (POSIX)."""
    if text == "~" or text.startswith(("~/", "~\\")):
        text = home + text[1:]
    return os.path.normpath(os.path.join(base, text))


def model_id(type_: str, family: str, name: str) -> str:
    return f"{type_}/{family}/{clean_slug(name)}"


def _is_within(inner: PurePath, outer: PurePath) -> bool:
    return inner == outer or outer in inner.parents


class _Reader:
    """Walks the document once, building values and collecting problems."""

    def __init__(self, doc: Document, manifest_path: Path, home: Path) -> None:
        self.doc = doc
        self.base = Path(os.path.normpath(manifest_path.absolute())).parent
        self.manifest_path = manifest_path
        self.home = home
        self.base_text, self.home_text = str(self.base), str(home)
        self.problems: list[Problem] = []

    def problem(self, key: PathKey, message: str, fix: str = "") -> None:
        self.problems.append(self.doc.problem(key, message, fix))

    # -- top level -------------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        data = self.doc.data
        if not isinstance(data, dict):
            if data is None:
                self.problem((), "the manifest is empty", "start from 'mlib init'")
            return Manifest(self.manifest_path, self.base, (), (), ())
        library = resolve_path(_str(data.get("library")) or DEFAULT_LIBRARY, self.base, self.home)
        folders = [t for t in _list(data.get("translations")) if _str(t)]
        translations = tuple(resolve_path(t, self.base, self.home) for t in folders)
        raw_apps = _dict(data.get("apps"))
        apps = tuple(self._apps(raw_apps))
        self._check_nesting(library, raw_apps)
        self._check_config_files(apps)
        ids: list[tuple[int, str]] = []
        models = tuple(self._models(_list(data.get("models")), set(raw_apps), ids))
        self._check_duplicate_ids(ids)
        return Manifest(self.manifest_path, library, translations, apps, models)

    def _apps(self, apps: dict[str, Any]) -> Iterator[AppTarget]:
        for name, raw in apps.items():
            if not isinstance(raw, dict):
                continue
            key: PathKey = ("apps", name)
            version = _str(raw.get("version"))
            if version is not None:
                self._check(parse_version, version, (*key, "version"), 'write e.g. "0.3.62"')
            models_dir = _str(raw.get("models_dir"))
            if version is None or models_dir is None:
                continue
            app = _str(raw.get("app")) or name
            link = _enum(LinkMode, raw.get("link"), LinkMode.AUTO)
            config = _str(raw.get("config"))
            if link is LinkMode.CONFIG and app != "comfyui":
                self.problem(
                    (*key, "link"),
                    f"'link: config' writes ComfyUI's extra_model_paths.yaml; {app} has none",
                    "use auto, symlink, hardlink or copy",
                )
            if config is not None and link is not LinkMode.CONFIG:
                self.problem((*key, "config"), "only used with 'link: config'", "remove it")
            yield AppTarget(
                name=name,
                app=app,
                version=version,
                variant=_str(raw.get("variant")) or "default",
                models_dir=resolve_path(models_dir, self.base, self.home),
                link=link,
                config=resolve_path(config, self.base, self.home) if config else None,
            )

    def _check_config_files(self, apps: Sequence[AppTarget]) -> None:
        """Two ``link: config`` targets would rewrite one extra_model_paths.yaml by turns."""
        first: dict[Path, str] = {}
        for app in apps:
            if app.link is not LinkMode.CONFIG:
                continue
            other = first.setdefault(app.config_file, app.name)
            if other != app.name:
                self.problem(
                    ("apps", app.name, "config"),
                    f"the same extra_model_paths.yaml as '{other}' ({app.config_file})",
                    "give one of them its own file with 'config:'",
                )

    def _check_nesting(self, library: Path, apps: dict[str, Any]) -> None:
        for name, raw in apps.items():
            text = _str(raw.get("models_dir")) if isinstance(raw, dict) else None
            if text is None:
                continue
            models_dir = resolve_path(text, self.base, self.home)
            key: PathKey = ("apps", name, "models_dir")
            if _is_within(library, models_dir):
                self.problem(
                    key,
                    f"the library root {library} is inside this models_dir",
                    "move the library out of the app's folder; the app would see every file twice",
                )
            elif _is_within(models_dir, library):
                self.problem(
                    key,
                    f"this models_dir is inside the library root {library}",
                    "point models_dir at the app's own folder, outside the library",
                )

    # -- models ----------------------------------------------------------------------------------

    def _models(
        self, models: list[Any], targets: set[str], ids: list[tuple[int, str]]
    ) -> Iterator[ModelSpec]:
        """Each complete model; ``ids`` gets the id of every model that has one, for duplicates."""
        for i, raw in enumerate(models):
            if not isinstance(raw, dict):
                continue
            key: PathKey = ("models", i)
            source = self._source(_dict(raw.get("source")), (*key, "source"))
            apps = raw.get("apps")
            overrides = (
                tuple(self._overrides(apps, (*key, "apps"), targets))
                if isinstance(apps, dict) and apps
                else ()
            )
            self._check_pin(raw, source, key)
            name, type_, family, kind = (
                _str(raw.get(f)) for f in ("name", "type", "family", "kind")
            )
            cleaned = None
            if name is not None:
                try:
                    cleaned = clean_slug(name)
                except NamingError as exc:
                    self.problem((*key, "name"), str(exc), "use a name with letters or digits")
            explicit = _str(raw.get("id"))
            if explicit is None and type_ and family and cleaned:
                explicit = f"{type_}/{family}/{cleaned}"
            if explicit is not None:
                ids.append((i, explicit))
            if not (name and cleaned and family and kind and source and explicit):
                continue
            if type_ not in _TYPE_VALUES:
                continue
            yield ModelSpec(
                id=explicit,
                name=name,
                cleaned_name=cleaned,
                type=ModelType(type_),
                family=family,
                kind=kind,
                source=source,
                sha256=(_str(raw.get("sha256")) or "").lower() or None,
                tags=tuple(t for t in _list(raw.get("tags")) if isinstance(t, str)),
                apps=overrides,
                line=self.doc.positions.line(key),
            )

    def _source(self, raw: dict[str, Any], key: PathKey) -> Source | None:
        if not raw:
            return None
        kinds = [k for k in raw if k in SOURCE_KINDS]  # in the order written
        for name in raw:
            if name not in SOURCE_KINDS and name not in _ALL_OPTIONS:
                self.problem(
                    (*key, name),
                    f"unknown source kind '{name}'",
                    "use one of: hf: org/repo, url: https://..., path: /local/file",
                )
        if not kinds:
            if all(n in _ALL_OPTIONS for n in raw):
                self.problem(key, "no source kind given", "add one of: hf, url, path")
            return None
        if len(kinds) > 1:
            self.problem(
                (*key, kinds[1]),
                f"two sources in one model ({' and '.join(kinds)})",
                "keep one source per model; list the other as its own model",
            )
            return None
        kind = kinds[0]
        for name in raw:
            if name in _ALL_OPTIONS and name not in SOURCE_OPTIONS[kind]:
                self.problem(
                    (*key, name),
                    f"'{name}' does not apply to a {kind} source",
                    f"{kind} sources take: {', '.join(sorted(SOURCE_OPTIONS[kind])) or 'nothing'}",
                )
        value = _str(raw.get(kind))
        if value is None:
            return None
        if kind == "hf":
            files = tuple(f for f in _list(raw.get("files")) if isinstance(f, str))
            for j, pattern in enumerate(files):
                self._check_pattern(pattern, (*key, "files", j))
            return HfSource(
                repo=value,
                revision=_str(raw.get("revision")) or "main",
                files=files,
                exclude=tuple(f for f in _list(raw.get("exclude")) if isinstance(f, str)),
            )
        if kind == "url":
            filename = _str(raw.get("filename"))
            if filename is not None:
                self._check_single_name(filename, (*key, "filename"))
            return UrlSource(url=value, filename=filename)
        if os.name == "posix":
            path = _resolve_text(value, self.base_text, self.home_text)
        else:  # pragma: no cover - drives and UNC paths are pathlib's business
            path = str(resolve_path(value, self.base, self.home))
        return LocalSource(path=path, mode=_enum(ImportMode, raw.get("mode"), ImportMode.COPY))

    def _check_pattern(self, pattern: str, key: PathKey) -> None:
        literal = pattern.replace("*", "x").replace("?", "x").replace("[", "x").replace("]", "x")
        self._check(check_relpath, literal, key, "write a path inside the repo")

    def _check_pin(self, raw: dict[str, Any], source: Source | None, key: PathKey) -> None:
        if not isinstance(source, HfSource) or _str(raw.get("sha256")) is None:
            return
        single = len(source.files) == 1 and not (_GLOB_CHARS & set(source.files[0]))
        if not single:
            self.problem(
                (*key, "sha256"),
                "a sha256 pin needs a single-file source",
                "list exactly one file under source.files, or drop the pin (the lock pins bundles)",
            )

    def _overrides(
        self, raw: dict[str, Any], key: PathKey, targets: set[str]
    ) -> Iterator[AppOverride]:
        for target, value in raw.items():
            here = (*key, target)
            if target not in targets:
                known = ", ".join(sorted(targets)) or "none defined"
                self.problem(
                    here,
                    f"unknown app target '{target}'",
                    f"use a target from 'apps:' ({known}) or define it there",
                )
                continue
            if isinstance(value, bool):
                yield AppOverride(target=target, enabled=value)
            elif isinstance(value, str):
                versions = self._range(value, here)
                if versions is not None:
                    yield AppOverride(target=target, versions=versions)
            elif isinstance(value, dict):
                versions = self._range(_str(value.get("versions")) or "*", (*here, "versions"))
                folder = _str(value.get("folder"))
                if folder is not None:
                    self._check(check_relpath, folder, (*here, "folder"), "write a relative folder")
                filename = _str(value.get("filename"))
                if filename is not None:
                    self._check_single_name(filename, (*here, "filename"))
                if versions is not None:
                    yield AppOverride(
                        target=target,
                        enabled=value.get("enabled", True) is not False,
                        versions=versions,
                        folder=folder,
                        filename=filename,
                    )

    def _range(self, text: str, key: PathKey) -> str | None:
        try:
            return parse_range(text).text
        except VersionRangeError as exc:
            self.problem(key, str(exc), "write e.g. '>=0.3,<0.4' or '^0.3'")
            return None

    def _check_single_name(self, name: str, key: PathKey) -> None:
        if "/" in name or "\\" in name:
            self.problem(key, f"'{name}' is a path, not a file name", "give a bare file name")
            return
        self._check(check_relpath, name, key, "give a plain file name")

    def _check(self, fn: Callable[[str], object], value: str, key: PathKey, fix: str) -> None:
        try:
            fn(value)
        except (NamingError, VersionRangeError) as exc:
            self.problem(key, str(exc), fix)

    def _check_duplicate_ids(self, ids: list[tuple[int, str]]) -> None:
        # Folder names fold case on macOS and Windows, so ids that differ only in case collide too.
        first: dict[str, int] = {}
        for index, model_id in ids:
            seen = first.setdefault(model_id.casefold(), index)
            if seen != index:
                line = self.doc.positions.line(("models", seen))
                self.problem(
                    ("models", index),
                    f"duplicate model id '{model_id}' (first on line {line})",
                    "give one of them another name or family, or an explicit 'id:'",
                )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_E = TypeVar("_E", LinkMode, ImportMode)


def _enum(cls: type[_E], value: Any, default: _E) -> _E:
    if value is None:
        return default
    member = cls._value2member_map_.get(value) if isinstance(value, str) else None
    return member if isinstance(member, cls) else default
