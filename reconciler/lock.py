"""One ``apply`` at a time per library: an exclusive ``flock`` on ``<root>/.mlib/lock`` (layer L3).

The kernel drops the lock when the holder dies, so a killed apply never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import LockTimeoutError

log = logging.getLogger(__name__)

LOCK_FILE = ".mlib/lock"


@contextmanager
def library_lock(root: Path, timeout: float) -> Iterator[None]:
    """Hold the library's lock; wait up to ``timeout`` seconds for another holder to finish."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise LockTimeoutError(
                        f"{path}: another mlib apply{holder} holds the library lock; waited "
                        f"{timeout:g} s (let it finish, or raise --lock-timeout)"
                    ) from None
                if not waited:
                    log.warning("waiting for another mlib apply to release %s", path)
                    waited = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
