"""Observe the disk as frozen facts: library models, sources, link paths, app folders.

Reads only (layer L2). Nothing here hashes a file: sizes, mtimes and inodes come from ``stat``;
hashes come from metadata, from the stat cache in models.db, or are computed at import/verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat as stat_mod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from reconciler.facts import (
    ConfigFacts,
    FileStat,
    LibraryModel,
    PathFacts,
    PathKind,
    SourceFacts,
)
from reconciler.library import _depth_three as depth_three
from reconciler.library import _subdirs, gc_paused
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    Malformed,
    metadata_from_dict,
)
from reconciler.model import Metadata

STAGING = ".mlib/staging"
#: Downloads in progress (``.mlib/staging/partial``): resumed by the next apply, cleared by the
#: first plan that no longer needs them.
PARTIAL_NAME = "partial"
TRASH = ".mlib/trash"


def observe_library(root: Path) -> dict[str, LibraryModel]:
    """Every model folder under ``root``: metadata parsed, listed files stat'ed, extras named.

    A model folder is a folder at model depth holding a metadata.json file (what
    :func:`reconciler.library.model_dirs` finds). One listing of each folder says that, names
    the files metadata does not list, and spares the ``stat`` of a listed file that is not there.
    """
    out: dict[str, LibraryModel] = {}
    if not root.is_dir():
        return out
    with gc_paused():  # ~10 objects a model, all kept: collections would only walk them again
        for model_id, folder in depth_three(root):
            entries: Mapping[str, os.DirEntry[str]] | None
            try:
                with os.scandir(folder) as it:
                    entries = {e.name: e for e in it}
            except OSError:  # searchable but not listable: ask for the files by name
                entries = None
                if not os.path.isfile(folder + os.sep + METADATA_FILE):
                    continue
            else:
                meta_entry = entries.get(METADATA_FILE)
                if meta_entry is None or not _is(meta_entry.is_file):
                    continue  # not a model folder
            out[model_id] = _library_model(model_id, folder, entries)
    return out


def _library_model(
    model_id: str, folder: str, entries: Mapping[str, os.DirEntry[str]] | None
) -> LibraryModel:
    """One model folder; ``entries`` is its listing, or None when it cannot be listed."""
    text = _read(folder + os.sep + METADATA_FILE)  # a regular file: the caller checked
    overrides_entry = None if entries is None else entries.get(OVERRIDES_FILE)
    overrides = None
    if entries is None or (overrides_entry is not None and _is(overrides_entry.is_file)):
        overrides = _read(folder + os.sep + OVERRIDES_FILE)
    meta: Metadata | None = None
    error: str | None = None
    if text is None:
        error = "metadata.json is unreadable"
    else:
        try:
            meta = metadata_from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            error = f"metadata.json is not valid JSON (line {exc.lineno}: {exc.msg})"
        except Malformed:
            error = "metadata.json does not match the metadata schema"
        except (ValueError, RecursionError):  # nested too deeply, or a 4300-digit number
            error = "metadata.json is not valid JSON (too deeply nested, or a huge number)"
        if meta is not None and meta.id != model_id:
            error = f"metadata.json says id '{meta.id}' but the folder is '{model_id}'"
    present: list[tuple[str, FileStat]] = []
    listed: set[str] = {METADATA_FILE, OVERRIDES_FILE}
    if meta is not None:
        for entry in meta.files:
            path = entry.path
            listed.add(path)
            if entries is not None and "/" not in path and path not in entries:
                continue  # not in the folder: a stat would only fail
            try:
                st = os.stat(os.path.join(folder, path), follow_symlinks=False)
            except OSError:
                continue
            if stat_mod.S_ISREG(st.st_mode):
                present.append((path, FileStat.of(st)))
    extra: tuple[tuple[str, int], ...] = ()
    subdirs: list[str] = []
    if entries is None:
        pass  # nothing to name: the folder cannot be listed
    elif not entries.keys() <= listed or any(_is(e.is_dir) for e in entries.values()):
        files: list[str] = []
        _scan_entries(list(entries.values()), "", files, subdirs)
        extra = tuple((p, _size(os.path.join(folder, p))) for p in sorted(files) if p not in listed)
    return LibraryModel(
        model_id,
        folder,
        meta,
        text,
        overrides,
        error,
        tuple(present),
        extra,
        tuple(sorted(subdirs)),
    )


def _walk_files(folder: str, subdirs: list[str] | None = None) -> list[str]:
    """Relative paths of the files under ``folder`` (symlinks are not followed).

    What ``os.walk`` names, without its overhead: every entry that is not a folder (a symlink
    counts as what it points to), skipping names that start with ``.``, in this folder and in its
    real subfolders whose names do not start with ``.`` (only bundles have them); those
    subfolders are added to ``subdirs`` when it is given.
    """
    found: list[str] = []
    _scan(folder, "", found, subdirs)
    return found


def _scan(folder: str, prefix: str, found: list[str], subdirs: list[str] | None) -> None:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return
    _scan_entries(entries, prefix, found, subdirs)


def _scan_entries(
    entries: list[os.DirEntry[str]], prefix: str, found: list[str], subdirs: list[str] | None
) -> None:
    for e in entries:
        name = e.name
        if not _is(e.is_dir):
            if not name.startswith("."):
                found.append(prefix + name)
        elif not name.startswith(".") and not _is(e.is_symlink):
            if subdirs is not None:
                subdirs.append(prefix + name)
            _scan(e.path, f"{prefix}{name}/", found, subdirs)


def _is(test: Callable[[], bool]) -> bool:
    """A ``DirEntry`` test, with errors as False (as ``os.path.isfile``, ``os.walk`` take them)."""
    try:
        return test()
    except OSError:
        return False


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return -1


_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO put there since the listing must not hang the plan
)
_CHUNK = 1 << 16


def _read(path: str) -> str | None:
    """The text of a file the folder listing says is a regular one, as ``open(path).read()``
    gives it (newlines included), or None when it cannot be read or is not UTF-8.

    One ``open``, one ``read`` and one ``close`` for a file under 64 KiB: a short read of a
    regular file is its end, so neither a ``fstat`` nor a last empty ``read`` is needed.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    if "\r" in text:  # universal newlines, as text mode reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def observe_source(path: str) -> SourceFacts:
    """A local source: a file, or a folder whose files keep their relative paths."""
    facts = _observe_source(path)
    if os.path.islink(path) and facts.error is None:
        facts = replace(facts, link=True)
    return facts


def _observe_source(path: str) -> SourceFacts:
    try:
        st = os.stat(path)  # follows symlinks: a user may point at a link to the real file
    except FileNotFoundError:
        if os.path.islink(path):
            return SourceFacts(path, error="is a broken symlink")
        return SourceFacts(path, error="does not exist")
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return SourceFacts(path, error="is a symlink loop")
        return SourceFacts(path, error=f"cannot be read ({exc.strerror})")
    if stat_mod.S_ISREG(st.st_mode):
        if not os.access(path, os.R_OK):
            return SourceFacts(path, error="is not readable (check its permissions)")
        return SourceFacts(path, ((os.path.basename(path), FileStat.of(st)),))
    if stat_mod.S_ISDIR(st.st_mode):
        files: list[tuple[str, FileStat]] = []
        for rel in sorted(_walk_files(path)):
            try:
                files.append((rel, FileStat.of(os.stat(os.path.join(path, rel)))))
            except OSError as exc:
                return SourceFacts(
                    path, is_dir=True, error=f"{rel} cannot be read ({exc.strerror})"
                )
        if not files:
            return SourceFacts(path, is_dir=True, error="is an empty folder")
        return SourceFacts(path, tuple(files), is_dir=True)
    return SourceFacts(path, error="is not a regular file or folder")


def observe_paths(paths: Iterable[str]) -> dict[str, PathFacts]:
    """What stands at each path (lstat; for symlinks, where they point and if that exists)."""
    return {p: observe_path(p) for p in paths}


def observe_path(path: str) -> PathFacts:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return PathFacts(path, PathKind.MISSING)
    except NotADirectoryError:
        return PathFacts(path, PathKind.OTHER)
    if stat_mod.S_ISLNK(st.st_mode):
        text = os.readlink(path)
        points_to = os.path.normpath(os.path.join(os.path.dirname(path), text))
        return PathFacts(
            path, PathKind.SYMLINK, points_to, os.path.exists(path), st.st_ino, st.st_dev
        )
    kind = (
        PathKind.FILE
        if stat_mod.S_ISREG(st.st_mode)
        else PathKind.DIR
        if stat_mod.S_ISDIR(st.st_mode)
        else PathKind.OTHER
    )
    return PathFacts(path, kind, None, True, st.st_ino, st.st_dev, st.st_nlink)


def symlinks_under(folder: Path, depth: int = 3) -> list[str]:
    """Every symlink under ``folder`` (up to ``depth`` levels), sorted, without reading them.

    :func:`symlinks_into` is these, kept when they point into the library; a caller that
    :func:`observe_path`s them anyway can filter on :attr:`PathFacts.points_to` instead of reading
    each link twice.
    """
    return _app_tree(folder, depth)[0]


def _app_tree(folder: Path, depth: int) -> tuple[list[str], list[str]]:
    """The symlinks under ``folder`` (sorted) and the folders listed to find them (real folders
    down to ``depth`` levels, ``folder`` itself first when it is one)."""
    found: list[str] = []
    listed: list[str] = []

    def scan(path: str, level: int) -> None:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            return
        listed.append(path)
        for e in entries:
            if e.is_symlink():
                found.append(e.path)
            elif level < depth and e.is_dir(follow_symlinks=False):
                scan(e.path, level + 1)

    if folder.is_dir():
        scan(str(folder), 1)
    return sorted(found), listed


def points_into(facts: PathFacts, library: Path) -> bool:
    """Whether ``facts`` are of a symlink that points into ``library`` (as :func:`symlinks_into`
    judges it)."""
    if facts.kind is not PathKind.SYMLINK or facts.points_to is None:
        return False
    return (facts.points_to + os.sep).startswith(os.path.normpath(library) + os.sep)


def symlinks_into(folder: Path, library: Path, depth: int = 3) -> list[str]:
    """Symlinks under ``folder`` (up to ``depth`` levels) that point into ``library``.

    Found so the plan can offer to remove links into the library that are no longer wanted even
    when the registry lost them; symlinked folders are never descended into.
    """
    return [p for p in symlinks_under(folder, depth) if points_into(observe_path(p), library)]


#: The section of extra_model_paths.yaml that is mlib's (``link: config``).
CONFIG_SECTION = "mlib"


def observe_config(path: Path) -> ConfigFacts:
    """ComfyUI's extra_model_paths.yaml at ``path``: mlib's section, as ComfyUI would read it
    (``yaml.safe_load``; every value a string)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ConfigFacts(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        return ConfigFacts(str(path), True, error=f"cannot be read ({exc})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return ConfigFacts(str(path), True, error=f"is not valid YAML{where}")
    if data is None:
        return ConfigFacts(str(path), True)
    if not isinstance(data, dict):
        return ConfigFacts(str(path), True, error="is not a mapping of sections")
    section = data.get(CONFIG_SECTION)
    if section is None:
        return ConfigFacts(str(path), True)
    if not isinstance(section, dict):
        return ConfigFacts(
            str(path), True, error=f"its '{CONFIG_SECTION}' section is not a mapping"
        )
    return ConfigFacts(str(path), True, tuple((str(k), str(v)) for k, v in section.items()))


def staging_leftovers(root: Path) -> list[str]:
    """Folders left in ``.mlib/staging`` by an interrupted apply (mlib's own, safe to clear),
    and the files in ``.mlib/staging/partial`` (the planner keeps those its downloads resume)."""
    staging = root / STAGING
    try:
        found = [str(p) for p in staging.iterdir() if p.name != PARTIAL_NAME]
    except OSError:
        return []
    with contextlib.suppress(OSError):
        found += [str(p) for p in (staging / PARTIAL_NAME).iterdir()]
    return sorted(found)


# --- probes: the paths whose stat fixes what was observed (see reconciler.stamps) --------------
#
# Each function below names, for facts observed above, the paths to ``lstat`` and to ``stat``
# (through symlinks) whose stamps, unchanged, prove the same facts would be observed again. They
# mirror the observers line by line; a test changes each kind of fact and checks the stamp sees it.


def library_probes(root: Path, library: Mapping[str, LibraryModel]) -> tuple[set[str], set[str]]:
    """For :func:`observe_library`: the folders walked below the root (whose own subfolder names
    are probed as a listing: see :class:`~reconciler.stamps.Probes`), and per model its folder
    and subfolders listed, metadata.json and overrides.json (read through symlinks), and each
    file listed in metadata or found beside it."""
    lstat: set[str] = set()
    stat: set[str] = set()
    for _, type_path in _subdirs(str(root)):
        lstat.add(type_path)
        for _, family_path in _subdirs(type_path):
            lstat.add(family_path)
            lstat.update(folder for _, folder in _subdirs(family_path))
    for m in library.values():
        folder = m.folder + os.sep
        stat.add(folder + METADATA_FILE)
        stat.add(folder + OVERRIDES_FILE)
        if m.metadata is not None:
            lstat.update(folder + f.path for f in m.metadata.files)
        lstat.update(folder + path for path, _ in m.extra)
        lstat.update(folder + path for path in m.subdirs)
    return lstat, stat


def library_targets(library: Mapping[str, LibraryModel]) -> set[str]:
    """Paths in the library that are real files or folders, as observed: a link pointing at one
    of them exists exactly as long as that path's stamp says so."""
    out: set[str] = set()
    for m in library.values():
        folder = m.folder + os.sep
        out.add(m.folder)
        out.update(folder + path for path, _ in m.present)
        out.update(folder + path for path in m.subdirs)
    return out


def link_probes(
    app_dirs: Iterable[Path], facts: Mapping[str, PathFacts], targets: Collection[str]
) -> tuple[set[str], set[str]]:
    """For :func:`symlinks_under` of each app folder and :func:`observe_path` of each path in
    ``facts``: the folders listed, the folder holding each path (through symlinks: it fixes which
    entry the path names), and the entry itself when it is a file or folder (its link count can
    change). A symlink's own target is fixed by its folder; whether the target exists, by the
    target's stamp when it is one of ``targets`` (from :func:`library_targets`) reached without
    passing through a symlinked folder, else by a ``stat`` through the link."""
    lstat: set[str] = set()
    stat: set[str] = set()
    for folder in app_dirs:
        stat.add(str(folder))
        lstat.update(_app_tree(folder, 3)[1])
    real: dict[str, bool] = {}
    for path, f in facts.items():
        parent = os.path.dirname(path)
        stat.add(parent)
        if f.kind is PathKind.SYMLINK:
            if parent not in real:
                real[parent] = os.path.realpath(parent) == parent
            if not (real[parent] and f.points_to in targets):
                stat.add(path)
        elif f.kind is not PathKind.MISSING:
            lstat.add(path)
    return lstat, stat


def source_probes(sources: Iterable[SourceFacts]) -> tuple[set[str], set[str]]:
    """For :func:`observe_source`: the source itself (and the link, when it is one), and for a
    folder, the folders walked and each file (through symlinks, as they are read)."""
    lstat: set[str] = set()
    stat: set[str] = set()
    for s in sources:
        lstat.add(s.path)
        stat.add(s.path)
        if s.is_dir:
            subdirs: list[str] = []
            base = s.path + os.sep
            stat.update(base + rel for rel in _walk_files(s.path, subdirs))
            lstat.update(base + rel for rel in subdirs)
    return lstat, stat
