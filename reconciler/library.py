"""Reading the library folder: find model folders and read their metadata for the index.

Model folders sit at a fixed depth, ``<type>/<family>/<name>/``, so discovery is three levels of
``os.scandir`` (no recursive walk into multi-GB bundles). Folders whose names start with ``.``
(``.mlib/`` with staging and trash among them) are never models.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import stat
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from reconciler.document import Document, Positions
from reconciler.errors import Problem
from reconciler.forked import map_chunks, workers_for
from reconciler.index import Entry
from reconciler.loaders import schema_problems
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    Malformed,
    metadata_from_dict,
    overrides_from_dict,
)
from reconciler.model import Overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A model folder that could not be indexed, and why."""

    path: str
    reason: str


def model_dirs(root: Path) -> Iterator[tuple[str, str]]:
    """``(model id, absolute folder)`` for each folder at model depth holding a metadata.json."""
    for model_id, folder in _depth_three(root):
        if os.path.isfile(os.path.join(folder, METADATA_FILE)):
            yield model_id, folder


def _depth_three(root: Path) -> Iterator[tuple[str, str]]:
    """``(id, folder)`` of every folder at model depth, in id order, metadata.json or not."""
    for type_name, type_path in _subdirs(str(root)):
        for family_name, family_path in _subdirs(type_path):
            prefix = f"{type_name}/{family_name}/"
            for name, folder in _subdirs(family_path):
                yield prefix + name, folder


def _subdirs(path: str) -> list[tuple[str, str]]:
    """``(name, path)`` of the folders in ``path`` (not links to folders, not dot-folders)."""
    try:
        with os.scandir(path) as it:
            found = [
                (e.name, e.path)
                for e in it
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
    except OSError as exc:
        log.warning("cannot list %s: %s", path, exc.strerror)
        return []
    found.sort()
    return found


def read_entries(root: Path) -> tuple[list[Entry], list[Skipped]]:
    """Every indexable model under ``root``, plus the folders skipped with the reason."""
    models = LibraryModels(root)
    with gc_paused():
        entries = list(models)
    return entries, models.skipped


T = TypeVar("T")


class LibraryModels:
    """The indexable models under ``root``, read as they are iterated (an iterable of
    :class:`Entry` for ``Index.rebuild``; read it once); the folders that cannot be indexed
    collect in :attr:`skipped`, in id order, each logged.

    :meth:`converted` is the fast way through 100k models: it reads in worker processes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: list[Skipped] = []

    def __iter__(self) -> Iterator[Entry]:
        for model_id, folder in _depth_three(self.root):
            entry = self._take(_read_model(model_id, folder, found=True))
            if entry is not None:
                yield entry

    def converted(self, convert: Callable[[Entry], T]) -> Generator[list[T], None, None]:
        """``convert`` of every entry, in batches, in the order of iteration.

        Reading and parsing ~100k small JSON files is CPU work (~30 us a model), so on a machine
        with more than one core, forked workers (:mod:`reconciler.forked`) read the folders in
        chunks and send back what ``convert`` made of them (which must be :mod:`marshal`-able
        data: tuples of str, int, None...), while this process takes the batches as they come, in
        order. A chunk whose worker failed is read here. With fewer than :data:`_PARALLEL_FROM`
        models, or where forking is not safe, all is read here.
        """
        folders = list(_depth_three(self.root))
        chunks = [folders[i : i + _CHUNK] for i in range(0, len(folders), _CHUNK)]
        workers = workers_for(len(chunks), min_chunks=_PARALLEL_FROM // _CHUNK)
        results = map_chunks(chunks, partial(_read_chunk, convert), workers)
        try:
            for chunk, done in zip(chunks, results, strict=True):
                if done is None:
                    yield self._convert(chunk, convert)
                    continue
                batch, skipped = done
                for path, reason in skipped:
                    self._take(Skipped(path, reason))
                yield batch
        finally:
            results.close()

    def _convert(self, chunk: list[tuple[str, str]], convert: Callable[[Entry], T]) -> list[T]:
        out = []
        for model_id, folder in chunk:
            entry = self._take(_read_model(model_id, folder, found=True))
            if entry is not None:
                out.append(convert(entry))
        return out

    def _take(self, found: Entry | Skipped | None) -> Entry | None:
        if isinstance(found, Skipped):
            log.info("skipped %s: %s", found.path, found.reason)
            self.skipped.append(found)
            return None
        return found


#: Folders a worker reads per message (~1.4 MB of index rows).
_CHUNK = 1000
#: Below this many folders, forking workers costs more than it saves.
_PARALLEL_FROM = 4 * _CHUNK


def _read_chunk(
    convert: Callable[[Entry], Any], chunk: list[tuple[str, str]]
) -> tuple[list[Any], list[tuple[str, str]]]:
    """A worker's task: ``convert`` of each indexable folder, and the skipped ones with why."""
    out = []
    skipped = []
    for model_id, folder in chunk:
        found = _read_model(model_id, folder, found=True)
        if isinstance(found, Skipped):
            skipped.append((found.path, found.reason))
        elif found is not None:
            out.append(convert(found))
    return out, skipped


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: a rebuild allocates ~10 objects a model and keeps
    them all, so every collection would walk every model read so far, for nothing (~1.5 s on
    100k models); whatever cycles the block leaves are collected afterwards as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_entry(model_id: str, folder: str) -> Entry | Skipped:
    """Read one model folder's metadata.json and overrides.json, or say why it cannot be indexed."""
    entry = _read_model(model_id, folder, found=False)
    assert entry is not None  # only a found folder may turn out not to be a model
    return entry


def _read_model(model_id: str, folder: str, *, found: bool) -> Entry | Skipped | None:
    """:func:`read_entry`; with ``found`` (a folder the walk found, whose metadata.json nobody
    has looked for yet), ``None`` when it has no metadata.json file: not a model at all.

    Opening metadata.json and overrides.json straight away, a missing file being the answer, is
    cheaper than asking first: on 100k folders, an ``isfile`` costs ~0.35 s and a listing of the
    folder ~0.85 s, a failed open ~0.35 s."""
    meta_path = os.path.join(folder, METADATA_FILE)
    try:
        text = _read_text(meta_path)
        data = json.loads(text)
    except OSError as exc:
        if found and not os.path.isfile(meta_path):
            return None
        return Skipped(f"{model_id}/{METADATA_FILE}", f"unreadable: {exc.strerror}")
    except UnicodeDecodeError:
        return Skipped(f"{model_id}/{METADATA_FILE}", "unreadable: not UTF-8 text")
    except json.JSONDecodeError as exc:
        return Skipped(
            f"{model_id}/{METADATA_FILE}", f"invalid JSON at line {exc.lineno}: {exc.msg}"
        )
    except (ValueError, RecursionError) as exc:  # nested too deeply, or a 4300-digit number
        return Skipped(f"{model_id}/{METADATA_FILE}", f"invalid JSON: {_short(exc)}")
    try:
        meta = metadata_from_dict(data)
    except Malformed:
        shown = f"{model_id}/{METADATA_FILE}"
        return Skipped(shown, "schema error: " + _explain(shown, data, "metadata"))
    if meta.id != model_id:
        return Skipped(
            f"{model_id}/{METADATA_FILE}",
            f"its id '{meta.id}' differs from its folder (move it or fix the id)",
        )
    overrides = _read_overrides(model_id, folder)
    if isinstance(overrides, Skipped):
        return overrides
    return Entry(meta, overrides, text)


_NO_OVERRIDES = Overrides()
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO named metadata.json must not hang the walk
)


def _read_text(path: str) -> str:
    """The UTF-8 text of the regular file ``path``, newlines as ``open(path).read()`` gives them.

    ``os.open`` and one ``os.read`` of the known size cost less than half of ``open()`` with its
    buffer and text decoder (~6 us against ~15 us a file). Raises :class:`OSError` (also for a
    folder or another kind of non-regular file) and :class:`UnicodeDecodeError`."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            raise OSError(errno.EINVAL, "not a regular file", path)
        size = st.st_size
        data = os.read(fd, size + 1)
        if len(data) != size:  # it changed since the fstat: read on to the end
            parts = [data]
            while chunk := os.read(fd, 1 << 16):
                parts.append(chunk)
            data = b"".join(parts)
    finally:
        os.close(fd)
    text = data.decode("utf-8")
    if "\r" in text:  # universal newlines, as text mode reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _read_overrides(model_id: str, folder: str) -> Overrides | Skipped:
    shown = f"{model_id}/{OVERRIDES_FILE}"
    try:
        data = json.loads(_read_text(os.path.join(folder, OVERRIDES_FILE)))
    except FileNotFoundError:
        return _NO_OVERRIDES
    except OSError as exc:
        return Skipped(shown, f"unreadable: {exc.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Skipped(shown, f"invalid JSON: {exc}")
    except (ValueError, RecursionError) as exc:  # nested too deeply, or a 4300-digit number
        return Skipped(shown, f"invalid JSON: {_short(exc)}")
    try:
        return overrides_from_dict(data)
    except Malformed:
        return Skipped(shown, "schema error: " + _explain(shown, data, "overrides"))


def _short(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]


def _explain(shown: str, data: object, schema: str) -> str:
    """The schema's own account of what is wrong (slow; only for the files that failed)."""
    problems = schema_problems(Document(shown, data, Positions()), schema)
    if not problems:  # the fast check is stricter in a few corners (e.g. a trailing newline)
        problems = [Problem(shown, None, "", "a value has the wrong form", "see the schema")]
    return "; ".join(
        f"{p.path or '(top)'}: {p.message}" + (f" ({p.fix})" if p.fix else "") for p in problems
    )
