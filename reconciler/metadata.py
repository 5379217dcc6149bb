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


_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SOURCE_FIELDS = {
    "hf": str, "revision": str, "files": list, "exclude": list,
    "url": str, "filename": str, "path": str, "mode": str,
}  # fmt: skip
_TOP_FIELDS = {
    "schema_version", "id", "official_name", "cleaned_name", "model_type", "family", "kind", "tags",
    "source", "files", "hashes", "size_bytes", "added_at", "updated_at",
}  # fmt: skip


def metadata_from_dict(data: Any) -> Metadata:
    """Convert checked-on-the-way ``metadata.json`` data; raise :class:`Malformed` if it is not.

    This is the fast path of ``index rebuild`` (jsonschema costs ~250 us a document, this ~10 us);
    it accepts exactly what ``schemas/metadata.schema.json`` accepts, which a property test checks.
    """
    if not isinstance(data, dict) or not data.keys() >= _TOP_FIELDS:
        raise Malformed("not a metadata object with every required field")
    if data["schema_version"] != 1 or isinstance(data["schema_version"], bool):
        raise Malformed("schema_version")
    source = data["source"]
    if (
        not isinstance(source, dict)
        or not source
        or any(type(source.get(k, t())) is not t for k, t in _SOURCE_FIELDS.items())
        or not source.keys() <= _SOURCE_FIELDS.keys()
        or any(not isinstance(x, str) for k in ("files", "exclude") for x in source.get(k, ()))
        or source.get("mode", "copy") not in _MODES
        or sum(k in source for k in ("hf", "url", "path")) != 1
    ):
        raise Malformed("source")
    hashes = data["hashes"]
    if hashes is not None and not _is_hashes(hashes):
        raise Malformed("hashes")
    files = data["files"]
    if not isinstance(files, list):
        raise Malformed("files")
    entries = tuple(_file_entry(f) for f in files)
    tags = data["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise Malformed("tags")
    cleaned = data["cleaned_name"]
    if not (
        _full(_ID, data["id"])
        and isinstance(data["official_name"], str)
        and data["official_name"]
        and _full(_SLUG, cleaned)
        and len(cleaned) <= 128
        and isinstance(data["model_type"], str)
        and data["model_type"] in _TYPES
        and _full(_SLUG, data["family"])
        and _full(_SLUG, data["kind"])
        and _is_count(data["size_bytes"])
        and isinstance(data["added_at"], str)
        and isinstance(data["updated_at"], str)
    ):
        raise Malformed("a top-level field")
    return Metadata(
        id=data["id"],
        official_name=data["official_name"],
        cleaned_name=cleaned,
        model_type=ModelType(data["model_type"]),
        family=data["family"],
        kind=data["kind"],
        tags=tuple(tags),
        source=source_from_dict(source),
        files=entries,
        added_at=data["added_at"],
        updated_at=data["updated_at"],
        schema_version=1,
    )


_TYPES = frozenset(t.value for t in ModelType)
_MODES = frozenset(m.value for m in ImportMode)


def _full(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _is_count(value: Any) -> bool:
    # JSON Schema's "integer" also admits 2.0; bool is not a number there.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value >= 0
        and float(value).is_integer()
    )


def _is_hashes(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.keys() == {"sha256", "blake3"}
        and _full(_HEX64, value["sha256"])
        and _full(_HEX64, value["blake3"])
    )


def _file_entry(value: Any) -> FileEntry:
    if not (
        isinstance(value, dict)
        and value.keys() == {"path", "size", "sha256", "blake3"}
        and isinstance(value["path"], str)
        and value["path"]
        and _is_count(value["size"])
        and _full(_HEX64, value["sha256"])
        and _full(_HEX64, value["blake3"])
    ):
        raise Malformed("files")
    return FileEntry(value["path"], int(value["size"]), value["sha256"], value["blake3"])


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
    if not isinstance(data, dict) or data.keys() != {"schema_version", "apps"}:
        raise Malformed("not an overrides object with schema_version and apps")
    if data["schema_version"] != 1 or isinstance(data["schema_version"], bool):
        raise Malformed("schema_version")
    apps = data["apps"]
    if not isinstance(apps, dict):
        raise Malformed("apps")
    out = []
    for name, entry in sorted(apps.items()):
        if not (
            isinstance(entry, dict)
            and {"enabled", "versions"} <= entry.keys() <= _OVERRIDE_FIELDS
            and isinstance(entry["enabled"], bool)
            and all(isinstance(entry.get(k, "x"), str) and entry.get(k, "x") for k in _TEXTS)
        ):
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


_OVERRIDE_FIELDS = frozenset({"enabled", "versions", "folder", "filename"})
_TEXTS = ("versions", "folder", "filename")


def dumps(data: dict[str, Any]) -> bytes:
    """The one JSON text form mlib writes: sorted-free (fields in schema order), indented, LF."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
