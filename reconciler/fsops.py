"""File operations with effects. Every write is temp-then-rename in the target's own folder.

A reader never sees a half-written file: data goes to a hidden temp file beside the target, is
flushed and fsynced, then renamed over the target, and the folder entry is fsynced too.

Links into app folders (``make_link``, ``replace_link``, ``remove_link``) never replace or remove
anything mlib cannot prove it made; the planner decides, these functions refuse what it did not.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import functools
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path

# fsync_dir is re-exported: the executor calls fsops.fsync_dir
from reconciler.durable import fsync_dir as fsync_dir
from reconciler.errors import LinkLoopError, ReconcilerError
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    dumps,
    metadata_to_dict,
    overrides_to_dict,
)
from reconciler.model import LinkMode, Metadata, Overrides

log = logging.getLogger(__name__)

#: Files are created readable by everyone the library folder allows (umask still applies).
FILE_MODE = 0o644


def atomic_write(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content.

    The temporary file is made in ``tmp_dir`` when given and on the same filesystem as ``path``
    (the library's staging folder: a crash leaves it there, where the next apply clears it,
    not beside ``path`` for ever), else beside ``path``.
    """
    folder = path.parent
    if tmp_dir is not None and tmp_dir.is_dir() and same_filesystem(tmp_dir, folder):
        folder = tmp_dir
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    log.debug("wrote %s (%d bytes)", path, len(data))


def write_metadata(model_dir: Path, meta: Metadata) -> None:
    atomic_write(model_dir / METADATA_FILE, dumps(metadata_to_dict(meta)))


def write_overrides(model_dir: Path, overrides: Overrides) -> None:
    atomic_write(model_dir / OVERRIDES_FILE, dumps(overrides_to_dict(overrides)))


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; do it once, early, and put it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- links into app folders ------------------------------------------------------------------

#: Errors that mean "this filesystem (or OS, or user) cannot make that kind of link here": ``auto``
#: then tries the next kind. Anything else (the link exists, the target is missing, no permission
#: to write the folder) is raised at once.
_FALLBACK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
)
_ERROR_PRIVILEGE_NOT_HELD = 1314  # Windows: symlinks need developer mode or admin rights
_DIR_MODE = 0o755


def make_link(target: Path, link: Path, mode: str) -> str:
    """Make ``link`` show ``target`` (a file or a folder); return the kind made.

    ``mode`` is a :class:`~reconciler.model.LinkMode` value: ``symlink`` (relative when target and
    link are on one filesystem, absolute otherwise), ``hardlink`` (files only, one filesystem),
    ``copy`` (copied beside the link under a temp name, then renamed into place) or ``auto``
    (symlink, else hardlink, else copy, when the filesystem refuses the former). Returns
    ``"symlink"``, ``"hardlink"`` or ``"copy"``. Creates the link's parent folders.

    Raises ``FileExistsError`` when anything is at ``link`` (left untouched: the planner decides),
    :class:`LinkLoopError` for a folder link inside the folder it shows, ``OSError`` as it comes.
    """
    kind = LinkMode(mode)
    is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    if os.path.lexists(link):
        raise _exists(link)
    _check_no_loop(target, link, is_dir)
    link.parent.mkdir(parents=True, exist_ok=True)
    made = _create(target, link, kind, is_dir)
    fsync_dir(link.parent)
    log.debug("%s %s -> %s", made, link, target)
    return made


def replace_link(target: Path, link: Path, mode: str, expected_old_target: Path | None) -> str:
    """Point the symlink ``link`` at ``target`` instead, atomically; return the kind made.

    Only a symlink is replaced, and only while it points to ``expected_old_target`` (when given;
    ``None`` means the caller's registry already vouches for it). The new link is made beside it
    under a temp name (same rules as :func:`make_link`) and renamed over it, so apps see the old
    or the new link, never none. One exception: a folder *copy* cannot be renamed over a symlink,
    so then the old link is removed just before the copy is renamed into place.
    """
    kind = LinkMode(mode)
    if not stat.S_ISLNK(os.lstat(link).st_mode):
        raise ReconcilerError(
            f"{link} is not a symlink; mlib only replaces symlinks it made (run plan again)"
        )
    if expected_old_target is not None and not _points_to(link, expected_old_target):
        raise ReconcilerError(
            f"{link} points to {readlink_target(link)}, not {expected_old_target}; it changed "
            "since the plan was made (run plan again)"
        )
    is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    _check_no_loop(target, link, is_dir)
    _remove_stale_temps(link)
    temp = link.parent / f"{_temp_prefix(link)}{secrets.token_hex(4)}.tmp"
    made = _create(target, temp, kind, is_dir)
    try:
        if made == "copy" and is_dir:
            os.unlink(link)
            os.rename(temp, link)
        else:
            os.replace(temp, link)
    except BaseException:
        _remove_made(temp)
        raise
    fsync_dir(link.parent)
    log.debug("%s %s -> %s (replaced)", made, link, target)
    return made


def remove_link(link: Path, expected_target: Path | None, mode: str) -> None:
    """Remove ``link`` if it is provably the link mlib made; raise otherwise, touching nothing.

    - a symlink (``mode`` symlink or auto): only when it points to ``expected_target`` (if given);
    - a hardlinked file (``mode`` hardlink or auto): only when it is the same inode as
      ``expected_target``;
    - a copied file or folder: only when ``mode`` is copy (the caller has checked its registry).
    """
    kind = LinkMode(mode)
    st = os.lstat(link)
    if expected_target is not None and _same_entry(link, expected_target):
        raise _not_ours(link, "it is the target itself, not a link to it")
    if stat.S_ISLNK(st.st_mode):
        if kind not in (LinkMode.SYMLINK, LinkMode.AUTO):
            raise _not_ours(link, f"it is a symlink, but mlib made a {kind.value} there")
        if expected_target is not None and not _points_to(link, expected_target):
            raise _not_ours(link, f"it points to {readlink_target(link)}, not {expected_target}")
        os.unlink(link)
    elif stat.S_ISREG(st.st_mode):
        copied = kind is LinkMode.COPY
        hardlinked = kind in (LinkMode.HARDLINK, LinkMode.AUTO) and _same_inode(st, expected_target)
        if not (copied or hardlinked):
            raise _not_ours(link, f"it is a file that is not a hardlink of {expected_target}")
        if not hardlinked and not _same_content(link, expected_target):
            raise _not_ours(link, f"it is a file that does not hold {expected_target}'s bytes")
        os.unlink(link)
    elif stat.S_ISDIR(st.st_mode):
        if kind is not LinkMode.COPY:
            raise _not_ours(link, f"it is a folder, and mlib made a {kind.value} there")
        if not _same_content(link, expected_target):
            raise _not_ours(link, f"it is a folder that does not hold {expected_target}'s files")
        shutil.rmtree(link)
    else:
        raise _not_ours(link, "it is neither a link, a file nor a folder")
    if kind is LinkMode.COPY:
        _remove_stale_temps(link)
    fsync_dir(link.parent)
    log.debug("removed %s %s", kind.value, link)


def move_to_trash(path: Path, trash_root: Path) -> Path:
    """Rename ``path`` to ``<trash_root>/<UTC timestamp>-<name>`` and return the new path.

    A rename, so ``trash_root`` must be on the same filesystem (``OSError`` EXDEV otherwise);
    nothing is copied or deleted. An existing trash entry is never replaced.
    """
    trash_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = path.name
    while len(f"{stamp}-{name}-999".encode()) > 255:  # stay within NAME_MAX
        name = name[:-1]
    dest = trash_root / f"{stamp}-{name}"
    n = 1
    while os.path.lexists(dest):
        n += 1
        dest = trash_root / f"{stamp}-{name}-{n}"
    os.rename(path, dest)
    fsync_dir(trash_root)
    fsync_dir(path.parent)
    log.info("moved %s to %s", path, dest)
    return dest


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` live on one filesystem (a missing path counts as its nearest
    existing parent folder, so a link that is still to be made can be asked about)."""
    return _device(a) == _device(b)


def readlink_target(link: Path) -> Path:
    """Where the symlink ``link`` points: relative link text joined to the link's folder and
    normalized, without following anything further."""
    text = os.readlink(link)
    return Path(os.path.normpath(os.path.join(os.path.abspath(link.parent), text)))


def _create(target: Path, link: Path, kind: LinkMode, is_dir: bool) -> str:
    """Make ``link`` (absent, parent present) as ``kind``; return the kind made."""
    if kind is LinkMode.SYMLINK:
        _symlink(target, link, is_dir)
        return "symlink"
    if kind is LinkMode.HARDLINK:
        _hardlink(target, link, is_dir)
        return "hardlink"
    if kind is LinkMode.COPY:
        _copy(target, link, is_dir)
        return "copy"
    try:
        _symlink(target, link, is_dir)
        return "symlink"
    except OSError as exc:
        if not _can_fall_back(exc):
            raise
        log.info("cannot symlink %s (%s); trying the next link mode", link, exc.strerror)
    if not is_dir:
        try:
            _hardlink(target, link, is_dir)
            return "hardlink"
        except OSError as exc:
            if not _can_fall_back(exc):
                raise
            log.info("cannot hardlink %s (%s); copying", link, exc.strerror)
    _copy(target, link, is_dir)
    return "copy"


def _symlink(target: Path, link: Path, is_dir: bool) -> None:
    os.symlink(_symlink_text(target, link), link, target_is_directory=is_dir)


def _symlink_text(target: Path, link: Path) -> str:
    """Relative text when both sides share a filesystem and it resolves to ``target`` from the
    link's real folder too (a folder reached through a symlink can make the lexical path wrong);
    otherwise the absolute path."""
    absolute = os.path.normpath(os.path.abspath(target))
    if not same_filesystem(target, link.parent):
        return absolute
    folder = os.path.abspath(link.parent)
    try:
        relative = os.path.relpath(absolute, folder)
    except ValueError:  # pragma: no cover - Windows: another drive
        return absolute
    real = os.path.realpath(os.path.join(os.path.realpath(folder), relative))
    return relative if real == os.path.realpath(absolute) else absolute


def _hardlink(target: Path, link: Path, is_dir: bool) -> None:
    if is_dir:
        raise IsADirectoryError(
            errno.EISDIR,
            "a folder cannot be hardlinked; use link mode symlink or copy",
            str(target),
        )
    os.link(target, link)


def _copy(target: Path, link: Path, is_dir: bool) -> None:
    """Copy ``target`` to a temp name beside ``link``, make it durable, rename it into place."""
    _remove_stale_temps(link)
    if is_dir:
        temp = tempfile.mkdtemp(prefix=_temp_prefix(link), suffix=".tmp", dir=link.parent)
        try:
            shutil.copytree(target, temp, copy_function=_copy_content, dirs_exist_ok=True)
            os.chmod(temp, _DIR_MODE & ~_umask())
            for folder, _, _ in os.walk(temp):  # the files are fsynced; now their entries
                fsync_dir(Path(folder))
            if os.path.lexists(link):
                raise _exists(link)
            os.rename(temp, link)  # fails on anything but an empty folder appearing meanwhile
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return
    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(link), suffix=".tmp", dir=link.parent)
    os.close(fd)
    try:
        _copy_content(str(target), temp)
        _rename_no_replace(Path(temp), link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _copy_content(src: str, dest: str) -> str:
    """Copy a file's bytes (kernel fast path), nothing else; fsync it. A ``copytree`` function."""
    shutil.copyfile(src, dest)
    os.chmod(dest, FILE_MODE & ~_umask())
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dest


def _rename_no_replace(temp: Path, dest: Path) -> None:
    """Rename the file ``temp`` to ``dest`` unless something is there (``FileExistsError``)."""
    try:
        os.link(temp, dest)  # fails with EEXIST rather than replacing: no race with others
    except FileExistsError:
        raise _exists(dest) from None
    except OSError:  # no hardlinks on this filesystem: check, then rename
        if os.path.lexists(dest):
            raise _exists(dest) from None
        os.rename(temp, dest)
    else:
        os.unlink(temp)


def _temp_prefix(link: Path) -> str:
    """Temp names beside a link are ``.NAME.mlib-XXXXXXXX.tmp``: hidden, and plainly mlib's."""
    return f".{link.name}.mlib-"


def _remove_stale_temps(link: Path) -> None:
    """Remove what an interrupted copy or swap of ``link`` left beside it (only mlib's temp names
    for this very link; only one apply runs at a time, so none of them is still in use)."""
    pattern = re.compile(re.escape(_temp_prefix(link)) + r"[a-z0-9_]{8}\.tmp")
    try:
        entries = [e for e in os.scandir(link.parent) if pattern.fullmatch(e.name)]
    except FileNotFoundError:
        return
    for entry in entries:
        log.info("removing %s, left by an interrupted run", entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _remove_made(path: Path) -> None:
    """Undo a just-made temp link or copy."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _check_no_loop(target: Path, link: Path, is_dir: bool) -> None:
    """Refuse a folder link placed inside the folder it shows (or any folder below it)."""
    if not is_dir:
        return
    shown = Path(os.path.realpath(target))
    at = Path(os.path.realpath(link.parent))
    if at == shown or at.is_relative_to(shown):
        raise LinkLoopError(
            f"{link} would be inside {target}, the folder it links to; apps that follow links "
            "(ComfyUI walks them) would loop forever. Put the link outside that folder"
        )


def _points_to(link: Path, expected: Path) -> bool:
    """Whether the symlink ``link`` names ``expected`` (spelled alike, or after resolving the
    folders above both; the final names themselves are not followed)."""
    actual = readlink_target(link)
    wanted = _absolute(expected)
    return actual == wanted or _entry(actual) == _entry(wanted)


def _same_entry(a: Path, b: Path) -> bool:
    return _entry(_absolute(a)) == _entry(_absolute(b))


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _entry(path: Path) -> Path:
    """``path`` (absolute, normalized) with the folders above it resolved, the name itself not."""
    return Path(os.path.realpath(path.parent)) / path.name


def _same_content(copy: Path, original: Path | None) -> bool:
    """Whether ``copy`` (a file, or a folder walked without following links) holds exactly the
    files and bytes of ``original``: a copy is removed only when it is provably the one mlib
    made (the registry alone could be stale, or come from another machine)."""
    if original is None:
        return False
    try:
        if stat.S_ISREG(os.lstat(copy).st_mode):
            return os.path.isfile(original) and filecmp.cmp(copy, original, shallow=False)
        for folder, dirs, files in os.walk(copy):
            rel = os.path.relpath(folder, copy)
            theirs = os.path.join(original, rel)
            if not os.path.isdir(theirs) or set(dirs + files) != set(os.listdir(theirs)):
                return False
            for name in files:
                mine = os.path.join(folder, name)
                if rel == "." and name in (METADATA_FILE, OVERRIDES_FILE):
                    continue  # mlib rewrites these in the library; the copy keeps the old ones
                if os.path.islink(mine) or not filecmp.cmp(
                    mine, os.path.join(theirs, name), shallow=False
                ):
                    return False
            if any(os.path.islink(os.path.join(folder, d)) for d in dirs):
                return False
    except OSError:
        return False
    return True


def _same_inode(st: os.stat_result, other: Path | None) -> bool:
    if other is None:
        return False
    try:
        theirs = os.stat(other)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (theirs.st_dev, theirs.st_ino)


def _device(path: Path) -> int:
    current = Path(os.path.abspath(path))
    while True:
        try:
            return os.stat(current).st_dev
        except FileNotFoundError:
            if current.parent == current:
                raise
            current = current.parent


def _can_fall_back(exc: OSError) -> bool:
    return (
        exc.errno in _FALLBACK_ERRNOS or getattr(exc, "winerror", None) == _ERROR_PRIVILEGE_NOT_HELD
    )


def _exists(link: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST, "something is already there and mlib never replaces it", str(link)
    )


def _not_ours(link: Path, why: str) -> ReconcilerError:
    return ReconcilerError(
        f"refusing to remove {link}: {why}. mlib only removes links it made; "
        "remove it yourself if it should go"
    )
