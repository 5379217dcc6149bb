"""What ``make_plan`` remembers between runs, in ``<library>/.mlib/cache/`` (layer L3).

Two things, each kept only for exactly the inputs it was made from, and each a mere shortcut: a
cache file that is missing, damaged, foreign or stale is ignored, and the value is computed again.

**The manifest.** Reading one costs ~45 us a model (YAML, schema, names, version ranges): 4.5 s
for 100k models. Its value depends only on its text, its path (and the current folder, for a
relative one), the home folder, and mlib's code and libraries, so the last value is kept under a
key of all of those and loaded back (~2 us a model) when none of it changed. Only a manifest
without problems is kept; an edited manifest is read in full and every problem reported as always.

**The plan.** With the manifest unchanged, a plan depends only on what was observed on disk, and
that is fixed by the stamps of a set of paths (:mod:`reconciler.stamps`). The last plan is kept
with those probes and their stamp; when the stamp taken again is the same, the plan is the same,
and ``stat`` of the probes (~2.5 us a path, on two cores at once) replaces reading and comparing
every model (~90 us a model). A plan is only kept when every probe had settled before the plan
began observing.

Both files start with one line, ``<format> <key> <sha256 of the rest>``, then a pickle that may
name only mlib's own value classes (a cache file cannot make ``pickle`` call anything else).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any, overload

from reconciler.actions import NoOp, Plan
from reconciler.loaders import read_text
from reconciler.manifest import DEFAULT_LIBRARY, resolve_path
from reconciler.model import Manifest
from reconciler.stamps import Probes, Stamp

log = logging.getLogger(__name__)

_MANIFEST_FORMAT = b"mlib-manifest-cache/1"
_PLAN_FORMAT = b"mlib-plan-cache/1"

#: The classes a manifest cache may name: the manifest's values and paths, nothing else.
_MANIFEST_CLASSES = frozenset(
    {
        ("reconciler.model", name)
        for name in (
            "Manifest",
            "AppTarget",
            "ModelSpec",
            "AppOverride",
            "HfSource",
            "UrlSource",
            "LocalSource",
            "ModelType",
            "LinkMode",
            "ImportMode",
        )
    }
    | {("pathlib", name) for name in ("Path", "PosixPath", "WindowsPath")}
)
#: The classes a plan cache may name: the plan's values and the probes with their stamp.
_PLAN_CLASSES = frozenset(
    {
        ("reconciler.actions", name)
        for name in (
            "Plan",
            "Action",
            "ImportFile",
            "NoOp",
            "Conflict",
            "ConflictKind",
            "Drift",
            "DriftKind",
            "ActionKind",
        )
    }
    | {("reconciler.stamps", name) for name in ("Probes", "Stamp")}
    | {("reconciler.cache", "Memo")}
)

_LIBRARY_LINE = re.compile(
    r"""^library:[ \t]*(?:"([^"\\\n]*)"|'([^'\n]*)'|([^\s#'"{\[][^#\n]*?))[ \t]*(?:\#.*)?$""",
    re.MULTILINE,
)


@dataclass(frozen=True)
class ManifestInput:
    """A manifest file as read now: its text, and the key of everything its value depends on."""

    path: Path
    text: str
    key: str
    #: Where its caches are, guessed from the ``library:`` line (a wrong guess only misses them).
    folder: Path

    @classmethod
    def read(cls, path: Path) -> ManifestInput:
        """Read the manifest's text (a missing or unreadable file raises the usual error)."""
        text = read_text(path, "manifest")
        home = Path.home()
        parts = (
            _MANIFEST_FORMAT.decode(),
            code_digest(),
            str(path),
            os.getcwd(),
            str(home),
            hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        )
        key = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
        return cls(path, text, key, cache_folder(_library_guess(path, home, text)))


def remembered_manifest(found: ManifestInput) -> Manifest:
    """:func:`~reconciler.loaders.load_manifest` of ``found``, or the value it gave last time for
    exactly the same inputs."""
    cached = _read(_manifest_file(found.folder, found.path), _MANIFEST_FORMAT, found.key)
    if isinstance(cached, Manifest):
        return cached
    from reconciler.loaders import load_manifest

    manifest = load_manifest(found.path, Path.home(), text=found.text)
    _write(
        _manifest_file(cache_folder(manifest.library), found.path),
        _MANIFEST_FORMAT,
        found.key,
        manifest,
    )
    return manifest


@dataclass(frozen=True)
class Memo:
    """A plan, with the probes that fix what it was made from and their stamp at the time.

    The plan's no-ops (two a model in a library at rest) are kept apart, pickled, and read only
    when someone looks at them (``plan -v``, ``--json``): on 100k models, making the 200k
    objects would cost more than a third of checking the stamp.
    """

    plan: Plan
    noops: bytes
    probes: Probes
    stamp: Stamp

    @classmethod
    def of(cls, plan: Plan, probes: Probes, stamp: Stamp) -> Memo:
        noops = pickle.dumps(tuple(plan.noops), protocol=pickle.HIGHEST_PROTOCOL)
        return cls(replace(plan, noops=()), noops, probes, stamp)

    def replayed(self) -> Plan:
        return replace(self.plan, noops=_DeferredNoOps(self.noops))


class _DeferredNoOps(Sequence[NoOp]):
    """The no-ops of a replayed plan: a tuple, unpickled on first use."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @cached_property
    def _items(self) -> tuple[NoOp, ...]:
        items = _Unpickler(self._data, _PLAN_CLASSES).load()
        if not isinstance(items, tuple) or not all(isinstance(n, NoOp) for n in items):
            raise TypeError("the cached no-ops are not no-ops")  # only a forged cache file
        return items

    @overload
    def __getitem__(self, index: int) -> NoOp: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[NoOp, ...]: ...
    def __getitem__(self, index: int | slice) -> NoOp | tuple[NoOp, ...]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._items == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return repr(self._items)


def remembered_plan(found: ManifestInput, prune: bool, asked: str = "") -> Memo | None:
    """The plan kept for this manifest, ``prune`` and ``asked`` (anything else the plan depends
    on: options, environment), if any (its stamp still to be checked)."""
    path = _plan_file(found.folder, found.path, prune)
    memo = _read(path, _PLAN_FORMAT, _plan_key(found, asked))
    return memo if isinstance(memo, Memo) else None


def remember_plan(
    found: ManifestInput, library: Path, prune: bool, memo: Memo, asked: str = ""
) -> None:
    """Keep ``memo`` for the next plan of the same manifest (only in an existing library)."""
    path = _plan_file(cache_folder(library), found.path, prune)
    _write(path, _PLAN_FORMAT, _plan_key(found, asked), memo)


def cache_folder(library: Path) -> Path:
    return library / ".mlib" / "cache"


@cache
def code_digest() -> str:
    """mlib's own code, bundled schemas and translations, and the versions of what reading a
    manifest uses."""
    import packaging
    import yaml

    import reconciler

    digest = hashlib.sha256(f"{sys.version}|{sys.platform}|{yaml.__version__}|".encode())
    digest.update(f"{packaging.__version__}|{reconciler.__version__}|".encode())
    package = Path(reconciler.__file__).parent
    found = [*package.glob("*.py"), *package.glob("schemas/*.json")]
    found += package.glob("translations/*.json")
    for path in sorted(found):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plan_key(found: ManifestInput, asked: str) -> str:
    """The manifest's key, how the plan was asked for, and who asks: another user may see other
    files (permissions)."""
    uid = os.getuid() if hasattr(os, "getuid") else -1
    return hashlib.sha256(f"{found.key}|{asked}|{uid}".encode()).hexdigest()


def _library_guess(manifest_path: Path, home: Path, text: str) -> Path:
    """Where the manifest's library is, read from its ``library:`` line without parsing it.

    Only says where to look for a cache; a wrong guess just misses it (the key holds the whole
    text, so a file found anywhere can only be this manifest's value).
    """
    found = _LIBRARY_LINE.search(text)
    value = next((g for g in found.groups() if g is not None), None) if found else None
    base = Path(os.path.normpath(manifest_path.absolute())).parent
    return resolve_path(value or DEFAULT_LIBRARY, base, home)


def _where(manifest_path: Path) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(manifest_path))).hexdigest()[:16]


def _manifest_file(folder: Path, manifest_path: Path) -> Path:
    return folder / f"manifest-{_where(manifest_path)}.pickle"


def _plan_file(folder: Path, manifest_path: Path, prune: bool) -> Path:
    return folder / f"plan-{_where(manifest_path)}{'-prune' if prune else ''}.pickle"


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cache file")
        return super().find_class(module, name)


def _read(path: Path, fmt: bytes, key: str) -> object:
    """The value kept in ``path`` under ``key``, or None (whatever is wrong with the file)."""
    allowed = _MANIFEST_CLASSES if fmt == _MANIFEST_FORMAT else _PLAN_CLASSES
    try:
        with open(path, "rb") as fh:
            header = fh.readline()
            fields = header.rstrip(b"\n").split(b" ")
            if fields[:2] != [fmt, key.encode()]:
                return None
            payload = fh.read()
        if fields[2:] != [hashlib.sha256(payload).hexdigest().encode()]:
            return None
        return _Unpickler(payload, allowed).load()
    except Exception as exc:  # whatever is wrong with a cache file, the value is computed instead
        log.debug("cache %s not used: %s", path, exc)
        return None


def _write(path: Path, fmt: bytes, key: str, value: object) -> None:
    """Keep ``value`` in ``path``; only in an existing library, and never an error."""
    if not path.parent.parent.parent.is_dir():
        return  # no library yet: a plan creates nothing
    from reconciler.fsops import atomic_write  # writing is rare: not imported by a replay

    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(payload).hexdigest().encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, b" ".join((fmt, key.encode(), digest)) + b"\n" + payload)
    except OSError as exc:
        log.debug("cache %s not written: %s", path, exc)
