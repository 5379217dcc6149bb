"""CPU-bound work over many small files, split between forked worker processes.

Reading 100k metadata files or ``stat``-ing 400k paths is Python work between short system
calls: threads would only take turns holding the GIL. On Linux, :func:`map_chunks` forks a few
workers that inherit everything they need (nothing is pickled on the way in), each computes the
task for its share of the chunks and sends back the results as :mod:`marshal` data, which the
caller takes in order. A chunk whose worker failed comes back as ``None``: the caller computes it
itself, so a worker can only cost time, never change a result.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import marshal
import os
import signal
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import suppress
from typing import Any, NoReturn, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")

#: Most workers ever forked (the machines this runs on rarely give more to one command).
MAX_WORKERS = 4


def workers_for(chunks: int, *, min_chunks: int = 4) -> int:
    """How many workers to fork for ``chunks`` chunks of work (0: do it all in this process).

    None below ``min_chunks`` chunks (forking costs more than it saves), on one core, off Linux
    (no cheap ``fork``), or while another thread runs (a lock it holds would stay locked in the
    child).
    """
    if chunks < min_chunks or not sys.platform.startswith("linux"):
        return 0
    if threading.active_count() > 1:
        return 0
    cores = len(os.sched_getaffinity(0))
    return 0 if cores < 2 else min(cores, chunks, MAX_WORKERS)


def map_chunks(
    chunks: Sequence[C], task: Callable[[C], Any], workers: int
) -> Generator[Any, None, None]:
    """``task(chunk)`` for each chunk in order, computed by ``workers`` forked processes; ``None``
    for a chunk whose worker did not deliver it. ``task`` must return :mod:`marshal`-able data.

    Worker ``w`` takes chunks ``w``, ``w + n``, ``w + 2n``... Stopping the iteration early stops
    the workers.
    """
    pool = _Pool(chunks, task, workers) if workers else None
    try:
        for i in range(len(chunks)):
            yield pool.result(i) if pool is not None else None
    finally:
        if pool is not None:
            pool.stop()


class _Pool:
    """Forked workers; each writes each result to its pipe as an 8-byte length and a dump."""

    def __init__(self, chunks: Sequence[C], task: Callable[[C], Any], n: int) -> None:
        self.pipes: list[int | None] = []
        self.pids: list[int] = []
        for w in range(n):
            read_end, write_end = os.pipe()
            with suppress(OSError, AttributeError):  # Linux; a bigger pipe stalls workers less
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
            try:
                pid = os.fork()
            except OSError:
                os.close(read_end)
                os.close(write_end)
                break
            if pid == 0:  # the worker: never returns
                for fd in (read_end, *(p for p in self.pipes if p is not None)):
                    os.close(fd)
                _work(chunks[w::n], task, write_end)
            os.close(write_end)
            self.pipes.append(read_end)
            self.pids.append(pid)
        self.n = n

    def result(self, i: int) -> Any:
        w = i % self.n
        fd = self.pipes[w] if w < len(self.pipes) else None
        if fd is None:
            return None
        head = _read_exactly(fd, 8)
        data = _read_exactly(fd, int.from_bytes(head, "little")) if head is not None else None
        if data is None:
            log.debug("worker %d failed: its chunks are computed here", self.pids[w])
            os.close(fd)
            self.pipes[w] = None
            return None
        return marshal.loads(data)

    def stop(self) -> None:
        for fd in self.pipes:
            if fd is not None:
                os.close(fd)  # a worker still writing gets EPIPE and ends
        for pid in self.pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pipes = []
        self.pids = []


def _work(chunks: Sequence[C], task: Callable[[C], Any], fd: int) -> NoReturn:
    """The body of a worker process: compute ``chunks``, write the results to ``fd``, exit."""
    status = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):  # not the handlers of whoever forked us
            signal.signal(signum, signal.SIG_DFL)
        gc.disable()
        for chunk in chunks:
            data = marshal.dumps(task(chunk))
            _write_all(fd, len(data).to_bytes(8, "little"))
            _write_all(fd, data)
        status = 0
    except BaseException:
        pass  # the parent sees the pipe end early and computes the chunks left itself
    finally:
        os._exit(status)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """``size`` bytes from ``fd``; ``None`` if it ends first."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return None
        got += n
    return buf
