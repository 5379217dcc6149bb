"""App-version ranges: parse what people type, keep one canonical form, test membership.

A range is written in a manifest or a translation to say which versions of an app a rule applies to.
Accepted forms (several comparators, separated by commas and/or spaces, are intersected):

* PEP 440 specifiers: ``>=0.3,<0.4``, ``~=0.3``, ``==1.2.*``, ``!=1.3``, ``>1``, ``<=2``.
* any version: ``*``, ``x``, ``X`` or an empty string.
* semver caret: ``^1.2.3`` is ``>=1.2.3,<2``; ``^0.3`` is ``>=0.3,<0.4``; ``^0.0.3`` is
  ``>=0.0.3,<0.0.4`` (the leftmost non-zero component given is bumped, or the last one given when
  all are zero).
* semver tilde: ``~1.2.3`` is ``>=1.2.3,<1.3``; ``~1.2`` is ``>=1.2,<1.3``; ``~1`` is ``>=1,<2``.
  (``~=`` keeps its PEP 440 meaning.)
* wildcards: ``1.2.x``, ``1.2.X``, ``1.2.*`` are ``==1.2.*``; ``1.x`` and ``1.x.x`` are ``==1.*``.
* a bare version ``1.2.3`` or ``=1.2.3`` is ``==1.2.3``; versions may start with ``v``.
* spaces between an operator and its version are tolerated: ``>= 0.3, < 0.5``.

Unions (``||``), hyphen ranges (``1.2 - 1.4``) and arbitrary equality (``===``) are rejected.

The canonical form is ``*`` for "any version", else the string of a
:class:`packaging.specifiers.SpecifierSet` with normalised versions (sorted by packaging, e.g.
``<0.4,>=0.3``). Parsing a canonical string gives the same range back. Membership includes
pre-releases, so an app at ``0.4.0rc1`` is inside ``*`` and inside ``>=0.3``; note that PEP 440
keeps the pre-releases of an exclusive upper bound out (``0.4.0rc1`` is not inside ``<0.4``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from reconciler.errors import VersionRangeError

__all__ = ["ANY", "VersionRange", "parse_range", "parse_version"]

_ANY_TEXT = "*"
_EXPECTED = "expected a PEP 440 specifier (>=0.3,<0.4) or a semver form (^0.3, ~0.3.1, 0.3.x, *)"

# Longest operators first, so that "~=" is not read as "~" and "===" not as "==".
_OPERATOR = re.compile(r"^(===|~=|==|!=|<=|>=|<|>|=|\^|~)")
_OPERATOR_ONLY = re.compile(r"^(===|~=|==|!=|<=|>=|<|>|=|\^|~)$")
_WILDCARD_ONLY = re.compile(r"^[xX*](?:\.[xX*])*$")
_TRAILING_WILDCARDS = re.compile(r"^(?P<prefix>.+?)(?:\.[xX*])+$")


def parse_version(text: str) -> Version:
    """Parse an app version: PEP 440, with a leading ``v`` tolerated (``v0.3.62``)."""
    if not isinstance(text, str):
        raise TypeError(f"version must be a string, not {type(text).__name__}")
    try:
        return Version(text.strip())
    except InvalidVersion:
        raise VersionRangeError(
            f"invalid version {text!r}: expected a version such as 0.3.62"
        ) from None


@dataclass(frozen=True)
class VersionRange:
    """A set of app versions in canonical form; build one with :func:`parse_range`."""

    text: str
    _specifiers: SpecifierSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            canonical = _canonical_text(self.text)
        except VersionRangeError:
            canonical = None
        if canonical != self.text:
            raise VersionRangeError(
                f"version range {self.text!r} is not in canonical form; build it with parse_range()"
            )
        specifiers = SpecifierSet("" if self.text == _ANY_TEXT else self.text)
        object.__setattr__(self, "_specifiers", specifiers)

    def __str__(self) -> str:
        return self.text

    @property
    def is_any(self) -> bool:
        """True when every version is inside the range."""
        return self.text == _ANY_TEXT

    def contains(self, version: str | Version) -> bool:
        """Whether ``version`` is inside the range, pre-releases included."""
        parsed = version if isinstance(version, Version) else parse_version(version)
        return self._specifiers.contains(parsed, prereleases=True)


def parse_range(text: str) -> VersionRange:
    """Parse a version range written in any accepted form into its canonical :class:`VersionRange`.

    Raises :class:`~reconciler.errors.VersionRangeError` naming the input and the accepted forms.
    """
    return VersionRange(_canonical_text(text))


def _canonical_text(text: str) -> str:
    """The canonical text of a range written in any accepted form."""
    if not isinstance(text, str):
        raise TypeError(f"version range must be a string, not {type(text).__name__}")
    if "||" in text:
        raise _range_error(
            text, "unions with || are not supported; write one range", expected=False
        )

    specs: list[str] = []
    for part in text.split(","):
        tokens = part.split()
        if not tokens:
            if text.strip() == "":
                return _ANY_TEXT
            raise _range_error(text, "empty comparator between commas")
        if "-" in tokens:
            if len(tokens) == 3 and tokens[1] == "-":
                hint = f"write >={_strip_v(tokens[0])},<={_strip_v(tokens[2])}"
                raise _range_error(text, f"hyphen ranges are not supported; {hint}", expected=False)
            raise _range_error(text, "hyphen ranges are not supported")
        for comparator in _join_operators(tokens):
            specs.extend(_comparator_specs(text, comparator))
    return _build(text, specs)


def _join_operators(tokens: list[str]) -> list[str]:
    """Glue an operator written alone (``>=`` in ``>= 0.3``) to the version that follows it."""
    joined: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if _OPERATOR_ONLY.match(token) and following is not None and not _OPERATOR.match(following):
            joined.append(token + following)
            i += 2
        else:
            joined.append(token)
            i += 1
    return joined


def _comparator_specs(text: str, comparator: str) -> list[str]:
    """Translate one comparator into zero or more PEP 440 specifier strings."""
    match = _OPERATOR.match(comparator)
    operator = match.group(1) if match else ""
    rest = comparator[len(operator) :]
    if not rest:
        raise _range_error(text, _at(text, comparator))
    if operator == "===":
        raise _range_error(text, "arbitrary equality (===) is not supported", expected=False)
    if operator in ("^", "~"):
        return _semver_specs(text, comparator, operator, rest)
    if operator in ("", "=", "==", "!="):
        if _WILDCARD_ONLY.match(rest):
            if operator in ("", "="):
                return []
            raise _range_error(text, _at(text, comparator))
        wildcard = _TRAILING_WILDCARDS.match(rest)
        equality = "==" if operator in ("", "=") else operator
        if wildcard:
            prefix = _version(text, comparator, wildcard.group("prefix"))
            return [_checked(text, comparator, f"{equality}{prefix}.*")]
        version = _version(text, comparator, rest)
        return [_checked(text, comparator, f"{equality}{version}")]
    version = _version(text, comparator, rest)
    if operator == "~=" and len(version.release) < 2:
        detail = f"~= needs at least two version parts ({comparator}.0), or use ^ or ~"
        raise _range_error(text, detail)
    return [_checked(text, comparator, f"{operator}{version}")]


def _semver_specs(text: str, comparator: str, operator: str, rest: str) -> list[str]:
    """Translate ``^V`` or ``~V`` (trailing wildcards in ``V`` mean "not given")."""
    if _WILDCARD_ONLY.match(rest):
        return []
    wildcard = _TRAILING_WILDCARDS.match(rest)
    version = _version(text, comparator, wildcard.group("prefix") if wildcard else rest)
    release = version.release
    if operator == "^":
        nonzero = [i for i, part in enumerate(release) if part != 0]
        bump = nonzero[0] if nonzero else len(release) - 1
    else:
        bump = 1 if len(release) >= 2 else 0
    upper = [*release[:bump], release[bump] + 1]
    epoch = f"{version.epoch}!" if version.epoch else ""
    upper_text = epoch + ".".join(str(part) for part in upper)
    return [
        _checked(text, comparator, f">={version}"),
        _checked(text, comparator, f"<{upper_text}"),
    ]


def _version(text: str, comparator: str, candidate: str) -> Version:
    try:
        return Version(candidate)
    except InvalidVersion:
        raise _range_error(text, _at(text, comparator)) from None


def _checked(text: str, comparator: str, spec: str) -> str:
    """Validate one PEP 440 specifier (e.g. ``~=1`` and ``>=1+local`` are not valid)."""
    try:
        return str(Specifier(spec))
    except InvalidSpecifier:
        raise _range_error(text, _at(text, comparator)) from None


def _build(text: str, specs: list[str]) -> str:
    if not specs:
        return _ANY_TEXT
    # Equal specifiers written differently (>=1 and >=1.0) keep one spelling, chosen independently
    # of the input order, so the canonical text does not depend on it.
    unique: dict[Specifier, str] = {}
    for spec in specs:
        key = Specifier(spec)
        unique[key] = min(unique.get(key, spec), spec)
    try:
        canonical = str(SpecifierSet(",".join(sorted(unique.values()))))
    except InvalidSpecifier:  # pragma: no cover - every part was validated above
        raise _range_error(text, "") from None
    return canonical


def _strip_v(version: str) -> str:
    return version[1:] if version[:1] in ("v", "V") else version


def _at(text: str, comparator: str) -> str:
    """Name the offending comparator when it is only part of the input."""
    return "" if comparator == text.strip() else f"cannot read {comparator!r}"


def _range_error(text: str, detail: str, *, expected: bool = True) -> VersionRangeError:
    """One line: the input, what is wrong and, for unreadable input, what is accepted."""
    parts = [detail] if detail else []
    if expected:
        parts.append(_EXPECTED)
    return VersionRangeError(f"invalid version range {text!r}: {'; '.join(parts)}")


ANY = VersionRange(_ANY_TEXT)
"""The range that contains every version (``*``)."""
