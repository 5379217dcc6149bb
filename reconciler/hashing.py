"""sha256 and blake3 of a file from one read, optionally copying it on the way.

Every byte is read from disk once, into a small pool of reusable buffers. The calling thread reads,
feeds blake3 and (when copying) writes; sha256, the slowest of the three by far (~2 GB/s with
SHA-NI against ~6 GB/s for single-threaded blake3 here), runs on a worker thread fed the same
buffers. hashlib and blake3 release the GIL on large updates, so the two hashes overlap and the
whole pass costs about as much as sha256 alone. A buffer goes back to the pool only once the worker
has hashed it, so the reader never overwrites bytes the worker has yet to see.

blake3 is kept single-threaded on purpose: sha256 bounds the pass, and extra blake3 threads only
compete with it for the cores (measured in ``benchmarks/import_bench.py``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import blake3

from reconciler.errors import FileChangedError

#: Size of one read. 1-4 MiB read at page-cache speed; larger buffers were slower cold.
BUFFER_SIZE = 1 << 20
#: Buffers in flight between the reader and the sha256 worker.
POOL_SIZE = 4
#: While copying, ask the kernel to start writing back every this many bytes, so the final fsync
#: has little left to wait for (the disk works while the CPU hashes).
WRITEBACK_EVERY = 8 << 20
#: Mode of a copied file before the umask (which ``os.open`` applies).
FILE_MODE = 0o644

_SYNC_FILE_RANGE_WRITE = 2  # from <linux/fs.h>

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FileHashes:
    """Size in bytes and lowercase hex digests of one file's content."""

    size: int
    sha256: str
    blake3: str


def hash_file(path: Path, progress: Progress | None = None) -> FileHashes:
    """Hash ``path`` with sha256 and blake3 in one read.

    ``progress`` is called on the calling thread with the number of bytes just read (the calls add
    up to the size). Raises :class:`FileChangedError` when the file changes while it is read, and
    ``OSError`` as it comes.
    """
    with _open_source(path) as (reader, before):
        size, sha256, b3 = _pump(reader, before.st_size, None, progress)
        _check_unchanged(path, reader, before, size)
    return FileHashes(size, sha256, b3)


def copy_and_hash(src: Path, dest: Path, progress: Progress | None = None) -> FileHashes:
    """Copy ``src`` to the new file ``dest`` and hash the bytes on the way, reading them once.

    ``dest`` must not exist (the caller passes a temp path and renames it into place). Only the
    content is copied; ``dest`` gets mode 0o644 minus the umask and is fsynced before this returns.
    On any error ``dest`` is removed and the error is raised: ``OSError`` as it comes, or
    :class:`FileChangedError` when ``src`` changes during the copy. ``progress`` is called with the
    number of bytes just written.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with _open_source(src) as (reader, before):
        out = os.open(dest, flags, FILE_MODE)
        try:
            sink = _Writer(out)
            size, sha256, b3 = _pump(reader, before.st_size, sink.write, progress)
            _check_unchanged(src, reader, before, size)
            os.fsync(out)
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(dest)
            raise
        os.close(out)
    return FileHashes(size, sha256, b3)


# --- the read loop ---------------------------------------------------------------------------


def _pump(
    reader: io.FileIO,
    expected: int,
    sink: Callable[[memoryview], None] | None,
    progress: Progress | None,
) -> tuple[int, str, str]:
    """Read ``reader`` to the end once; return (bytes read, sha256 hex, blake3 hex)."""
    b3 = blake3.blake3()
    total = 0
    # A file that fits one buffer is hashed inline: a thread would cost more than it saves.
    threaded = expected > BUFFER_SIZE
    with _Sha256Worker(BUFFER_SIZE if threaded else expected + 1, threaded) as sha:
        while True:
            buf = sha.take()
            n = reader.readinto(buf)
            if not n:
                break
            total += n
            if total > expected:  # growing (being written, or not a regular file after all)
                raise FileChangedError(
                    f"{reader.name} grew while it was read (more than the {expected} bytes it "
                    "had at the start); wait until whatever writes it has finished, then retry"
                )
            sha.submit(buf, n)
            view = memoryview(buf)[:n]
            if sink is not None:
                sink(view)
            b3.update(view)
            if progress is not None:
                progress(n)
        return total, sha.hexdigest(), b3.hexdigest()


class _Sha256Worker:
    """sha256 over buffers from a fixed pool, on a worker thread (or inline when not threaded).

    ``take`` hands out a free buffer, waiting while all are queued; ``submit`` queues a filled one;
    the worker returns a buffer to the pool only after hashing it.
    """

    def __init__(self, buffer_size: int, threaded: bool) -> None:
        self._sha = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        for _ in range(POOL_SIZE if threaded else 1):
            self._free.put(bytearray(buffer_size))
        if threaded:
            self._thread = threading.Thread(target=self._run, name="mlib-sha256", daemon=True)
            self._thread.start()

    def __enter__(self) -> _Sha256Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def take(self) -> bytearray:
        buf = self._free.get()
        if self._error is not None:
            raise self._error
        return buf

    def submit(self, buf: bytearray, n: int) -> None:
        if self._thread is None:
            self._sha.update(memoryview(buf)[:n])
            self._free.put(buf)
        else:
            self._todo.put((buf, n))

    def hexdigest(self) -> str:
        """Wait for the queued buffers to be hashed; the digest of everything submitted."""
        self._stop()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()

    def _stop(self) -> None:
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, n = item
            if self._error is None:
                try:
                    self._sha.update(memoryview(buf)[:n])
                except BaseException as exc:  # pragma: no cover - e.g. MemoryError
                    self._error = exc
            self._free.put(buf)  # always: the reader may be waiting for it


class _Writer:
    """Writes whole buffers to ``fd`` and keeps the kernel writing back behind us."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = 0
        self._flushed = 0
        self._start_writeback = _writeback_starter()

    def write(self, view: memoryview) -> None:
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
            self._written += done
        if self._start_writeback is not None and self._written - self._flushed >= WRITEBACK_EVERY:
            self._start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written


@functools.cache
def _writeback_starter() -> Callable[[int, int, int], None] | None:
    """Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: start writeback without waiting for it.

    Without it every dirty page waits for the final fsync (measured: ~0.9 s instead of ~0.65 s
    for a 1 GiB copy here). Elsewhere ``None``: the fsync at the end does all the work.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # only here: the single foreign call in the package

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - libc without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: its result does not matter

    return start


# --- opening and change detection ------------------------------------------------------------


@contextlib.contextmanager
def _open_source(path: Path) -> Iterator[tuple[io.FileIO, os.stat_result]]:
    with io.FileIO(path, "rb", opener=_open_nonblocking) as reader:
        before = os.fstat(reader.fileno())
        if stat.S_ISDIR(before.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        yield reader, before


def _open_nonblocking(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO must not hang; it is refused like any non-regular file. It changes
    # nothing for regular files.
    return os.open(path, flags | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))


def _check_unchanged(path: Path, reader: io.FileIO, before: os.stat_result, size: int) -> None:
    after = os.fstat(reader.fileno())
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    what = None
    if size != before.st_size or after.st_size != before.st_size:
        what = f"its size went from {before.st_size} to {after.st_size} bytes"
    elif after.st_mtime_ns != before.st_mtime_ns:
        what = "it was modified"
    elif now is None or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
        what = "it was replaced or removed"
    if what is not None:
        raise FileChangedError(
            f"{path} changed while it was read ({what}); wait until whatever writes it has "
            "finished, then retry"
        )
