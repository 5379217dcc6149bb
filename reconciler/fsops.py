"""File operations with effects. Every write is temp-then-rename in the target's own folder.

A reader never sees a half-written file: data goes to a hidden temp file beside the target, is
flushed and fsynced, then renamed over the target, and the folder entry is fsynced too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from pathlib import Path

from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    dumps,
    metadata_to_dict,
    overrides_to_dict,
)
from reconciler.model import Metadata, Overrides

log = logging.getLogger(__name__)

#: Files are created readable by everyone the library folder allows (umask still applies).
FILE_MODE = 0o644


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def fsync_dir(folder: Path) -> None:
    """Make a rename or create inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


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
