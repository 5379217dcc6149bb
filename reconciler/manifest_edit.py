"""Edit ``mlib.yaml`` from the command line, keeping its comments, order and formatting (layer L3).

``mlib add`` appends a model; ``mlib override`` changes one model's ``apps:`` entry for one app
target. The file is read with ruamel.yaml's round-trip loader (pyyaml drops comments), changed
in memory, and the new text is checked exactly as ``mlib validate`` checks a manifest before it
replaces the old one atomically: an edit that would make the manifest invalid raises the usual
:class:`~reconciler.errors.InvalidInputError` and leaves the file byte-identical.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from reconciler.errors import InvalidInputError, Problem
from reconciler.fsops import atomic_write
from reconciler.loaders import display_name, load_manifest, read_text
from reconciler.model import Manifest


@dataclass(frozen=True)
class Edit:
    """What an edit did: the model it concerns and a line saying what changed."""

    model_id: str
    summary: str


def parse_source(text: str, manifest_path: Path, mode: str | None = None) -> dict[str, Any]:
    """A manifest ``source:`` mapping for ``SOURCE`` as typed: ``hf:org/repo[@rev][:glob]``, an
    ``http(s)://`` URL, or a path (kept relative to the manifest's folder when inside it)."""
    if not text.strip():
        raise InvalidInputError(
            [Problem(display_name(manifest_path), None, "models", "empty SOURCE", _SOURCE_FIX)]
        )
    if text.startswith("hf:"):
        rest = text[3:]
        repo, _, pattern = rest.partition(":")
        repo, _, revision = repo.partition("@")
        out: dict[str, Any] = {"hf": repo}
        if revision:
            out["revision"] = revision
        if pattern:
            out["files"] = [pattern]
        return out
    if text.startswith(("http://", "https://")):
        return {"url": text}
    path = Path(text).expanduser()
    absolute = Path(os.path.abspath(path))
    base = Path(os.path.abspath(manifest_path)).parent
    try:
        shown = absolute.relative_to(base).as_posix()
    except ValueError:
        shown = str(absolute)
    out = {"path": shown}
    if mode is not None:
        out["mode"] = mode
    return out


_SOURCE_FIX = "give hf:org/repo[@rev][:glob], an http(s):// URL, or a path to a file"


def default_name(source: Mapping[str, Any]) -> str:
    """A model name from its source: the repo's name, or the file's name without extension."""
    if "hf" in source:
        return str(source["hf"]).rsplit("/", 1)[-1]
    if "url" in source:
        last = unquote(urlsplit(str(source["url"])).path.rstrip("/").rsplit("/", 1)[-1])
        return PurePosixPath(last).stem or last or "model"
    return PurePosixPath(str(source["path"]).rstrip("/")).stem or "model"


def add_model(manifest_path: Path, entry: Mapping[str, Any]) -> Edit:
    """Append the model ``entry`` (name, type, family, kind, source, tags...) to ``models:``."""
    return add_models(manifest_path, [entry], [])[0]


def add_models(
    manifest_path: Path,
    entries: Sequence[Mapping[str, Any]],
    overrides: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> list[Edit]:
    """Append ``entries`` to ``models:`` and set ``overrides`` (model id, app target, fields of
    its ``apps:`` entry) in one edit, checked once: all of it is written, or none."""
    doc, yaml = _load(manifest_path)
    models = doc.get("models")
    if models is None:
        from ruamel.yaml.comments import CommentedSeq

        models = doc["models"] = CommentedSeq()
    if not isinstance(models, list):
        raise InvalidInputError(
            [
                Problem(
                    display_name(manifest_path),
                    None,
                    "models",
                    "is not a list, so nothing can be added to it",
                    "write it as a list ('models: []' or '- name: ...' items)",
                )
            ]
        )
    for entry in entries:
        models.append(_block(entry))
    if overrides:
        current = load_manifest(manifest_path)
        index = {m.id: i for i, m in enumerate(current.models)}
        for model_id, target, fields in overrides:
            if model_id not in index:
                raise InvalidInputError(
                    [Problem(display_name(manifest_path), None, "models", f"no model '{model_id}'")]
                )
            model = models[index[model_id]]
            apps = model.get("apps")
            if apps is None:
                from ruamel.yaml.comments import CommentedMap

                apps = model["apps"] = CommentedMap()
            short = _short({**_fields(apps.get(target)), **fields})
            if short is not None:
                apps[target] = short
    manifest = _write_checked(manifest_path, doc, yaml)
    added = manifest.models[len(manifest.models) - len(entries) :] if entries else ()
    edits = [Edit(m.id, f"added {m.id}") for m in added]
    edits += [Edit(m, f"{m}: linked into {t} as adopted") for m, t, _ in overrides]
    return edits


def set_override(
    manifest_path: Path,
    model_id: str,
    target: str,
    *,
    versions: str | None = None,
    enabled: bool | None = None,
    folder: str | None = None,
    filename: str | None = None,
) -> Edit:
    """Change the ``apps: {target: ...}`` override of the model ``model_id``.

    A plain range or ``false`` stays in that short form when nothing else is set; otherwise the
    override becomes ``{versions, enabled, folder, filename}`` with the keys given.
    """
    current = load_manifest(manifest_path)
    index = next((i for i, m in enumerate(current.models) if m.id == model_id), None)
    if index is None:
        known = ", ".join(m.id for m in current.models[:5]) or "none"
        raise InvalidInputError(
            [
                Problem(
                    display_name(manifest_path),
                    None,
                    "models",
                    f"no model with id '{model_id}'",
                    f"use an id 'mlib list' shows (e.g. {known})",
                )
            ]
        )
    doc, yaml = _load(manifest_path)
    model = doc["models"][index]
    apps = model.get("apps")
    if apps is None:
        from ruamel.yaml.comments import CommentedMap

        apps = model["apps"] = CommentedMap()
    value = apps.get(target)
    fields = _fields(value)
    if versions is not None:
        fields["versions"] = versions
    if enabled is not None:
        fields["enabled"] = enabled
    if folder is not None:
        fields["folder"] = folder
    if filename is not None:
        fields["filename"] = filename
    short = _short(fields)
    if short is None:  # back to the defaults: the entry goes
        apps.pop(target, None)
        if not apps:
            del model["apps"]
    else:
        apps[target] = short
    _write_checked(manifest_path, doc, yaml)
    said = ", ".join(f"{k}={v}" for k, v in fields.items()) or "defaults"
    return Edit(model_id, f"{model_id}: {target} override is now {said}")


def _fields(value: object) -> dict[str, Any]:
    """An override in its long form: ``{versions, enabled, folder, filename}``."""
    if value is None:
        return {}
    if value is False:
        return {"enabled": False}
    if isinstance(value, str):
        return {"versions": value}
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def _short(fields: dict[str, Any]) -> Any:
    """The override as people write it: ``false``, a range, or a mapping."""
    if fields.get("enabled") is True:
        del fields["enabled"]  # the default
    if not fields:
        return None
    if fields == {"enabled": False}:
        return False
    if set(fields) == {"versions"}:
        return fields["versions"]
    from ruamel.yaml.comments import CommentedMap

    out = CommentedMap()
    for key in ("versions", "enabled", "folder", "filename"):
        if key in fields:
            out[key] = fields[key]
    for key, value in fields.items():  # anything else the user had keeps its place at the end
        if key not in out:
            out[key] = value
    out.fa.set_flow_style()
    return out


def _block(entry: Mapping[str, Any]) -> Any:
    """``entry`` as a block mapping (its ``source`` and small lists in flow style, as the
    example manifest writes them)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    out = CommentedMap()
    for key, value in entry.items():
        if isinstance(value, Mapping):
            inner = CommentedMap(value)
            inner.fa.set_flow_style()
            out[key] = inner
        elif isinstance(value, Sequence) and not isinstance(value, str):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()
            out[key] = seq
        else:
            out[key] = value
    return out


def _load(manifest_path: Path) -> tuple[Any, Any]:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, order, quotes and flow styles kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # lines are never folded: only the edited lines change
    text = read_text(manifest_path, "manifest")
    mapping, sequence, offset = _indentation(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)  # the file's own, kept
    doc = yaml.load(text)
    if not isinstance(doc, dict):
        raise InvalidInputError(
            [Problem(display_name(manifest_path), None, "", "not a mapping", "run 'mlib validate'")]
        )
    return doc, yaml


def _indentation(text: str) -> tuple[int, int, int]:
    """The block indentation ``text`` uses, as ruamel.yaml's ``indent()`` takes it: a mapping's
    step, a sequence item's content column and its dash's column, relative to the parent key
    (``models:`` then ``  - name:`` is (2, 4, 2); pyyaml's ``- name:`` under it is (2, 2, 0)).
    ruamel.yaml writes every block with one setting, so the file's own is taken from its first
    nested blocks; (2, 4, 2) when it has none."""
    mapping: int | None = None
    dash: int | None = None
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    for above, line in itertools.pairwise(lines):
        key = above.rstrip()
        if not key.endswith(":") or key.lstrip().startswith("- "):
            continue
        parent = len(above) - len(above.lstrip())
        inner = len(line) - len(line.lstrip())
        if line.lstrip().startswith("- ") and inner >= parent and dash is None:
            dash = inner - parent
        elif inner > parent and mapping is None and not line.lstrip().startswith("- "):
            mapping = inner - parent
    offset = 2 if dash is None else dash
    return mapping or 2, offset + 2, offset


def _write_checked(manifest_path: Path, doc: Any, yaml: Any) -> Manifest:
    """Write ``doc`` if it is a valid manifest; raise with every problem (file untouched) if not."""
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    text = buffer.getvalue()
    manifest = load_manifest(manifest_path, text=text)  # raises InvalidInputError, file untouched
    atomic_write(manifest_path, text.encode("utf-8"))
    return manifest
