"""Reading the library folder: find model folders and read their metadata for the index.

Model folders sit at a fixed depth, ``<type>/<family>/<name>/``, so discovery is three levels of
``os.scandir`` (no recursive walk into multi-GB bundles). Folders whose names start with ``.``
(``.mlib/`` with staging and trash among them) are never models.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reconciler.document import Document, Positions
from reconciler.errors import Problem
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
    for type_entry in _subdirs(str(root)):
        for family_entry in _subdirs(type_entry.path):
            for model_entry in _subdirs(family_entry.path):
                folder = model_entry.path
                if os.path.isfile(os.path.join(folder, METADATA_FILE)):
                    yield f"{type_entry.name}/{family_entry.name}/{model_entry.name}", folder


def _subdirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(
                (e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)),
                key=lambda e: e.name,
            )
    except OSError as exc:
        log.warning("cannot list %s: %s", path, exc.strerror)
        return []


def read_entries(root: Path) -> tuple[list[Entry], list[Skipped]]:
    """Every indexable model under ``root``, plus the folders skipped with the reason."""
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    for model_id, folder in model_dirs(root):
        entry = read_entry(model_id, folder)
        if isinstance(entry, Skipped):
            log.info("skipped %s: %s", entry.path, entry.reason)
            skipped.append(entry)
        else:
            entries.append(entry)
    return entries, skipped


def read_entry(model_id: str, folder: str) -> Entry | Skipped:
    """Read one model folder's metadata.json and overrides.json, or say why it cannot be indexed."""
    meta_path = os.path.join(folder, METADATA_FILE)
    shown = f"{model_id}/{METADATA_FILE}"
    try:
        with open(meta_path, encoding="utf-8") as fh:
            text = fh.read()
        data = json.loads(text)
    except OSError as exc:
        return Skipped(shown, f"unreadable: {exc.strerror}")
    except UnicodeDecodeError:
        return Skipped(shown, "unreadable: not UTF-8 text")
    except json.JSONDecodeError as exc:
        return Skipped(shown, f"invalid JSON at line {exc.lineno}: {exc.msg}")
    try:
        meta = metadata_from_dict(data)
    except (Malformed, TypeError, KeyError):  # odd shapes (model_type: [], source: {}) trip it
        return Skipped(shown, "schema error: " + _explain(shown, data, "metadata"))
        return Skipped(shown, "schema error: " + _explain(shown, data, "metadata"))
    if meta.id != model_id:
        return Skipped(shown, f"its id '{meta.id}' differs from its folder (move it or fix the id)")
    overrides = _read_overrides(model_id, folder)
    if isinstance(overrides, Skipped):
        return overrides
    return Entry(meta, overrides, text)


def _read_overrides(model_id: str, folder: str) -> Overrides | Skipped:
    shown = f"{model_id}/{OVERRIDES_FILE}"
    try:
        with open(os.path.join(folder, OVERRIDES_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return Overrides()
    except OSError as exc:
        return Skipped(shown, f"unreadable: {exc.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Skipped(shown, f"invalid JSON: {exc}")
    try:
        return overrides_from_dict(data)
    except Malformed:
        return Skipped(shown, "schema error: " + _explain(shown, data, "overrides"))


def _explain(shown: str, data: object, schema: str) -> str:
    """The schema's own account of what is wrong (slow; only for the files that failed)."""
    problems = schema_problems(Document(shown, data, Positions()), schema)
    if not problems:  # the fast check is stricter in a few corners (e.g. a trailing newline)
        problems = [Problem(shown, None, "", "a value has the wrong form", "see the schema")]
    return "; ".join(
        f"{p.path or '(top)'}: {p.message}" + (f" ({p.fix})" if p.fix else "") for p in problems
    )
