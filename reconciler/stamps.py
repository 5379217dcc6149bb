"""Stamps: what ``stat`` says of a set of paths, as one digest per chunk of paths.

A plan depends on the manifest and on what ``observe`` read from the disk. Each thing it read is
fixed by the ``stat`` of a few paths: a file's text by the file's inode and change time, a
folder's list of names by the folder's, a symlink's target by the folder holding it (a symlink
cannot be changed in place, only replaced). :class:`Probes` are those paths; their stamp taken
again later and found equal means the same facts would be observed, so the same plan made
(:mod:`reconciler.cache` keeps the last plan under its probes this way).

Equal is only proof when the last change to every path came before the first observation: the
kernel stamps change times with a coarse clock (and some filesystems round them to seconds), so a
path changed in the same tick as it was read could change again and keep its stamp. A stamp
therefore also reports the newest change time it saw, and a caller keeps it only when that is
older than the observation by a safe margin (:data:`SETTLED_NS`).
"""

from __future__ import annotations

import hashlib
import marshal
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass

from reconciler.forked import map_chunks, workers_for

#: Paths stamped per chunk: one digest each, one unit of work for a forked worker.
CHUNK = 8192
#: How much older than the first observation the last change of every path must be for a stamp to
#: prove anything: the kernel's coarse clock lags by a tick (~4 ms) and FAT rounds to 2 s.
SETTLED_NS = 2_000_000_000


@dataclass(frozen=True)
class Probes:
    """Paths to ``lstat`` (the entry itself) and to ``stat`` (through symlinks), in chunks; and
    folders whose subfolder names are what matters, not their stat (the library's root: SQLite
    adds and removes its ``-wal`` and ``-shm`` files there on every read of the index).

    Each chunk holds its two groups of paths as single NUL-separated strings (no path contains
    NUL): 400k paths load from a cache file as ~100 strings, and each worker splits its own.
    """

    chunks: tuple[tuple[str, str], ...]
    listings: tuple[str, ...] = ()

    @classmethod
    def of(cls, lstat: Iterable[str], stat: Iterable[str], listings: Iterable[str] = ()) -> Probes:
        """Probes of these paths, each once, sorted (the chunks of the same paths are the same)."""
        tagged = sorted({(p, False) for p in lstat} | {(p, True) for p in stat})
        chunks = []
        for i in range(0, len(tagged), CHUNK):
            part = tagged[i : i + CHUNK]
            chunks.append(
                ("\0".join(p for p, f in part if not f), "\0".join(p for p, f in part if f)),
            )
        return cls(tuple(chunks), tuple(sorted(set(listings))))

    def paths(self) -> tuple[list[str], list[str]]:
        """All ``(lstat, stat)`` paths."""
        lstat, stat = [], []
        for chunk in self.chunks:
            a, b = _split(chunk)
            lstat += a
            stat += b
        return lstat, stat


def _split(chunk: tuple[str, str]) -> tuple[list[str], list[str]]:
    return [p for p in chunk[0].split("\0") if p], [p for p in chunk[1].split("\0") if p]


@dataclass(frozen=True)
class Stamp:
    """Digests of the probes' chunks, and the newest change time seen among them (ns)."""

    digests: tuple[bytes, ...]
    newest_ns: int


def take(probes: Probes) -> Stamp:
    """The stamp of ``probes`` now."""
    digests = [_listings_digest(probes.listings)]
    newest = 0
    for digest, chunk_newest in _stamped(probes):
        digests.append(digest)
        newest = max(newest, chunk_newest)
    return Stamp(tuple(digests), newest)


def unchanged(probes: Probes, stamp: Stamp) -> bool:
    """Whether every chunk of ``probes`` has the digest it had in ``stamp`` (stops at the first
    that differs)."""
    if len(probes.chunks) + 1 != len(stamp.digests):
        return False
    if _listings_digest(probes.listings) != stamp.digests[0]:
        return False
    stamped = _stamped(probes)
    try:
        return all(d == before for (d, _), before in zip(stamped, stamp.digests[1:], strict=True))
    finally:
        stamped.close()


def _listings_digest(folders: tuple[str, ...]) -> bytes:
    """The names of the subfolders of each folder (not links to folders, not dot-folders)."""
    values: list[object] = []
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                names = [
                    e.name
                    for e in it
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                ]
        except OSError as exc:
            values.append(exc.errno)
            continue
        values.append(sorted(names))
    return hashlib.blake2b(marshal.dumps(values), digest_size=16).digest()


def _stamped(probes: Probes) -> Generator[tuple[bytes, int], None, None]:
    chunks = probes.chunks
    results = map_chunks(chunks, _stamp_chunk, workers_for(len(chunks), min_chunks=4))
    try:
        for chunk, done in zip(chunks, results, strict=True):
            yield done if done is not None else _stamp_chunk(chunk)
    finally:
        results.close()


def _stamp_chunk(chunk: tuple[str, str]) -> tuple[bytes, int]:
    """Digest and newest change time of one chunk (a worker's task: marshal-able result).

    Inode and change time say whether an entry is the same and unchanged: any write, truncate,
    ``chmod``, new hard link or ``utime`` sets the change time to now (mtime and size are kept
    for filesystems that stamp coarsely; a new kind of entry is a new inode). An error is kept
    as its number: a missing path that stays missing is unchanged.
    """
    values: list[object] = []
    newest = 0
    for paths, follow in zip(_split(chunk), (False, True), strict=True):
        for path in paths:
            try:
                st = os.stat(path, follow_symlinks=follow)
            except OSError as exc:
                values.append(exc.errno)
                continue
            ctime = st.st_ctime_ns
            values.append((st.st_ino, ctime, st.st_mtime_ns, st.st_size))
            if ctime > newest:
                newest = ctime
    return hashlib.blake2b(marshal.dumps(values), digest_size=16).digest(), newest
