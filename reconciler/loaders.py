"""Reading input files: YAML with line numbers and no duplicate keys, JSON, and JSON Schema checks.

Everything here turns a file on disk into plain data plus a :class:`Positions` map (field path ->
line), or into :class:`~reconciler.errors.Problem` values that name the file, line, field and fix.
``jsonschema`` is imported lazily: it costs ~150 ms of start-up and most commands never need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.document import Document, PathKey, Positions, field_path
from reconciler.errors import InvalidInputError, Problem
from reconciler.manifest import interpret
from reconciler.metadata import metadata_from_dict, overrides_from_dict
from reconciler.model import Manifest, Metadata, Overrides

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

try:  # libyaml is ~5x faster; PyYAML wheels ship it, but a source build may not.
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


def display_name(path: Path) -> str:
    """A path as users typed it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fix = "create it with 'mlib init' or pass -m PATH" if what == "manifest" else "check path"
        raise InvalidInputError([Problem(str(path), None, "", f"{what} not found", fix)]) from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            [Problem(str(path), None, "", f"not UTF-8 text ({exc.reason})", "save it as UTF-8")]
        ) from None
    except OSError as exc:
        raise InvalidInputError(
            [Problem(str(path), None, "", f"cannot read {what}: {exc.strerror}", "check access")]
        ) from None


def load_yaml(path: Path, what: str = "manifest", *, file: str | None = None) -> Document:
    """Parse YAML keeping the line of every value; duplicate mapping keys are problems.

    Duplicate keys do not stop parsing (the first value is kept and the duplicate recorded in
    ``Document.problems``), so they are reported together with every other problem in the file.
    """
    name = file or display_name(path)
    text = read_text(path, what)
    return parse_yaml(text, name)


def parse_yaml(text: str, file: str) -> Document:
    loader = _Loader(text)
    lines: dict[PathKey, int] = {}
    problems: list[Problem] = []
    try:
        root = loader.get_single_node()
        data = None if root is None else _construct(loader, root, (), lines, problems, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or exc.context or "syntax error"
        raise InvalidInputError(
            [Problem(file, line, "", f"YAML error: {problem}", "fix the YAML syntax")]
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            [Problem(file, None, "", f"YAML error: {exc}", "fix the YAML syntax")]
        ) from None
    finally:
        loader.dispose()
    return Document(file, data, Positions(lines), tuple(problems))


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def _construct(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    key: PathKey,
    lines: dict[PathKey, int],
    problems: list[Problem],
    file: str,
) -> Any:
    lines[key] = node.start_mark.line + 1
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        problems.append(
            Problem(file, lines[key], field_path(key), f"unsupported YAML tag {node.tag}", "remove")
        )  # and read on as a plain mapping or list, so it is the only problem reported
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            name = loader.construct_object(key_node, deep=True)
            if not isinstance(name, str):
                name = str(name)
            child = (*key, name)
            if name in out:
                first = lines.get(child)
                problems.append(
                    Problem(
                        file,
                        key_node.start_mark.line + 1,
                        field_path(child),
                        f"duplicate key (first defined on line {first})",
                        "keep one of them",
                    )
                )
                continue
            out[name] = _construct(loader, value_node, child, lines, problems, file)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*key, i), lines, problems, file)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def load_json(path: Path, what: str) -> Document:
    """Parse a JSON file; syntax errors become one problem with the line."""
    name = display_name(path)
    text = read_text(path, what)
    return parse_json(text, name)


def parse_json(text: str, file: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            [Problem(file, exc.lineno, "", f"invalid JSON: {exc.msg}", "fix the JSON syntax")]
        ) from None
    return Document(file, data, Positions())


# --- JSON Schema -------------------------------------------------------------------------------


def schema_text(name: str) -> str:
    """The text of a bundled schema, ``schemas/<name>.schema.json``, from the installed package."""
    return (resources.files("reconciler") / "schemas" / f"{name}.schema.json").read_text("utf-8")


@cache
def validator(name: str) -> Validator:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_text(name))
    return Draft202012Validator(schema)


def schema_problems(doc: Document, schema: str) -> list[Problem]:
    """Every JSON Schema violation in ``doc``, each rendered with its line and a fix."""
    errors = sorted(validator(schema).iter_errors(doc.data), key=lambda e: list(map(str, e.path)))
    return [p for error in errors for p in _explain(doc, error)]


def _explain(doc: Document, error: ValidationError) -> Iterator[Problem]:
    key: PathKey = tuple(error.absolute_path)
    kind = error.validator
    value: Any = error.instance
    rule: Any = error.validator_value
    schema: dict[str, Any] = dict(error.schema) if isinstance(error.schema, Mapping) else {}
    if kind in ("oneOf", "anyOf") and error.context:
        # Report the branch that got furthest, not the generic "is not valid under any".
        best = max(error.context, key=lambda e: (len(e.absolute_path), -len(str(e.message))))
        yield from _explain(doc, best)
    elif kind == "required":
        for name in (n for n in rule if n not in value):
            yield doc.problem(key, f"missing required field '{name}'", f"add '{name}:'")
    elif kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for name in (n for n in value if n not in allowed):
            yield doc.problem(
                (*key, name), "unknown field", f"remove it or use one of: {', '.join(allowed)}"
            )
    elif kind == "enum":
        choices = ", ".join(str(c) for c in rule)
        yield doc.problem(key, f"{value!r} is not allowed", f"use one of: {choices}")
    elif kind == "type":
        wanted = " or ".join(map(_yaml_type, rule if isinstance(rule, list) else [rule]))
        got = _json_type(value)
        fix = f'quote it: "{value}"' if got == "number" and "string" in wanted else "change it"
        yield doc.problem(key, f"expected {_a(wanted)}, got {got}", fix)
    elif kind == "pattern":
        hint = schema.get("description") or f"it must match {rule}"
        yield doc.problem(key, f"{value!r} has the wrong form", hint)
    elif kind == "const":
        yield doc.problem(key, f"{value!r} is not supported", f"use {rule!r}")
    else:
        yield doc.problem(key, error.message, schema.get("description", "see the schema"))


def _yaml_type(json_type: str) -> str:
    return {"object": "mapping", "array": "list", "integer": "whole number"}.get(
        json_type, json_type
    )


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "mapping"


# --- typed readers ------------------------------------------------------------------------------


def load_manifest(path: Path, home: Path | None = None) -> Manifest:
    """Read, schema-check and interpret a manifest; every problem is raised at once."""
    doc = load_yaml(path, "manifest")
    problems = list(doc.problems)
    if doc.data is not None:
        problems += schema_problems(doc, "manifest")
    return interpret(doc, path, home if home is not None else Path.home(), problems)


def read_metadata(path: Path) -> Metadata:
    """Read one ``metadata.json``; a bad one raises with every problem in it."""
    doc = load_json(path, "metadata")
    problems = schema_problems(doc, "metadata")
    if problems:
        raise InvalidInputError(problems)
    return metadata_from_dict(doc.data)


def read_overrides(path: Path) -> Overrides:
    """Read one ``overrides.json``; a missing file means no overrides."""
    if not path.exists():
        return Overrides()
    doc = load_json(path, "overrides")
    problems = schema_problems(doc, "overrides")
    if problems:
        raise InvalidInputError(problems)
    return overrides_from_dict(doc.data)
