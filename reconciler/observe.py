"""Observe the disk as frozen facts: library models, sources, link paths, app folders.

Reads only (layer L2). Nothing here hashes a file: sizes, mtimes and inodes come from ``stat``;
hashes come from metadata, from the stat cache in models.db, or are computed at import/verify.
"""

from __future__ import annotations

import json
import os
import stat as stat_mod
from collections.abc import Iterable
from pathlib import Path

from reconciler.facts import FileStat, LibraryModel, PathFacts, PathKind, SourceFacts
from reconciler.library import model_dirs
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    Malformed,
    metadata_from_dict,
)
from reconciler.model import Metadata

STAGING = ".mlib/staging"
TRASH = ".mlib/trash"


def observe_library(root: Path) -> dict[str, LibraryModel]:
    """Every model folder under ``root``: metadata parsed, listed files stat'ed, extras named."""
    out: dict[str, LibraryModel] = {}
    if not root.is_dir():
        return out
    for model_id, folder in model_dirs(root):
        out[model_id] = _library_model(model_id, folder)
    return out


def _library_model(model_id: str, folder: str) -> LibraryModel:
    text = _read(os.path.join(folder, METADATA_FILE))
    overrides = _read(os.path.join(folder, OVERRIDES_FILE))
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
        if meta is not None and meta.id != model_id:
            error = f"metadata.json says id '{meta.id}' but the folder is '{model_id}'"
    present: list[tuple[str, FileStat]] = []
    listed: set[str] = {METADATA_FILE, OVERRIDES_FILE}
    if meta is not None:
        for entry in meta.files:
            listed.add(entry.path)
            try:
                st = os.stat(os.path.join(folder, entry.path), follow_symlinks=False)
            except OSError:
                continue
            if stat_mod.S_ISREG(st.st_mode):
                present.append((entry.path, FileStat.of(st)))
    extra = tuple(
        (p, _size(os.path.join(folder, p))) for p in sorted(_walk_files(folder)) if p not in listed
    )
    return LibraryModel(model_id, folder, meta, text, overrides, error, tuple(present), extra)


def _walk_files(folder: str) -> list[str]:
    """Relative paths of the regular files under ``folder`` (symlinks are not followed)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if name.startswith("."):
                continue
            found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return found


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return -1


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def observe_source(path: str) -> SourceFacts:
    """A local source: a file, or a folder whose files keep their relative paths."""
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


def symlinks_into(folder: Path, library: Path, depth: int = 3) -> list[str]:
    """Symlinks under ``folder`` (up to ``depth`` levels) that point into ``library``.

    Found so the plan can offer to remove links into the library that are no longer wanted even
    when the registry lost them; symlinked folders are never descended into.
    """
    found: list[str] = []
    lib = os.path.normpath(library) + os.sep

    def scan(path: str, level: int) -> None:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            return
        for e in entries:
            if e.is_symlink():
                target = os.path.normpath(os.path.join(path, os.readlink(e.path)))
                if (target + os.sep).startswith(lib):
                    found.append(e.path)
            elif level < depth and e.is_dir(follow_symlinks=False):
                scan(e.path, level + 1)

    if folder.is_dir():
        scan(str(folder), 1)
    return sorted(found)


def staging_leftovers(root: Path) -> list[str]:
    """Folders left in ``.mlib/staging`` by an interrupted apply (mlib's own, safe to clear)."""
    staging = root / STAGING
    try:
        return sorted(str(p) for p in staging.iterdir())
    except OSError:
        return []
