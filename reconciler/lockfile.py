"""``mlib.lock``: what each remote model resolved to (layer L2: reads the file; the text it writes
is made here, the write itself is the caller's atomic one).

One JSON document (``schemas/lock.schema.json``), keys sorted, one file per line of ``files``,
so a lock diffs well in version control. Per model id: ``spec``, a digest of the manifest's
source entry and pin (an entry whose ``spec`` differs from the manifest's is out of date);
``origin``, the commit (``hf:<repo>@<sha>``) or final URL; ``etag`` for a URL; and every file with
its path in the model folder, URL, size and hashes (``sha256``/``blake3`` null until known: a URL
without a published hash gets them at the first download).

Only remote sources (``hf:``, ``url:``) are locked: a local file is its own record, and its
hashes are in the model's metadata.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.actions import Action
from reconciler.errors import LockFileError
from reconciler.facts import RemoteFacts, RemoteFile
from reconciler.metadata import METADATA_FILE, metadata_from_dict, source_to_dict
from reconciler.model import LocalSource, Manifest, Metadata, ModelSpec

LOCK_NAME = "mlib.lock"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class LockedFile:
    path: str
    url: str
    size: int
    sha256: str | None = None
    blake3: str | None = None


@dataclass(frozen=True)
class LockEntry:
    spec: str
    origin: str
    files: tuple[LockedFile, ...]
    etag: str = ""

    def facts(self, model: str) -> RemoteFacts:
        """The entry as resolved facts for the planner."""
        files = tuple(RemoteFile(f.path, f.url, f.size, f.sha256) for f in self.files)
        return RemoteFacts(model, self.origin, files, self.etag, locked=True)


def lock_path(manifest: Manifest) -> Path:
    return manifest.path.parent / LOCK_NAME


def spec_key(spec: ModelSpec) -> str:
    """Digest of what the lock entry of ``spec`` depends on in the manifest."""
    data = {"source": source_to_dict(spec.source), "sha256": spec.sha256}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def is_remote(spec: ModelSpec) -> bool:
    return not isinstance(spec.source, LocalSource)


def entry_of(
    spec: ModelSpec,
    facts: RemoteFacts,
    known: Metadata | None = None,
    old: LockEntry | None = None,
) -> LockEntry:
    """A lock entry for resolved ``facts``. Hashes not published (a URL's, a small Hub file's)
    are taken from ``known`` (the library's metadata) or ``old`` (the previous entry) when those
    are of the same origin, by file path."""
    # Recorded hashes hold only for the same file: same origin, same ETag (a URL's file can
    # change under the same address), same size.
    hashes: dict[str, tuple[int, str | None, str | None]] = {}
    if old is not None and old.origin == facts.origin and old.etag == facts.etag:
        hashes.update({f.path: (f.size, f.sha256, f.blake3) for f in old.files})
    if known is not None and known.origin == facts.origin and not facts.etag:
        hashes.update({f.path: (f.size, f.sha256, f.blake3) for f in known.files})
    files = []
    for f in facts.files:
        size, sha256, blake3 = hashes.get(f.path, (-1, None, None))
        if f.size >= 0 and size != f.size:
            sha256, blake3 = None, None
        if f.sha256 and sha256 not in (None, f.sha256):
            sha256, blake3 = f.sha256, None  # published and recorded differ: the Hub is right
        files.append(LockedFile(f.path, f.url, f.size, f.sha256 or sha256, blake3))
    return LockEntry(spec_key(spec), facts.origin, tuple(files), facts.etag)


def entry_of_download(spec: ModelSpec, action: Action, folder: Path) -> LockEntry | None:
    """The lock entry of a model just downloaded by ``action`` into ``folder``: its origin and
    every file with the size and hashes its new metadata.json records (None if that cannot be
    read)."""
    data = json.loads(action.data)
    try:
        text = (folder / METADATA_FILE).read_text(encoding="utf-8")
        meta = metadata_from_dict(json.loads(text))
    except (OSError, ValueError):
        return None
    urls = {f.dest: f.source for f in action.files}
    files = tuple(
        LockedFile(f.path, urls[f.path], f.size, f.sha256, f.blake3)
        for f in meta.files
        if f.path in urls
    )
    return LockEntry(spec_key(spec), meta.origin, files, str(data.get("etag") or ""))


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The entries of the lock at ``path`` by model id; none when there is no lock. Raises
    :class:`LockFileError` naming the file and field for a damaged one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LockFileError(
            f"{path}: cannot be read ({exc}); fix or delete it, then run 'mlib lock'"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockFileError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); run 'mlib lock' to write it again"
        ) from None
    except RecursionError:
        raise LockFileError(
            f"{path}: nested too deeply to be a lock; run 'mlib lock' to write it again"
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise LockFileError(f"{path}: {exc}; run 'mlib lock' to write it again") from None
    return _entries(data, path)


def lock_text(entries: Mapping[str, LockEntry]) -> str:
    """The lock's text: stable (sorted) and ending with a newline."""
    models: dict[str, Any] = {}
    for model_id in sorted(entries):
        e = entries[model_id]
        item: dict[str, Any] = {"spec": e.spec, "origin": e.origin}
        if e.etag:
            item["etag"] = e.etag
        item["files"] = [
            {"path": f.path, "url": f.url, "size": f.size, "sha256": f.sha256, "blake3": f.blake3}
            for f in e.files
        ]
        models[model_id] = item
    return json.dumps({"version": 1, "models": models}, indent=2) + "\n"


def _entries(data: object, path: Path) -> dict[str, LockEntry]:
    def bad(where: str, what: str) -> LockFileError:
        return LockFileError(f"{path}: {where}: {what}; run 'mlib lock' to write it again")

    if not isinstance(data, dict) or data.get("version") != 1:
        raise bad("version", "not a version 1 mlib.lock")
    models = data.get("models")
    if not isinstance(models, dict):
        raise bad("models", "must be an object of model ids")
    out: dict[str, LockEntry] = {}
    for model_id, item in models.items():
        where = f"models.{model_id}"
        if not isinstance(item, dict):
            raise bad(where, "must be an object")
        spec, origin, etag = item.get("spec"), item.get("origin"), item.get("etag", "")
        if not isinstance(spec, str) or not _HEX64.match(spec):
            raise bad(f"{where}.spec", "must be 64 hex digits")
        if not isinstance(origin, str) or not origin:
            raise bad(f"{where}.origin", "must be a non-empty string")
        if not isinstance(etag, str):
            raise bad(f"{where}.etag", "must be a string")
        files = item.get("files")
        if not isinstance(files, list) or not files:
            raise bad(f"{where}.files", "must be a non-empty list")
        out[model_id] = LockEntry(
            spec,
            origin,
            tuple(_file(f, f"{where}.files[{i}]", bad) for i, f in enumerate(files)),
            etag,
        )
    return out


def _file(item: object, where: str, bad: Any) -> LockedFile:
    if not isinstance(item, dict):
        raise bad(where, "must be an object")
    path, url, size = item.get("path"), item.get("url"), item.get("size")
    if not isinstance(path, str) or not path:
        raise bad(f"{where}.path", "must be a non-empty string")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise bad(f"{where}.url", "must be an http(s) URL")
    if not isinstance(size, int) or isinstance(size, bool) or size < -1:
        raise bad(f"{where}.size", "must be an integer >= -1")
    hashes = []
    for name in ("sha256", "blake3"):
        value = item.get(name)
        if value is not None and (not isinstance(value, str) or not _HEX64.match(value)):
            raise bad(f"{where}.{name}", "must be 64 lowercase hex digits or null")
        hashes.append(value)
    return LockedFile(path, url, size, hashes[0], hashes[1])
