"""App translations: where each kind of model goes inside one app's models folder.

A translation file (``translations/<app>_<version>_<variant>.json``, format in
``schemas/translation.schema.json``, DESIGN.md section 3.5) names an app, a range of its versions, a
variant and an ordered list of rules. This module is pure (layer L1): it reads no file.

Values, selection and matching
    :class:`Match`, :class:`Rule`, :class:`Translation`, :class:`LinkWant`; :func:`select` picks the
    one translation for an app target; :func:`links_for` says which links a model wants.

Interpreting, :func:`interpret`
    Builds a :class:`Translation` from one parsed file and checks it against the rules below.
    Reading the files, the user's folders and the bundled ones, and the schema check are
    :mod:`reconciler.translation_files` (layer L2), which calls it.

Selection, :func:`select`
    Candidates are the translations of the same app and variant whose range contains the version.
    User translations are preferred: if any user file fits, only user files are considered. The
    narrowest range wins, by :func:`range_rank`: a pin to one version (``==0.3.62``) 0, a range with
    a lower and an upper bound (``>=0.3,<0.4``, ``~=0.3``, ``0.3.x``) 1, a range with one bound or
    only exclusions (``>=0.2.7``, ``!=0.3.1``) 2, ``*`` 3. Two equally narrow candidates are an
    error, never a coin toss.

Matching, :func:`links_for`
    Each file of a model is offered to the rules in order; the first rule whose ``match`` accepts it
    decides, and a file no rule accepts gets no link. ``match`` fields are all optional (absent or
    empty means any): ``type``, ``kind`` and ``family`` list accepted values, every one of ``tags``
    must be present and none of ``exclude_tags``, and ``files`` are glob patterns (``fnmatch``,
    case-insensitive, the same on every OS) matched against the file's own name, not its folder.
    A ``file`` rule wants one link per target, named after the file; a ``folder`` rule wants the
    whole model folder linked once per target, named after the model's cleaned name, however many
    files it accepted. Targets may use the placeholders ``{family}``, ``{type}`` and ``{kind}``,
    and ``{model}``, the model's cleaned name (its own folder name in the library), for apps that
    want one folder per model (LM Studio's ``<publisher>/<model>/``, llama.cpp's router).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath

from packaging.specifiers import SpecifierSet

from reconciler.document import Document, PathKey
from reconciler.errors import (
    NamingError,
    Problem,
    TranslationError,
    VersionRangeError,
)
from reconciler.naming import check_relpath
from reconciler.versions import VersionRange, parse_range, parse_version

__all__ = [
    "EXTRA_KINDS",
    "PLACEHOLDERS",
    "LinkScope",
    "LinkWant",
    "Match",
    "Rule",
    "Translation",
    "interpret",
    "links_for",
    "range_rank",
    "rule_kinds",
    "select",
]

#: The names a target folder may use in braces; each is filled from the model.
PLACEHOLDERS: tuple[str, ...] = ("family", "kind", "model", "type")

#: What each placeholder is called in error messages.
_PLACEHOLDER_WORDS = {"model": "cleaned name"}

#: Kinds the bundled translations use beyond :data:`reconciler.model.KNOWN_KINDS`.
EXTRA_KINDS: tuple[str, ...] = ("classifier", "latent_upscaler", "model_patch")

#: The variant an app target uses when it names none, and a translation when it names none.
DEFAULT_VARIANT = "default"

_BRACED = re.compile(r"\{([^{}]*)\}")
_MODEL_MARK = "{model}"
_LIST_FIELDS = ("type", "kind", "family", "tags", "exclude_tags", "files")


class LinkScope(StrEnum):
    """What one rule links: each accepted file, or the whole model folder."""

    FILE = "file"
    FOLDER = "folder"


@dataclass(frozen=True)
class Match:
    """What a file must be for a rule. An empty tuple accepts anything (the field was absent)."""

    type: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def accepts(
        self, *, type: str, family: str, kind: str, tags: Collection[str], filename: str
    ) -> bool:
        """Whether a file named ``filename`` (a base name) of such a model is accepted."""
        return self.accepts_model(
            type=type, family=family, kind=kind, tags=tags
        ) and self.accepts_file(filename)

    def accepts_model(self, *, type: str, family: str, kind: str, tags: Collection[str]) -> bool:
        """Whether the model passes everything but the ``files`` patterns."""
        if self.type and type not in self.type:
            return False
        if self.kind and kind not in self.kind:
            return False
        if self.family and family not in self.family:
            return False
        if any(tag not in tags for tag in self.tags):
            return False
        return not any(tag in tags for tag in self.exclude_tags)

    def accepts_file(self, filename: str) -> bool:
        """Whether a file named ``filename`` (a base name) passes the ``files`` patterns."""
        return not self.files or any(_glob(filename, pattern) for pattern in self.files)


def _glob(name: str, pattern: str) -> bool:
    """Case-insensitive ``fnmatch`` that behaves the same on every OS."""
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


@dataclass(frozen=True)
class Rule:
    """One rule: files it accepts go to every target folder (relative to the app's models dir)."""

    match: Match
    targets: tuple[str, ...]
    link: LinkScope = LinkScope.FILE
    description: str = ""


@dataclass(frozen=True)
class Translation:
    """One translation file: for ``app`` at ``versions`` in ``variant``, where models go."""

    app: str
    versions: VersionRange
    variant: str
    rules: tuple[Rule, ...]
    #: The file it came from, as shown in errors.
    source: str
    description: str = ""
    #: What :func:`links_for` worked out once, not part of the value (no repr, no comparison):
    #: by (type, family, kind, tags), the positions of the rules that accept such a model but
    #: for their file patterns; by (position, type, family, kind, cleaned name or "" when the
    #: rule's targets do not use {model}), a rule's filled-in targets.
    _candidates: dict[tuple[str, str, str, tuple[str, ...]], tuple[int, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _filled: dict[tuple[int, str, str, str, str], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def rank(self) -> int:
        """How narrow its version range is; smaller is narrower (see :func:`range_rank`)."""
        return range_rank(self.versions)

    def rule_for(
        self, *, type: str, family: str, kind: str, tags: Collection[str], filename: str
    ) -> Rule | None:
        """The first rule that accepts the file, or None."""
        for rule in self.rules:
            if rule.match.accepts(
                type=type, family=family, kind=kind, tags=tags, filename=filename
            ):
                return rule
        return None


@dataclass(frozen=True)
class LinkWant:
    """One link a model wants in an app: ``<models_dir>/<folder>/<name>``.

    ``file`` is the path, relative to the model folder, of the file to link; None links the whole
    model folder.
    """

    file: str | None
    folder: str
    name: str


# --- selection ----------------------------------------------------------------------------------


def range_rank(versions: VersionRange) -> int:
    """0 for a pin to one version, 1 for a lower and an upper bound, 2 for one bound, 3 for ``*``.

    A range pins one version when it holds an ``==X`` without a wildcard (other comparators beside
    it can only narrow it further). ``~=X.Y`` and ``==X.*`` bound both sides. A range that only
    excludes versions (``!=X``) counts as one bound: narrower than ``*``, wider than a real range.
    """
    if versions.is_any:
        return 3
    lower = upper = False
    for spec in SpecifierSet(versions.text):
        operator, wildcard = spec.operator, spec.version.endswith(".*")
        if operator == "==" and not wildcard:
            return 0
        if operator in (">=", ">", "~=") or operator == "==":
            lower = True
        if operator in ("<=", "<", "~=") or operator == "==":
            upper = True
    return 1 if lower and upper else 2


def select(
    user: Sequence[Translation],
    bundled: Sequence[Translation],
    app: str,
    variant: str,
    version: str,
) -> Translation:
    """The translation for ``app`` at ``version`` in ``variant``.

    User translations win over bundled ones; among the chosen group the narrowest range wins.
    Raises :class:`~reconciler.errors.TranslationError` when none fits or two fit equally well,
    and :class:`~reconciler.errors.VersionRangeError` when ``version`` is not a version.
    """
    wanted = parse_version(version)
    for group in (user, bundled):
        candidates = [
            t
            for t in group
            if t.app == app and t.variant == variant and t.versions.contains(wanted)
        ]
        if candidates:
            break
    else:
        raise _none_fits([*user, *bundled], app, variant, version)
    best = min(t.rank for t in candidates)
    top = sorted((t for t in candidates if t.rank == best), key=lambda t: t.source)
    if len(top) > 1:
        fits = ", ".join(f"{t.source} (versions {t.versions})" for t in top)
        raise TranslationError(
            f"{len(top)} translations fit {app} {version} (variant {variant}) equally well: {fits} "
            f"(narrow the 'versions' range of one of them, e.g. an upper bound or an exact "
            f'"=={version}", or remove one)'
        )
    return top[0]


def _none_fits(
    every: Sequence[Translation], app: str, variant: str, version: str
) -> TranslationError:
    same_app = sorted(
        (t for t in every if t.app == app), key=lambda t: (t.variant, t.versions.text, t.source)
    )
    where = f"no translation for {app} {version} (variant {variant})"
    fix = "add a translation file to a folder listed under 'translations:' in the manifest"
    if not same_app:
        apps = sorted({t.app for t in every})
        known = ", ".join(apps) if apps else "none"
        return TranslationError(
            f"{where}: no translation knows the app {app!r} (known apps: {known}) "
            f"({fix}, or set 'app:' of the app target to a known app)"
        )
    ranges = "; ".join(f"variant {t.variant} versions {t.versions} in {t.source}" for t in same_app)
    return TranslationError(
        f"{where}; available for {app}: {ranges} "
        f"({fix}, or set the app target's 'version:'/'variant:' to one listed)"
    )


def rule_kinds(translations: Iterable[Translation]) -> frozenset[str]:
    """Every kind named by a rule of ``translations``."""
    return frozenset(k for t in translations for rule in t.rules for k in rule.match.kind)


# --- matching -----------------------------------------------------------------------------------


def links_for(
    translation: Translation,
    *,
    type: str,
    family: str,
    kind: str,
    tags: Sequence[str],
    files: Sequence[str],
    cleaned_name: str,
) -> tuple[LinkWant, ...]:
    """The links a model wants under ``translation``, sorted, without duplicates.

    ``files`` are paths relative to the model folder (``text_encoder/model.safetensors``). Raises
    :class:`~reconciler.errors.TranslationError` when a placeholder or the model's cleaned name
    would give an unsafe folder or link name.
    """
    # The same rules, looked at in the same order, as translation.rule_for for each file; what
    # depends on the model only is worked out once per kind of model, not once per file.
    model_key = (type, family, kind, tuple(tags))
    candidates = translation._candidates.get(model_key)
    if candidates is None:
        tagset = frozenset(tags)
        candidates = tuple(
            i
            for i, rule in enumerate(translation.rules)
            if rule.match.accepts_model(type=type, family=family, kind=kind, tags=tagset)
        )
        translation._candidates[model_key] = candidates
    rules, filled = translation.rules, translation._filled
    wants: set[LinkWant] = set()
    for file in files:
        name = file if "/" not in file and file != "." else PurePosixPath(file).name
        i = next((i for i in candidates if rules[i].match.accepts_file(name)), None)
        if i is None:
            continue
        rule = rules[i]
        model = cleaned_name if any(_MODEL_MARK in t for t in rule.targets) else ""
        folders = filled.get((i, type, family, kind, model))
        if folders is None:  # raises where it always did, and then remembers nothing
            values = {"family": family, "type": type, "kind": kind, "model": cleaned_name}
            done = []
            for target in rule.targets:
                done.append(_fill(translation, target, values))
                if rule.link is LinkScope.FOLDER:
                    _link_name(translation, cleaned_name)
            folders = filled[(i, type, family, kind, model)] = tuple(done)
        if rule.link is LinkScope.FOLDER:
            link_name = _link_name(translation, cleaned_name)
            wants.update(LinkWant(None, folder, link_name) for folder in folders)
        else:
            wants.update(LinkWant(file, folder, name) for folder in folders)
    if len(wants) == 1:
        return (wants.pop(),)
    return tuple(sorted(wants, key=lambda w: (w.folder, w.name, w.file or "")))


def _fill(translation: Translation, target: str, values: Mapping[str, str]) -> str:
    def value(found: re.Match[str]) -> str:
        key = found.group(1)
        text = values[key]
        reason = _unsafe_component(text)
        if reason:
            word = _PLACEHOLDER_WORDS.get(key, key)
            raise TranslationError(
                f"{translation.source}: target {target!r}: the model's {word} {text!r} cannot be "
                f"part of a folder name ({reason}) (give the model a plain {word}, or drop "
                f"{{{key}}} from the target)"
            )
        return text

    folder = _BRACED.sub(value, target)
    try:
        check_relpath(folder)
    except NamingError as exc:  # pragma: no cover - templates are checked when loaded
        raise TranslationError(f"{translation.source}: target {target!r}: {exc}") from None
    return folder


def _link_name(translation: Translation, cleaned_name: str) -> str:
    reason = _unsafe_component(cleaned_name)
    if reason:
        raise TranslationError(
            f"{translation.source}: cannot link a model folder as {cleaned_name!r} ({reason}) "
            f"(give the model a name with letters or digits)"
        )
    return cleaned_name


def _unsafe_component(text: str) -> str:
    """Why ``text`` cannot be one folder or file name, or "" when it can."""
    if "/" in text:
        return "it contains '/'"
    try:
        check_relpath(text)
    except NamingError as exc:
        return str(exc)
    return ""


# --- interpreting (the file reading is reconciler.translation_files, layer L2) ------------------


def interpret(
    doc: Document, schema_problems: Sequence[Problem]
) -> tuple[Translation | None, list[Problem]]:
    """Build the translation in ``doc``, or None, with every problem found, sorted by line.

    ``schema_problems`` are the JSON Schema findings for the same document; they are reported with
    the document's own problems and the semantic ones found here, which replace the schema's at the
    same place. A translation is returned only when there is no problem at all.
    """
    reader = _Reader(doc)
    translation = reader.translation()
    mine = {(p.path, p.line) for p in reader.problems}
    problems = [*doc.problems, *reader.problems]
    problems += [p for p in schema_problems if (p.path, p.line) not in mine]
    if problems:
        return None, sorted(set(problems), key=lambda p: (p.line or 0, p.path, p.message))
    return translation, []


class _Reader:
    """Builds a :class:`Translation` from a parsed document, collecting semantic problems.

    The schema is checked separately; this walks whatever shape the data has, so that both kinds
    of problem are reported in one round. A problem found here replaces the schema's at the same
    place, because it says the same thing more precisely.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def problem(self, key: PathKey, message: str, fix: str = "") -> None:
        self.problems.append(self.doc.problem(key, message, fix))

    def translation(self) -> Translation | None:
        data = self.doc.data
        if not isinstance(data, dict):
            return None
        versions = self._versions(data.get("versions"))
        rules_data = data.get("rules")
        rules: list[Rule] = []
        if isinstance(rules_data, list):
            for i, item in enumerate(rules_data):
                rule = self._rule(item, ("rules", i))
                if rule is not None:
                    rules.append(rule)
        app, variant = data.get("app"), data.get("variant", DEFAULT_VARIANT)
        if versions is None or not isinstance(app, str) or not isinstance(variant, str):
            return None
        description = data.get("description", "")
        if isinstance(description, list):
            description = "\n".join(str(line) for line in description)
        return Translation(app, versions, variant, tuple(rules), self.doc.file, str(description))

    def _versions(self, text: object) -> VersionRange | None:
        if not isinstance(text, str):
            return None  # the schema reports it
        try:
            return parse_range(text)
        except VersionRangeError as exc:
            self.problem(("versions",), str(exc), 'write e.g. ">=0.2.7", ">=0.2.7,<0.3" or "*"')
            return None

    def _rule(self, item: object, key: PathKey) -> Rule | None:
        if not isinstance(item, dict):
            return None
        match = self._match(item.get("match", {}), (*key, "match"))
        targets = self._targets(item.get("targets"), (*key, "targets"))
        link = item.get("link", LinkScope.FILE.value)
        description = item.get("description", "")
        if match is None or targets is None or link not in (s.value for s in LinkScope):
            return None
        return Rule(match, targets, LinkScope(link), str(description))

    def _list(self, value: object, key: PathKey, example: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            self.problem(key, "expected a list, got a single string", f"write [{_quoted(value)}]")
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None  # the schema reports it
        if not value:
            self.problem(key, "the list is empty, so nothing could match", f"write e.g. {example}")
            return None
        return tuple(value)

    def _match(self, data: object, key: PathKey) -> Match | None:
        if not isinstance(data, dict):
            return None
        fields: dict[str, tuple[str, ...]] = {}
        ok = True
        examples = {
            "type": '["diffusion"]',
            "kind": '["lora"]',
            "family": '["sdxl"]',
            "tags": '["base"]',
            "exclude_tags": '["nsfw"]',
            "files": '["*.safetensors"]',
        }
        for name in _LIST_FIELDS:
            if name not in data:
                continue
            values = self._list(data[name], (*key, name), examples[name])
            if values is None:
                ok = False
            else:
                fields[name] = values
        for i, pattern in enumerate(fields.get("files", ())):
            if "/" in pattern or "\\" in pattern:
                self.problem(
                    (*key, "files", i),
                    f"pattern {pattern!r} names a folder, but patterns match the file name only",
                    f"write {_quoted(pattern.replace(chr(92), '/').rsplit('/', 1)[-1])}",
                )
                ok = False
        both = sorted(set(fields.get("tags", ())) & set(fields.get("exclude_tags", ())))
        if both:
            self.problem(
                (*key, "exclude_tags"),
                f"{', '.join(both)} is both required and excluded, so the rule never matches",
                "remove it from 'tags' or from 'exclude_tags'",
            )
            ok = False
        return Match(**fields) if ok else None

    def _targets(self, data: object, key: PathKey) -> tuple[str, ...] | None:
        targets = self._list(data, key, '["loras"]')
        if targets is None:
            return None
        ok = True
        for i, target in enumerate(targets):
            found = _target_problem(target)
            if found is not None:
                self.problem((*key, i), *found)
                ok = False
        return targets if ok else None


def _target_problem(target: str) -> tuple[str, str] | None:
    """What is wrong with a target template, as (message, fix), or None."""
    unknown = sorted({n for n in _BRACED.findall(target) if n not in PLACEHOLDERS})
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        return f"unknown placeholder {names}", "use only {family}, {type}, {kind} or {model}"
    filled = _BRACED.sub("x", target)
    if "{" in filled or "}" in filled:
        return (
            f"target {target!r} has a '{{' or '}}' outside a placeholder",
            "write placeholders as {family}, {type}, {kind} or {model}",
        )
    try:
        check_relpath(filled)
    except NamingError as exc:
        # The message quotes the filled-in path; say it about the template the user wrote.
        reason = str(exc).split(": ", 1)[-1]
        return (
            f"target {target!r} is not a safe relative folder: {reason}",
            "write a folder inside the app's models folder, such as 'loras' or 'loras/{family}'",
        )
    return None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
