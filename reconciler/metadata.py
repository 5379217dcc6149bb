"""``metadata.json`` and ``overrides.json``: typed values to and from their JSON form.

Pure conversions. ``*_from_dict`` expect data that passed the bundled JSON Schema (the loaders check
that first); ``*_to_dict`` produce data that passes it, which the tests prove both ways.
"""

from __future__ import annotations

import json
import re
from typing import Any

from reconciler.model import (
    AppOverride,
    FileEntry,
    HfSource,
    ImportMode,
    LocalSource,
    Metadata,
    ModelType,
    Overrides,
    Source,
    UrlSource,
)

METADATA_FILE = "metadata.json"
OVERRIDES_FILE = "overrides.json"


def source_to_dict(source: Source) -> dict[str, Any]:
    if isinstance(source, HfSource):
        out: dict[str, Any] = {"hf": source.repo, "revision": source.revision}
        if source.files:
            out["files"] = list(source.files)
        if source.exclude:
            out["exclude"] = list(source.exclude)
        return out
    if isinstance(source, UrlSource):
        return {"url": source.url} | ({"filename": source.filename} if source.filename else {})
    return {"path": source.path, "mode": source.mode.value}


def source_from_dict(data: dict[str, Any]) -> Source:
    if "hf" in data:
        return HfSource(
            repo=data["hf"],
            revision=data.get("revision", "main"),
            files=tuple(data.get("files", ())),
            exclude=tuple(data.get("exclude", ())),
        )
    if "url" in data:
        return UrlSource(url=data["url"], filename=data.get("filename"))
    return LocalSource(path=data["path"], mode=ImportMode(data.get("mode", "copy")))


def metadata_to_dict(meta: Metadata) -> dict[str, Any]:
    hashes = meta.hashes
    return {
        "schema_version": meta.schema_version,
        "id": meta.id,
        "official_name": meta.official_name,
        "cleaned_name": meta.cleaned_name,
        "model_type": meta.model_type.value,
        "family": meta.family,
        "kind": meta.kind,
        "tags": list(meta.tags),
        "source": source_to_dict(meta.source),
        **({"origin": meta.origin} if meta.origin else {}),
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "blake3": f.blake3}
            for f in meta.files
        ],
        "hashes": None if hashes is None else {"sha256": hashes.sha256, "blake3": hashes.blake3},
        "size_bytes": meta.size_bytes,
        "added_at": meta.added_at,
        "updated_at": meta.updated_at,
    }


class Malformed(ValueError):
    """Data that does not have the shape of the bundled schema; the loaders explain it in full."""


_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*").fullmatch
_ID = re.compile(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*").fullmatch
_HEX = "0123456789abcdef"  # a 64-character string of these alone is a digest: not s.strip(_HEX)
_SOURCE_FIELDS = {
    "hf": str, "revision": str, "files": list, "exclude": list,
    "url": str, "filename": str, "path": str, "mode": str,
}  # fmt: skip
_ORIGINS = frozenset({"hf", "url", "path"})
_TOP_FIELDS = frozenset({
    "schema_version", "id", "official_name", "cleaned_name", "model_type", "family", "kind", "tags",
    "source", "files", "hashes", "size_bytes", "added_at", "updated_at",
})  # fmt: skip
_FILE_FIELDS = frozenset({"path", "size", "sha256", "blake3"})
#: A file path that could leave its model folder: absolute, or with an empty, ``.`` or ``..``
#: component, or a backslash or NUL (the same rule as the schema's ``file.path`` pattern).
_UNSAFE_PATH = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|[\\\x00]").search
_HASH_FIELDS = frozenset({"sha256", "blake3"})
_TYPES: dict[str, ModelType] = {t.value: t for t in ModelType}
_MODES = frozenset(m.value for m in ImportMode)


def metadata_from_dict(data: Any) -> Metadata:
    """Convert checked-on-the-way ``metadata.json`` data; raise :class:`Malformed` if it is not.

    This is the fast path of ``index rebuild`` (jsonschema costs ~250 us a document, this a few
    us): it accepts exactly what ``schemas/metadata.schema.json`` accepts, which a property test
    and a sweep of single-field changes check. It is one flat function on purpose: it runs 100k
    times in a rebuild, and every helper call or generator costs there.
    """
    if not isinstance(data, dict) or not data.keys() >= _TOP_FIELDS:
        raise Malformed("not a metadata object with every required field")
    version = data["schema_version"]
    if version != 1 or isinstance(version, bool):
        raise Malformed("schema_version")

    source = data["source"]
    if not isinstance(source, dict):
        raise Malformed("source")
    origins = 0
    for key, value in source.items():
        want = _SOURCE_FIELDS.get(key)
        if want is None or type(value) is not want:
            raise Malformed("source")
        if want is list:
            for item in value:
                if not isinstance(item, str):
                    raise Malformed("source")
        elif key in _ORIGINS:
            origins += 1
        elif key == "mode" and value not in _MODES:
            raise Malformed("source")
    if origins != 1:  # also refuses an empty source
        raise Malformed("source")

    hashes = data["hashes"]
    if hashes is not None:
        if not (isinstance(hashes, dict) and hashes.keys() == _HASH_FIELDS):
            raise Malformed("hashes")
        sha256, blake3 = hashes["sha256"], hashes["blake3"]
        if not (
            isinstance(sha256, str)
            and isinstance(blake3, str)
            and len(sha256) == 64
            and len(blake3) == 64
            and not sha256.strip(_HEX)
            and not blake3.strip(_HEX)
        ):
            raise Malformed("hashes")

    files = data["files"]
    if not isinstance(files, list):
        raise Malformed("files")
    entries = []
    for f in files:
        if not (isinstance(f, dict) and f.keys() == _FILE_FIELDS):
            raise Malformed("files")
        path, size, sha256, blake3 = f["path"], f["size"], f["sha256"], f["blake3"]
        if not (
            isinstance(path, str)
            and path
            and not _UNSAFE_PATH(path)
            and ((type(size) is int and size >= 0) or _is_count(size))
            and isinstance(sha256, str)
            and isinstance(blake3, str)
            and len(sha256) == 64
            and len(blake3) == 64
            and not sha256.strip(_HEX)
            and not blake3.strip(_HEX)
        ):
            raise Malformed("files")
        entries.append(FileEntry(path, int(size), sha256, blake3))

    tags = data["tags"]
    if not isinstance(tags, list):
        raise Malformed("tags")
    for tag in tags:
        if not (isinstance(tag, str) and tag):
            raise Malformed("tags")

    model_id, official, cleaned = data["id"], data["official_name"], data["cleaned_name"]
    family, kind, size_bytes = data["family"], data["kind"], data["size_bytes"]
    added_at, updated_at = data["added_at"], data["updated_at"]
    model_type = data["model_type"]
    model_type = _TYPES.get(model_type) if isinstance(model_type, str) else None
    if not (
        model_type is not None
        and isinstance(model_id, str)
        and _ID(model_id)
        and isinstance(official, str)
        and official
        and isinstance(cleaned, str)
        and len(cleaned) <= 128
        and _SLUG(cleaned)
        and isinstance(family, str)
        and _SLUG(family)
        and isinstance(kind, str)
        and _SLUG(kind)
        and ((type(size_bytes) is int and size_bytes >= 0) or _is_count(size_bytes))
        and isinstance(added_at, str)
        and isinstance(updated_at, str)
    ):
        raise Malformed("a top-level field")
    origin = data.get("origin", "")
    if not isinstance(origin, str):
        raise Malformed("origin")
    return Metadata(
        id=model_id,
        official_name=official,
        cleaned_name=cleaned,
        model_type=model_type,
        family=family,
        kind=kind,
        tags=tuple(tags),
        source=source_from_dict(source),
        files=tuple(entries),
        added_at=added_at,
        updated_at=updated_at,
        schema_version=1,
        origin=origin,
    )


def _is_count(value: Any) -> bool:
    """A JSON Schema non-negative "integer": an int, or a float with no fraction; not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return value >= 0
    return value >= 0 and value.is_integer()


def overrides_to_dict(overrides: Overrides) -> dict[str, Any]:
    apps: dict[str, Any] = {}
    for o in sorted(overrides.apps, key=lambda o: o.target):
        entry: dict[str, Any] = {"enabled": o.enabled, "versions": o.versions}
        if o.folder is not None:
            entry["folder"] = o.folder
        if o.filename is not None:
            entry["filename"] = o.filename
        apps[o.target] = entry
    return {"schema_version": overrides.schema_version, "apps": apps}


def overrides_from_dict(data: Any) -> Overrides:
    """Convert ``overrides.json`` data; raise :class:`Malformed` where the schema refuses it."""
    if not isinstance(data, dict) or data.keys() != _OVERRIDES_FIELDS:
        raise Malformed("not an overrides object with schema_version and apps")
    if data["schema_version"] != 1 or isinstance(data["schema_version"], bool):
        raise Malformed("schema_version")
    apps = data["apps"]
    if not isinstance(apps, dict):
        raise Malformed("apps")
    out = []
    for name in sorted(apps):
        entry = apps[name]
        if not (
            isinstance(entry, dict)
            and _OVERRIDE_REQUIRED <= entry.keys() <= _OVERRIDE_FIELDS
            and isinstance(entry["enabled"], bool)
        ):
            raise Malformed(f"apps.{name}")
        for key in _TEXTS:  # each present one a non-empty string
            if key in entry and not (isinstance(entry[key], str) and entry[key]):
                raise Malformed(f"apps.{name}")
        out.append(
            AppOverride(
                target=name,
                enabled=entry["enabled"],
                versions=entry["versions"],
                folder=entry.get("folder"),
                filename=entry.get("filename"),
            )
        )
    return Overrides(apps=tuple(out), schema_version=1)


_OVERRIDES_FIELDS = frozenset({"schema_version", "apps"})
_OVERRIDE_REQUIRED = frozenset({"enabled", "versions"})
_OVERRIDE_FIELDS = frozenset({"enabled", "versions", "folder", "filename"})
_TEXTS = ("versions", "folder", "filename")


def dumps(data: dict[str, Any]) -> bytes:
    """The one JSON text form mlib writes: sorted-free (fields in schema order), indented, LF."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
