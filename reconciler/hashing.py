"""sha256 and blake3 of a file from one read, optionally copying it on the way.

Every byte is read from disk once, into a small pool of reusable buffers. The calling thread reads,
feeds blake3 and (when copying) writes; sha256, the slowest of the three by far (~1.8 GB/s with
SHA-NI against ~6 GB/s for single-threaded blake3 on this machine class), runs on a worker thread
fed the same buffers. hashlib and blake3 release the GIL on large updates, so with a second core
free the two hashes overlap and the whole pass costs about as much as sha256 alone. A buffer goes
back to the pool only once the worker has hashed it, so the reader never overwrites bytes the
worker has yet to see.

Measured alternatives (``benchmarks/import_bench.py`` has the baselines): blake3 with
``max_threads=AUTO`` was no faster (sha256 bounds the pass; more blake3 threads only compete with
it), nor were 2 or 4 MiB buffers, nor a third thread for blake3; a shared ``mmap`` instead of
``readinto`` cost the same CPU time (page faults instead of copies) and would turn a file truncated
under us into SIGBUS; ``update_mmap`` beside a ``readinto`` loop reads the file twice and was
slower.

A copy streams its output to disk as it goes (Linux ``sync_file_range``, see ``_Writer``), so the
closing fsync is short and a huge copy does not flood the page cache.
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
from collections import deque
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
#: Pieces a StreamHasher's sha256 worker may lag behind (a download's pieces are <= 1 MiB).
STREAM_QUEUE = 64
#: While copying (Linux), start writing back every this many bytes (see ``_Writer``). With hints
#: alone, 64 MiB beat 8-16 MiB (many small submissions, charged to us) and 256 MiB; streaming
#: was insensitive to 16-128 MiB.
WRITEBACK_EVERY = 64 << 20
#: Chunks under writeback before the copy waits for the oldest and drops it from the page cache.
IN_FLIGHT = 2
#: Mode of a copied file before the umask (which ``os.open`` applies).
FILE_MODE = 0o644

# from <linux/fs.h>
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4
_SYNC_FILE_RANGE_WAIT_ALL = (
    _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
)
#: sync_file_range errors that mean "not here" (old kernels, sandboxes, odd filesystems).
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP})

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
            sink = StreamingWriter(out)
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


class StreamHasher:
    """sha256 and blake3 of bytes that arrive in pieces (a download), from that one pass.

    sha256, the slower of the two, runs on the same worker thread as a copy's
    (:class:`_Sha256Worker`), fed the pieces in order (bytes are immutable: no copy, no pool);
    blake3 runs on the caller's thread. :meth:`result` waits for the worker. Use as a context
    manager, or :meth:`close` it, so the thread ends on errors too.
    """

    def __init__(self) -> None:
        self._b3 = blake3.blake3()
        self._sha = _Sha256Worker(0, threaded=True, pool=False)
        self._size = 0

    def __enter__(self) -> StreamHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """Bytes given so far."""
        return self._size

    def close(self) -> None:
        """End the worker thread (what ``with`` does on the way out)."""
        self._sha.close()

    def update(self, data: bytes) -> None:
        self._size += len(data)
        self._sha.submit(data, len(data))
        self._b3.update(data)

    def result(self) -> FileHashes:
        """Wait for sha256 to catch up; the hashes of everything given."""
        return FileHashes(self._size, self._sha.hexdigest(), self._b3.hexdigest())


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
    """sha256 over buffers, on a worker thread (or inline when not threaded).

    With a ``pool`` (a copy or a hash of a file), ``take`` hands out a free buffer, waiting while
    all are queued; ``submit`` queues a filled one; the worker returns a buffer to the pool only
    after hashing it. Without one (a download's immutable pieces), ``submit`` queues the piece
    itself, waiting while :data:`STREAM_QUEUE` are queued, so a fast network cannot make the queue
    hold a large part of the file.
    """

    def __init__(self, buffer_size: int, threaded: bool, *, pool: bool = True) -> None:
        self._sha = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._todo: queue.Queue[tuple[bytes | bytearray, int] | None] = queue.Queue(STREAM_QUEUE)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        for _ in range((POOL_SIZE if threaded else 1) if pool else 0):
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

    def submit(self, buf: bytes | bytearray, n: int) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._sha.update(memoryview(buf)[:n])
            self._give_back(buf)
        else:
            self._todo.put((buf, n))

    def close(self) -> None:
        self._stop()

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
            self._give_back(buf)  # always: the reader may be waiting for it

    def _give_back(self, buf: bytes | bytearray) -> None:
        if isinstance(buf, bytearray):
            self._free.put(buf)


class StreamingWriter:
    """Writes whole buffers to ``fd``, streaming them to disk on the way where Linux allows.

    Every ``WRITEBACK_EVERY`` bytes it starts writeback of the newest chunk and, with
    ``IN_FLIGHT`` chunks already under way, waits for the oldest and drops it from the page cache.
    So the final fsync has little left to do, the disk works while the CPU hashes, and a 20 GB copy
    holds a few hundred MB of page cache instead of evicting everything else. ``offset`` is where
    the first write lands (the size of a file opened to append to).
    """

    def __init__(self, fd: int, offset: int = 0) -> None:
        self._fd = fd
        self._written = offset
        self._chunk_start = offset
        self._sync_range = _sync_file_range()
        self._in_flight: deque[tuple[int, int]] = deque()

    def write(self, view: memoryview) -> None:
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
            self._written += done
        if self._sync_range is not None and self._written - self._chunk_start >= WRITEBACK_EVERY:
            self._stream()

    def _stream(self) -> None:
        chunk = (self._chunk_start, self._written - self._chunk_start)
        self._chunk_start = self._written
        if not self._sync(*chunk, _SYNC_FILE_RANGE_WRITE):
            return
        self._in_flight.append(chunk)
        if len(self._in_flight) > IN_FLIGHT:
            offset, length = self._in_flight.popleft()
            if self._sync(offset, length, _SYNC_FILE_RANGE_WAIT_ALL):
                with contextlib.suppress(OSError):  # a hint
                    os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)

    def _sync(self, offset: int, length: int, flags: int) -> bool:
        """One ``sync_file_range``; False (and streaming off) where the system lacks it."""
        sync_range = self._sync_range
        if sync_range is None:
            return False
        result = sync_range(self._fd, offset, length, flags)
        if result == 0:
            return True
        if result in _UNSUPPORTED:
            self._sync_range = None
            return False
        # A write error must not be swallowed: once reported here, fsync would not repeat it.
        raise OSError(result, os.strerror(result))


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux ``sync_file_range``, returning 0 or the errno; ``None`` elsewhere.

    Measured with ``benchmarks/import_bench.py`` (row "python copy, no hashing", medians, on a
    loaded 2-core VM): with writeback hints alone, 1 GiB took 0.4-1.8 s and 4 GiB 10.9-11.6 s;
    streaming as ``_Writer`` does, 0.41 s and 2.3 s; ``cp`` + fsync 0.64 s and 3.1 s. Hints alone
    leave every written page cached, and fresh pages are dear in a VM (the host backs them lazily;
    perf put 83% of the time in copying into new page-cache pages): streaming reuses a few
    hundred MB.
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

    def sync_range(fd: int, offset: int, length: int, flags: int) -> int:
        if function(fd, offset, length, flags) == 0:
            return 0
        return ctypes.get_errno() or errno.EIO

    return sync_range


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
