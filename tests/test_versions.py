"""Tests for reconciler.versions: accepted forms, canonical text, membership, rejections."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from reconciler.errors import ReconcilerError, VersionRangeError
from reconciler.versions import ANY, VersionRange, parse_range, parse_version

# --------------------------------------------------------------------------------------------------
# Table tests: accepted forms and their canonical text
# --------------------------------------------------------------------------------------------------

CANONICAL = [
    # PEP 440 (packaging sorts the specifiers)
    (">=0.3,<0.4", "<0.4,>=0.3"),
    ("<0.4,>=0.3", "<0.4,>=0.3"),
    ("~=0.3", "~=0.3"),
    ("~=0.3.1", "~=0.3.1"),
    ("==1.2.*", "==1.2.*"),
    ("!=1.3", "!=1.3"),
    (">1", ">1"),
    ("<=2", "<=2"),
    ("==1.2.3", "==1.2.3"),
    (">=1.0rc1", ">=1.0rc1"),
    (">=1.0-beta.2", ">=1.0b2"),
    # any
    ("*", "*"),
    ("x", "*"),
    ("X", "*"),
    ("", "*"),
    ("   ", "*"),
    ("x.x", "*"),
    # semver caret
    ("^1.2.3", "<2,>=1.2.3"),
    ("^0.3", "<0.4,>=0.3"),
    ("^0.3.1", "<0.4,>=0.3.1"),
    ("^0.0.3", "<0.0.4,>=0.0.3"),
    ("^1", "<2,>=1"),
    ("^0", "<1,>=0"),
    ("^0.0", "<0.1,>=0.0"),
    ("^0.0.0", "<0.0.1,>=0.0.0"),
    ("^1.x", "<2,>=1"),
    ("^v1.2", "<2,>=1.2"),
    ("^ 1.2", "<2,>=1.2"),
    # semver tilde
    ("~1.2.3", "<1.3,>=1.2.3"),
    ("~1.2", "<1.3,>=1.2"),
    ("~1", "<2,>=1"),
    ("~0.3.1", "<0.4,>=0.3.1"),
    ("~1.2.x", "<1.3,>=1.2"),
    # wildcards
    ("1.2.x", "==1.2.*"),
    ("1.2.X", "==1.2.*"),
    ("1.2.*", "==1.2.*"),
    ("1.x", "==1.*"),
    ("1.x.x", "==1.*"),
    ("v1.2.x", "==1.2.*"),
    ("!=1.2.x", "!=1.2.*"),
    # bare and "=" versions, leading v
    ("1.2.3", "==1.2.3"),
    ("=1.2.3", "==1.2.3"),
    ("v1.2.3", "==1.2.3"),
    (">=v0.3", ">=0.3"),
    ("  >=0.3  ", ">=0.3"),
    # several comparators: spaces, commas, both, spaces after operators
    (">=0.3 <0.5", "<0.5,>=0.3"),
    (">= 0.3, < 0.5", "<0.5,>=0.3"),
    (">=0.3, <0.5 !=0.4.1", "!=0.4.1,<0.5,>=0.3"),
    (">=0.3 , <0.5", "<0.5,>=0.3"),
    ("^0.3 !=0.3.2", "!=0.3.2,<0.4,>=0.3"),
    ("1.x >=1.4", "==1.*,>=1.4"),
    (">=1 *", ">=1"),
    # equal specifiers written differently keep one spelling whatever the order
    (">=1,>=1.0", ">=1"),
    (">=1.0,>=1", ">=1"),
    (">=1 >=1", ">=1"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_text(text: str, canonical: str) -> None:
    result = parse_range(text)
    assert result.text == canonical
    assert str(result) == canonical
    assert parse_range(canonical) == result


EQUIVALENT = [
    (">=0.3,<0.4", "<0.4,>=0.3"),
    (">=0.3,<0.4", ">=0.3 <0.4"),
    (">=0.3,<0.4", "^0.3"),
    (">=0.3,<0.4", "~0.3"),
    ("^1.2.3", ">=1.2.3,<2"),
    ("~1.2.3", ">=1.2.3 <1.3"),
    ("1.2.x", "==1.2.*"),
    ("*", ""),
]


@pytest.mark.parametrize(("left", "right"), EQUIVALENT)
def test_equivalent_inputs_are_equal(left: str, right: str) -> None:
    assert parse_range(left) == parse_range(right)
    assert hash(parse_range(left)) == hash(parse_range(right))


def test_different_ranges_are_not_equal() -> None:
    assert parse_range("^0.3") != parse_range("^0.4")
    assert parse_range("~1.2") != parse_range("^1.2")
    assert parse_range("*") != parse_range(">=0")


# --------------------------------------------------------------------------------------------------
# Table tests: membership
# --------------------------------------------------------------------------------------------------

MEMBERSHIP = [
    # any, including pre-releases
    ("*", "0.4.0rc1", True),
    ("*", "0", True),
    ("", "2024.1.1", True),
    # exclusive upper bound
    (">=0.3,<0.4", "0.3", True),
    (">=0.3,<0.4", "0.3.99", True),
    (">=0.3,<0.4", "0.4", False),
    (">=0.3,<0.4", "0.4.0", False),
    (">=0.3,<0.4", "0.2.9", False),
    # pre-releases: included, except those of an exclusive upper bound (PEP 440)
    (">=0.3", "0.4.0rc1", True),
    (">=0.3,<0.4", "0.4.0rc1", False),
    (">=0.3,<0.4", "0.3.5rc1", True),
    (">=0.3", "0.3rc1", False),
    ("^0.3", "0.3.1.dev2", True),
    # caret, including ^0.x narrowing
    ("^1.2.3", "1.2.3", True),
    ("^1.2.3", "1.9.0", True),
    ("^1.2.3", "1.2.2", False),
    ("^1.2.3", "2.0.0", False),
    ("^0.3", "0.3.62", True),
    ("^0.3", "0.4.0", False),
    ("^0.3", "0.2.9", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0.3", "0.0.3.1", True),
    ("^0.0", "0.0.9", True),
    ("^0.0", "0.1", False),
    ("^0", "0.9.9", True),
    ("^0", "1.0", False),
    # tilde
    ("~1.2.3", "1.2.99", True),
    ("~1.2.3", "1.3.0", False),
    ("~1.2.3", "1.2.2", False),
    ("~1", "1.99", True),
    ("~1", "2", False),
    ("~=0.3", "0.99", True),
    ("~=0.3", "1.0", False),
    ("~=0.3.1", "0.3.5", True),
    ("~=0.3.1", "0.4", False),
    # wildcards: 1.2.x does not contain 1.20
    ("1.2.x", "1.2", True),
    ("1.2.x", "1.2.9", True),
    ("1.2.x", "1.20", False),
    ("1.2.x", "1.20.0", False),
    ("1.2.x", "1.3", False),
    ("1.x", "1.99.1", True),
    ("1.x", "10.0", False),
    # exact versions, local and leading v
    ("1.2.3", "1.2.3", True),
    ("1.2.3", "1.2.3.0", True),
    ("1.2.3", "1.2.4", False),
    ("!=1.3", "1.3.0", False),
    ("!=1.3", "1.3.1", True),
    (">=0.3", "v0.3.62", True),
    # intersections
    (">=0.3 <0.5 !=0.4.1", "0.4.1", False),
    (">=0.3 <0.5 !=0.4.1", "0.4.2", True),
    ("1.x >=1.4", "1.3", False),
    ("1.x >=1.4", "1.4", True),
]


@pytest.mark.parametrize(("text", "version", "expected"), MEMBERSHIP)
def test_membership(text: str, version: str, expected: bool) -> None:
    assert parse_range(text).contains(version) is expected


def test_contains_accepts_a_parsed_version() -> None:
    assert parse_range("^0.3").contains(Version("0.3.62"))
    assert not parse_range("^0.3").contains(Version("0.4"))


def test_contains_rejects_an_invalid_version() -> None:
    with pytest.raises(VersionRangeError, match="'abc'"):
        parse_range("*").contains("abc")


# --------------------------------------------------------------------------------------------------
# Table tests: rejections
# --------------------------------------------------------------------------------------------------

REJECTED = [
    ("banana", "expected a PEP 440 specifier"),
    (">=", "expected a PEP 440 specifier"),
    ("^", "expected a PEP 440 specifier"),
    ("~", "expected a PEP 440 specifier"),
    ("1..2", "expected a PEP 440 specifier"),
    (">=1.0 ||", "unions with || are not supported; write one range"),
    (">=1 || <0.5", "unions with || are not supported; write one range"),
    ("1.2 - 1.4", "write >=1.2,<=1.4"),
    ("v1.2 - v1.4", "write >=1.2,<=1.4"),
    ("===1.0", "==="),
    ("===x", "==="),
    ("~=1", "~= needs at least two version parts"),
    (">=1.0+local", "expected a PEP 440 specifier"),
    (">=1 banana", "cannot read 'banana'"),
    (">= <1", "cannot read '>='"),
    ("1.x.2", "expected a PEP 440 specifier"),
    ("!=*", "expected a PEP 440 specifier"),
    (",", "empty comparator"),
    (">=1,,<2", "empty comparator"),
    (">=1,", "empty comparator"),
    (">=0.3<0.5", "expected a PEP 440 specifier"),
    ("^1.2.3.x.4", "expected a PEP 440 specifier"),
    (">=1.x", "expected a PEP 440 specifier"),
    ("1.2rc1.x", "expected a PEP 440 specifier"),
]


@pytest.mark.parametrize(("text", "fragment"), REJECTED)
def test_rejected(text: str, fragment: str) -> None:
    with pytest.raises(VersionRangeError) as info:
        parse_range(text)
    message = str(info.value)
    assert message.startswith(f"invalid version range {text!r}: ")
    assert fragment in message
    assert "\n" not in message


def test_error_is_a_value_error_and_a_reconciler_error() -> None:
    with pytest.raises(ValueError):
        parse_range("banana")
    with pytest.raises(ReconcilerError):
        parse_range("banana")


def test_exact_message_for_a_lone_caret() -> None:
    with pytest.raises(VersionRangeError) as info:
        parse_range("^")
    assert str(info.value) == (
        "invalid version range '^': expected a PEP 440 specifier (>=0.3,<0.4) "
        "or a semver form (^0.3, ~0.3.1, 0.3.x, *)"
    )


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_range(1.2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_version(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# VersionRange and parse_version
# --------------------------------------------------------------------------------------------------


def test_version_range_value_behaviour() -> None:
    r = parse_range(">=0.3,<0.4")
    assert r == VersionRange("<0.4,>=0.3")
    assert not r.is_any
    assert parse_range("*").is_any
    assert parse_range("x") == ANY
    assert ANY.text == "*"
    assert len({r, parse_range("^0.3"), ANY, parse_range("")}) == 2
    with pytest.raises(AttributeError):
        r.text = "*"  # type: ignore[misc]


@pytest.mark.parametrize("text", [">=0.3,<0.4", "banana", "", "^0.3", ">=v0.3"])
def test_version_range_constructor_requires_canonical_text(text: str) -> None:
    with pytest.raises(VersionRangeError, match="canonical"):
        VersionRange(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.3.62", "0.3.62"),
        ("v0.3.62", "0.3.62"),
        ("V1.0", "1.0"),
        (" 1.2 ", "1.2"),
        ("0.4.0rc1", "0.4.0rc1"),
        ("1.2.3-beta.1", "1.2.3b1"),
        ("2024.10", "2024.10"),
    ],
)
def test_parse_version(text: str, expected: str) -> None:
    assert parse_version(text) == Version(expected)
    assert str(parse_version(text)) == expected


@pytest.mark.parametrize("text", ["abc", "", "1..2", "^1.2", "1.2.x"])
def test_parse_version_rejects(text: str) -> None:
    with pytest.raises(VersionRangeError) as info:
        parse_version(text)
    assert str(info.value) == f"invalid version {text!r}: expected a version such as 0.3.62"


# --------------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)

parts = st.integers(min_value=0, max_value=4)
releases = st.lists(parts, min_size=1, max_size=4).map(tuple)
release3 = st.tuples(parts, parts, parts)


def _dotted(numbers: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in numbers)


def _pad(numbers: tuple[int, ...], size: int = 5) -> tuple[int, ...]:
    return numbers + (0,) * (size - len(numbers))


@st.composite
def comparators(draw: st.DrawFn) -> str:
    """One comparator in any accepted spelling."""
    kind = draw(st.sampled_from(["ordered", "compatible", "wildcard", "semver", "bare", "any"]))
    v_prefix = draw(st.sampled_from(["", "v"]))
    gap = draw(st.sampled_from(["", " "]))
    if kind == "any":
        return draw(st.sampled_from(["*", "x", "X"]))
    if kind == "compatible":
        release = draw(st.lists(parts, min_size=2, max_size=4).map(tuple))
        return f"~={gap}{v_prefix}{_dotted(release)}"
    release = draw(releases)
    if kind == "ordered":
        operator = draw(st.sampled_from([">=", "<=", ">", "<", "==", "!="]))
        suffix = draw(st.sampled_from(["", "rc1", ".post2", ".dev0", "b3"]))
        return f"{operator}{gap}{v_prefix}{_dotted(release)}{suffix}"
    if kind == "wildcard":
        operator = draw(st.sampled_from(["", "=", "==", "!="]))
        stars = draw(st.lists(st.sampled_from([".x", ".X", ".*"]), min_size=1, max_size=2))
        return f"{operator}{v_prefix}{_dotted(release)}{''.join(stars)}"
    if kind == "semver":
        operator = draw(st.sampled_from(["^", "~"]))
        return f"{operator}{gap}{v_prefix}{_dotted(release[:3])}"
    operator = draw(st.sampled_from(["", "="]))
    return f"{operator}{v_prefix}{_dotted(release)}"


comparator_lists = st.lists(comparators(), min_size=1, max_size=4)
separators = st.sampled_from([",", " ", ", ", " , ", "  ", " ,"])


@st.composite
def range_texts(draw: st.DrawFn) -> tuple[list[str], str]:
    items = draw(comparator_lists)
    text = items[0]
    for item in items[1:]:
        text += draw(separators) + item
    return items, text


@PROPERTY_SETTINGS
@given(range_texts())
def test_parse_is_idempotent(sample: tuple[list[str], str]) -> None:
    _, text = sample
    first = parse_range(text)
    second = parse_range(str(first))
    assert second == first
    assert str(second) == str(first)


@PROPERTY_SETTINGS
@given(range_texts(), releases)
def test_several_comparators_are_intersected(
    sample: tuple[list[str], str], version: tuple[int, ...]
) -> None:
    items, text = sample
    v = _dotted(version)
    expected = all(parse_range(item).contains(v) for item in items)
    assert parse_range(text).contains(v) is expected


@PROPERTY_SETTINGS
@given(comparator_lists)
def test_space_separated_equals_comma_separated(items: list[str]) -> None:
    assert parse_range(" ".join(items)) == parse_range(",".join(items))


@PROPERTY_SETTINGS
@given(comparator_lists)
def test_comparator_order_does_not_matter(items: list[str]) -> None:
    assert parse_range(",".join(items)) == parse_range(",".join(reversed(items)))


def _caret_expected(spec: tuple[int, ...], version: tuple[int, ...]) -> bool:
    """npm caret: same leftmost non-zero part given (or every part, when all given are zero)."""
    v = _pad(version)
    if v < _pad(spec):
        return False
    if len(spec) == 1:
        return v[0] == spec[0]
    if spec[0] > 0:
        return v[0] == spec[0]
    if len(spec) == 2:
        return v[0] == 0 and v[1] == spec[1]
    if spec[1] > 0:
        return v[0] == 0 and v[1] == spec[1]
    return v[0] == 0 and v[1] == 0 and v[2] == spec[2]


def _tilde_expected(spec: tuple[int, ...], version: tuple[int, ...]) -> bool:
    """npm tilde: same major and minor when a minor is given, else same major."""
    v = _pad(version)
    if v < _pad(spec):
        return False
    if len(spec) == 1:
        return v[0] == spec[0]
    return v[0] == spec[0] and v[1] == spec[1]


@PROPERTY_SETTINGS
@given(release3, releases)
def test_caret_three_parts(spec: tuple[int, int, int], version: tuple[int, ...]) -> None:
    r = parse_range(f"^{_dotted(spec)}")
    assert r.contains(_dotted(version)) is _caret_expected(spec, version)


@PROPERTY_SETTINGS
@given(st.lists(parts, min_size=1, max_size=3).map(tuple), releases)
def test_caret_any_length(spec: tuple[int, ...], version: tuple[int, ...]) -> None:
    r = parse_range(f"^{_dotted(spec)}")
    assert r.contains(_dotted(version)) is _caret_expected(spec, version)


@PROPERTY_SETTINGS
@given(st.lists(parts, min_size=1, max_size=3).map(tuple), releases)
def test_tilde(spec: tuple[int, ...], version: tuple[int, ...]) -> None:
    r = parse_range(f"~{_dotted(spec)}")
    assert r.contains(_dotted(version)) is _tilde_expected(spec, version)


@PROPERTY_SETTINGS
@given(
    st.lists(parts, min_size=1, max_size=3).map(tuple),
    st.sampled_from([".x", ".X", ".*", ".x.x"]),
    releases,
)
def test_wildcard(spec: tuple[int, ...], stars: str, version: tuple[int, ...]) -> None:
    r = parse_range(f"{_dotted(spec)}{stars}")
    expected = _pad(version)[: len(spec)] == spec
    assert r.contains(_dotted(version)) is expected


@PROPERTY_SETTINGS
@given(releases, releases)
def test_bare_version_is_exact(spec: tuple[int, ...], version: tuple[int, ...]) -> None:
    r = parse_range(_dotted(spec))
    assert r.contains(_dotted(version)) is (_pad(spec) == _pad(version))
