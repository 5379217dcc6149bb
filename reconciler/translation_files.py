"""Reading translation files (layer L2): the user's folders and the ones bundled with the package.

Each file is parsed (JSON, with the lines of a YAML reading of the same text), checked against
``schemas/translation.schema.json`` and handed to :func:`reconciler.translations.interpret`, the
pure part that builds the :class:`~reconciler.translations.Translation` and finds the semantic
problems. :func:`load_translations` raises one :class:`~reconciler.errors.InvalidInputError`
holding every problem of every file; :func:`translation_problems` returns those problems instead,
plus translations that always tie, for ``mlib validate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from reconciler.document import Document
from reconciler.errors import InvalidInputError, Problem
from reconciler.loaders import display_name, parse_json, parse_yaml, read_text, schema_problems
from reconciler.translations import Translation, interpret

__all__ = ["load_translations", "read_translation", "translation_problems"]

_BUNDLED_PREFIX = "<bundled>/translations/"


def load_translations(
    folders: Sequence[Path], *, bundled: bool = True
) -> tuple[list[Translation], list[Translation]]:
    """Read ``(user, bundled)`` translations: each folder's ``*.json`` in order, then the package's.

    Files in one folder are read in name order; other files and subfolders are ignored. Raises one
    :class:`~reconciler.errors.InvalidInputError` with every problem of every file, including a
    folder that does not exist.
    """
    user, shipped, problems = _load_all(folders, bundled=bundled)
    if problems:
        raise InvalidInputError(problems)
    return user, shipped


def translation_problems(folders: Sequence[Path], *, bundled: bool = True) -> list[Problem]:
    """Every problem :func:`load_translations` would raise, plus translations that always tie.

    Two translations in the same group (user or bundled) with the same app, variant and range can
    never be told apart by :func:`~reconciler.translations.select`; ``mlib validate`` reports that
    before any plan does.
    """
    user, shipped, problems = _load_all(folders, bundled=bundled)
    for group in (user, shipped):
        first: dict[tuple[str, str, str], Translation] = {}
        for t in group:
            key = (t.app, t.variant, t.versions.text)
            if key in first:
                other = first[key].source
                problems.append(
                    Problem(
                        t.source,
                        None,
                        "versions",
                        f"same app, variant and versions ({t.versions}) as {other}, so neither "
                        f"can be chosen",
                        "narrow the range of one of them, or remove one",
                    )
                )
            else:
                first[key] = t
    return problems


def read_translation(text: str, source: str) -> Translation:
    """Parse and check one translation file's text; ``source`` names it in errors."""
    translation, problems = _read(text, source)
    if problems or translation is None:
        raise InvalidInputError(problems)
    return translation


def _load_all(
    folders: Sequence[Path], *, bundled: bool
) -> tuple[list[Translation], list[Translation], list[Problem]]:
    user: list[Translation] = []
    problems: list[Problem] = []
    for folder in folders:
        shown = display_name(folder)
        if not folder.exists():
            problems.append(
                Problem(
                    shown,
                    None,
                    "",
                    "translation folder not found",
                    "create it, or remove it from 'translations:' in the manifest",
                )
            )
            continue
        if not folder.is_dir():
            problems.append(
                Problem(
                    shown, None, "", "not a folder", "list folders of translation files, not files"
                )
            )
            continue
        for path in sorted(p for p in folder.glob("*.json") if p.is_file()):
            try:
                text = read_text(path, "translation")
            except InvalidInputError as exc:
                problems.extend(exc.problems)
                continue
            translation, found = _read(text, display_name(path))
            problems.extend(found)
            if translation is not None:
                user.append(translation)
    shipped: list[Translation] = []
    if bundled:
        try:
            shipped = list(_bundled())
        except InvalidInputError as exc:  # pragma: no cover - the bundled files are tested
            problems.extend(exc.problems)
    return user, shipped, problems


@cache
def _bundled() -> tuple[Translation, ...]:
    """The package's translations, read once per process."""
    folder = resources.files("reconciler") / "translations"
    if not folder.is_dir():  # pragma: no cover - the package always ships the folder
        return ()
    out: list[Translation] = []
    problems: list[Problem] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json") or not entry.is_file():
            continue
        translation, found = _read(entry.read_text(encoding="utf-8"), _BUNDLED_PREFIX + entry.name)
        problems.extend(found)
        if translation is not None:
            out.append(translation)
    if problems:  # pragma: no cover - the bundled files are tested
        raise InvalidInputError(problems)
    return tuple(out)


def _read(text: str, source: str) -> tuple[Translation | None, list[Problem]]:
    """Parse, schema-check and interpret one file; every problem is returned, none raised."""
    try:
        doc = _parse(text, source)
    except InvalidInputError as exc:
        return None, list(exc.problems)
    return interpret(doc, schema_problems(doc, "translation"))


def _parse(text: str, source: str) -> Document:
    """JSON data, with the line of every value when the same text reads as the same YAML.

    JSON is (nearly) a subset of YAML, and the YAML reader records lines and duplicate keys, which
    ``json`` silently collapses to the last one. When YAML reads something else, lines are left out.
    """
    doc = parse_json(text, source)
    try:
        shadow = parse_yaml(text, source)
    except InvalidInputError:
        return doc
    if shadow.problems or shadow.data == doc.data:
        return Document(source, doc.data, shadow.positions, shadow.problems)
    return doc
