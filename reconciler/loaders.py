"""Reading input files: YAML with line numbers and no duplicate keys, JSON, and JSON Schema checks.

Everything here turns a file on disk into plain data plus a :class:`Positions` map (field path ->
line), or into :class:`~reconciler.errors.Problem` values that name the file, line, field and fix.
``jsonschema`` is imported lazily: it costs ~150 ms of start-up and most commands never need it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.document import Document, PathKey, Positions, field_path
from reconciler.errors import InvalidInputError, Problem
from reconciler.manifest import interpret
from reconciler.metadata import Malformed, metadata_from_dict, overrides_from_dict
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
        trouble = _alias_trouble(root, text)
        if trouble:
            raise InvalidInputError([Problem(file, None, "", trouble, "write the values out")])
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
    except ValueError as exc:  # a value YAML cannot convert: an integer of 4300+ digits
        raise InvalidInputError(
            [Problem(file, None, "", f"YAML error: {exc}", "fix the value")]
        ) from None
    finally:
        loader.dispose()
    return Document(file, data, Positions(lines), tuple(problems))


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _Slow(Exception):
    """The fast reader met something only :func:`parse_yaml` reports or handles exactly."""


def parse_yaml_fast(text: str, file: str) -> Document | None:
    """:func:`parse_yaml` for a document it would find no problem in, or None.

    Builds the same data, but records the lines of the top two levels only (``models[3]``, not
    ``models[3].source``): enough for the values a good document gives, not for problems. Returns
    None, rather than anything less than exact, at the first sign of a problem or of a rare YAML
    feature (duplicate keys, tags other than plain mappings and lists, merge keys, keys that are
    not scalars, any YAML error): the caller then takes :func:`parse_yaml`, which reports them.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(file, None, Positions(), ())
        if _alias_trouble(root, text):
            return None
        data, lines = _fast_root(loader, root)
    except (_Slow, yaml.YAMLError, ValueError, RecursionError):
        return None
    finally:
        loader.dispose()
    return Document(file, data, Positions(lines), ())


#: Where an anchor (``&name``) may start; any other ``&`` (``?a=1&b=2`` in a URL) is text.
_ANCHOR = re.compile(r"(?:^|[\s\[{,])&\S", re.MULTILINE).search


def _alias_trouble(root: yaml.Node | None, text: str) -> str:
    """Why the aliases of the document ``root`` cannot be expanded, or "": an alias inside the
    node it names (the data would be infinite), or aliases expanding to far more nodes than the
    text holds (a "billion laughs" document would take hours and all memory to read)."""
    if root is None or not _ANCHOR(text):
        return ""
    limit = 100_000 + 4 * len(text)
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if id(node) in sizes:
            continue
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                return "a YAML alias (*name) is used inside the value its anchor (&name) names"
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] > limit:
        return f"YAML aliases (*name) expand this document to more than {limit} values"
    return ""


def _fast_root(loader: yaml.SafeLoader, root: yaml.Node) -> tuple[Any, dict[PathKey, int]]:
    """The document's data, and the lines :func:`_construct` gives its top two levels."""
    construct = loader.construct_object
    scalar_node, mapping_node, sequence_node = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode

    def key_of(node: yaml.Node) -> str:
        if type(node) is not scalar_node:
            raise _Slow
        if node.tag == _STR:
            name: Any = node.value
        elif node.tag.startswith("tag:yaml.org,2002:") and node.tag[18:] in ("merge", "value"):
            raise _Slow  # flatten_mapping's business
        else:
            name = construct(node, deep=True)
        return name if isinstance(name, str) else str(name)

    def value(node: yaml.Node) -> Any:
        kind = type(node)
        if kind is scalar_node:
            return node.value if node.tag == _STR else construct(node, deep=True)
        if kind is mapping_node:
            if node.tag != _MAP:
                raise _Slow
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                name = key_of(key_node)
                if name in out:
                    raise _Slow
                out[name] = value(value_node)
            return out
        if kind is sequence_node and node.tag == _SEQ:
            return [value(item) for item in node.value]
        raise _Slow

    lines: dict[PathKey, int] = {(): root.start_mark.line + 1}
    if type(root) is not mapping_node:
        return value(root), lines
    if root.tag != _MAP:
        raise _Slow
    data: dict[str, Any] = {}
    for key_node, value_node in root.value:
        name = key_of(key_node)
        if name in data:
            raise _Slow
        data[name] = value(value_node)
        top: PathKey = (name,)
        lines[top] = key_node.start_mark.line + 1
        if type(value_node) is sequence_node:
            for i, item in enumerate(value_node.value):
                lines[(name, i)] = item.start_mark.line + 1
        elif type(value_node) is mapping_node:
            for child_key, _ in value_node.value:
                lines[(name, key_of(child_key))] = child_key.start_mark.line + 1
    return data, lines


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
        own = {id(k) for k, _ in node.value}
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<): merged pairs come first
        out: dict[str, Any] = {}
        merged: set[str] = set()  # keys whose value came from a merge: the mapping's own win
        for key_node, value_node in node.value:
            name = loader.construct_object(key_node, deep=True)
            if not isinstance(name, str):
                name = str(name)
            child = (*key, name)
            if id(key_node) not in own:
                merged.add(name)
            elif name in merged:
                merged.discard(name)
                del out[name]
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
    except RecursionError:
        raise InvalidInputError(
            [Problem(file, None, "", "invalid JSON: nested too deeply", "fix the JSON")]
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InvalidInputError(
            [Problem(file, None, "", f"invalid JSON: {exc}", "fix the JSON")]
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
    """Every JSON Schema violation in ``doc``, each rendered with its line and a fix.

    A valid document is recognised by :func:`schema_check` without ``jsonschema`` (which costs
    ~150 ms to import and ~100 us a manifest entry); only a document it refuses is handed to
    ``jsonschema``, which finds and explains every violation.
    """
    check = schema_check(schema)
    if check is not None and check(doc.data):
        return []
    errors = sorted(validator(schema).iter_errors(doc.data), key=lambda e: list(map(str, e.path)))
    return [p for error in errors for p in _explain(doc, error)]


Check = Callable[[Any], bool]


@cache
def schema_check(name: str) -> Check | None:
    """A predicate that is True only for data that the bundled schema ``name`` accepts.

    The schema is compiled into nested closures, keyword by keyword, for the part of JSON Schema
    2020-12 the bundled schemas use. It may refuse something the schema accepts (it is strict
    about ``const``, ``enum`` and ``uniqueItems`` on numbers, which jsonschema compares as JSON
    values): then :func:`schema_problems` asks ``jsonschema``, which finds nothing. It never
    accepts what the schema refuses. None when the schema uses a keyword it does not know.
    """
    schema = json.loads(schema_text(name))
    try:
        return _Compiler(schema).compile(schema)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


#: Keywords that only annotate (``format`` asserts nothing: no format checker is used).
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default", "format"}
)
_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (type(v) is int) or (isinstance(v, float) and v.is_integer()),
}


def _same(value: Any, wanted: Any) -> bool:
    """``value`` equals ``wanted`` and is of the same JSON type (stricter than jsonschema)."""
    return type(value) is type(wanted) and value == wanted and type(value) in (str, int, bool)


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}
        self.keywords: dict[str, Callable[[Any], Check]] = {
            "$ref": self._ref,
            "type": self._type,
            "const": self._const,
            "enum": self._enum,
            "required": self._required,
            "propertyNames": self._property_names,
            "items": self._items,
            "pattern": self._pattern,
            "minLength": self._min_length,
            "maxLength": self._max_length,
            "minItems": self._min_items,
            "minimum": self._minimum,
            "uniqueItems": self._unique_items,
            "oneOf": self._one_of,
        }

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise _Unsupported
        checks: list[Check] = []
        for key, rule in schema.items():
            if key in _ANNOTATIONS:
                continue
            if key in ("properties", "additionalProperties"):
                if key == "additionalProperties" and "properties" in schema:
                    continue  # compiled with "properties"
                checks.append(self._object(schema))
                continue
            build = self.keywords.get(key)
            if build is None:
                raise _Unsupported(key)
            checks.append(build(rule))
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(check(v) for check in checks)

    def _ref(self, ref: str) -> Check:
        if not ref.startswith("#/$defs/") or "/" in ref[8:] or "~" in ref:
            raise _Unsupported(ref)
        name = ref[8:]
        if ref not in self.refs:
            self.refs[ref] = lambda v: False  # in case of a cycle; replaced just below
            target = self.root.get("$defs", {}).get(name)
            if target is None:
                raise _Unsupported(ref)
            self.refs[ref] = self.compile(target)
        refs = self.refs
        return lambda v: refs[ref](v)

    def _type(self, rule: str | list[str]) -> Check:
        names = [rule] if isinstance(rule, str) else list(rule)
        if any(n not in _TYPES for n in names):
            raise _Unsupported(rule)
        tests = [_TYPES[n] for n in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(test(v) for test in tests)

    def _const(self, rule: Any) -> Check:
        return lambda v: _same(v, rule)

    def _enum(self, rule: list[Any]) -> Check:
        return lambda v: any(_same(v, choice) for choice in rule)

    def _required(self, rule: list[str]) -> Check:
        names = tuple(rule)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)

    def _object(self, schema: dict[str, Any]) -> Check:
        properties = {k: self.compile(sub) for k, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        other = None if extra is False else self.compile(extra)

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, item in v.items():
                sub = properties.get(key, other)
                if sub is None or not sub(item):
                    return False
            return True

        return check

    def _property_names(self, rule: Any) -> Check:
        names = self.compile(rule)
        return lambda v: not isinstance(v, dict) or all(names(k) for k in v)

    def _items(self, rule: Any) -> Check:
        item = self.compile(rule)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)

    def _pattern(self, rule: str) -> Check:
        search = re.compile(rule).search
        return lambda v: not isinstance(v, str) or search(v) is not None

    def _min_length(self, rule: int) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= rule

    def _max_length(self, rule: int) -> Check:
        return lambda v: not isinstance(v, str) or len(v) <= rule

    def _min_items(self, rule: int) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= rule

    def _minimum(self, rule: int | float) -> Check:
        def check(v: Any) -> bool:
            return isinstance(v, bool) or not isinstance(v, int | float) or v >= rule

        return check

    def _unique_items(self, rule: bool) -> Check:
        if not rule:
            return lambda v: True
        # Only lists of strings are judged here; anything else is left to jsonschema.
        return lambda v: (
            not isinstance(v, list) or (all(type(x) is str for x in v) and len(set(v)) == len(v))
        )

    def _one_of(self, rule: list[Any]) -> Check:
        branches = [self.compile(sub) for sub in rule]
        return lambda v: sum(1 for branch in branches if branch(v)) == 1


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


def load_manifest(path: Path, home: Path | None = None, *, text: str | None = None) -> Manifest:
    """Read, schema-check and interpret a manifest; every problem is raised at once.

    ``text`` is the manifest's text when the caller has read it already (with :func:`read_text`).
    A good manifest takes the fast way (:func:`parse_yaml_fast`, :func:`schema_check`); at the
    first problem on it, the manifest is read again the thorough way, which finds every problem
    and its line.
    """
    from reconciler.library import gc_paused  # library imports this module

    home = home if home is not None else Path.home()
    name = display_name(path)
    if text is None:
        text = read_text(path, "manifest")
    with gc_paused():  # a big manifest is ~10 lasting objects a model: nothing to collect
        fast = parse_yaml_fast(text, name)
        check = schema_check("manifest")
        if fast is not None and fast.data is not None and check is not None and check(fast.data):
            try:
                return interpret(fast, path, home, [])
            except InvalidInputError:
                pass  # reported below, with every line
    doc = parse_yaml(text, name)
    problems = list(doc.problems)
    if doc.data is not None:
        problems += schema_problems(doc, "manifest")
    return interpret(doc, path, home, problems)


def read_metadata(path: Path) -> Metadata:
    """Read one ``metadata.json``; a bad one raises with every problem in it."""
    doc = load_json(path, "metadata")
    problems = schema_problems(doc, "metadata")
    if problems:
        raise InvalidInputError(problems)
    try:
        return metadata_from_dict(doc.data)
    except Malformed as exc:  # the fast reader is stricter than the schema in a few corners
        problem = Problem(doc.file, None, str(exc), "has the wrong form", "see the schema")
        raise InvalidInputError([problem]) from None


def read_overrides(path: Path) -> Overrides:
    """Read one ``overrides.json``; a missing file means no overrides."""
    if not path.exists():
        return Overrides()
    doc = load_json(path, "overrides")
    problems = schema_problems(doc, "overrides")
    if problems:
        raise InvalidInputError(problems)
    try:
        return overrides_from_dict(doc.data)
    except Malformed as exc:  # the fast reader is stricter than the schema in a few corners
        problem = Problem(doc.file, None, str(exc), "has the wrong form", "see the schema")
        raise InvalidInputError([problem]) from None
