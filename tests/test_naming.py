"""Tests for reconciler.naming: table tests for the documented rules, properties for the rest."""

from __future__ import annotations

import hashlib
import posixpath
import random
import re
import string
from pathlib import PurePosixPath, PureWindowsPath

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reconciler.errors import NamingError, ReconcilerError
from reconciler.naming import MAX_NAME, check_relpath, clean_filename, clean_slug, dedupe

# Written out here rather than imported, so the tests check the rule, not the module's own table.
RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{d}" for p in ("com", "lpt") for d in range(1, 10)}
SLUG_RE = re.compile(r"[a-z0-9._-]+")
FILE_RE = re.compile(r"[A-Za-z0-9._-]+")
EXT_RE = re.compile(r"[A-Za-z0-9]{1,16}")


def sha6(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:6]


def is_reserved(name: str) -> bool:
    return name.split(".", 1)[0].lower() in RESERVED


# --------------------------------------------------------------------------- clean_slug: tables


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("Qwen3.5 27B", "qwen3.5_27b"),
        ("SDXL Base 1.0", "sdxl_base_1.0"),
        ("My LoRA (v2)", "my_lora_v2"),
        ("Café", "cafe"),
        ("Crème Brûlée XL", "creme_brulee_xl"),
        ("İstanbul", "istanbul"),
        ("ﬁne-tune", "fine-tune"),  # compatibility ligature
        (
            "\uff37\uff49\uff44\uff45 \uff2d\uff4f\uff44\uff45\uff4c",
            "wide_model",
        ),  # fullwidth letters
        ("x²", "x2"),
        ("Llama-3.2-1B-Instruct-Q4_K_M", "llama-3.2-1b-instruct-q4_k_m"),
        ("  spaced   out  ", "spaced_out"),
        ("tabs\tand\nnewlines", "tabs_and_newlines"),
        ("🤗 hugging 🤗 face 🤗", "hugging_face"),
        ("日本語 model", "model"),
        ("a/b\\c", "a_b_c"),
        ("../../etc/passwd", "etc_passwd"),
        ("a _b", "a__b"),  # only runs of unwanted characters merge; kept '_' stay
        ("--lead.and.trail__", "lead.and.trail"),
        ("v1.0...", "v1.0"),
        ("already_clean-1.0", "already_clean-1.0"),
        ("con", "con_"),
        ("CON", "con_"),
        ("nul.x", "nul_.x"),
        ("Com1.tar", "com1_.tar"),
        ("lpt9", "lpt9_"),
        ("com10", "com10"),
        ("com0", "com0"),
        ("console", "console"),
        ("xcon", "xcon"),
        ("con_", "con_"),
        ("aux (1)", "aux_1"),
    ],
)
def test_clean_slug_examples(given_name: str, expected: str) -> None:
    assert clean_slug(given_name) == expected
    assert clean_slug(expected) == expected


@pytest.mark.parametrize(
    "bad", ["", "!!!", "...", "._-", "   ", "🤗", "日本語", "/", "\\", "..\\.."]
)
def test_clean_slug_rejects_names_without_letters_or_digits(bad: str) -> None:
    with pytest.raises(NamingError, match=re.escape(repr(bad))):
        clean_slug(bad)


def test_naming_error_is_a_value_error_and_a_reconciler_error() -> None:
    with pytest.raises(ValueError) as info:
        clean_slug("!!!")
    assert isinstance(info.value, ReconcilerError)


def test_clean_slug_caps_long_names() -> None:
    assert clean_slug("a" * 300) == "a" * MAX_NAME
    # the cut lands in a run of punctuation, which is stripped again
    long_name = "b" * 120 + "." * 20 + "c"
    assert clean_slug(long_name) == "b" * 120
    # the cut keeps version punctuation inside the name
    assert clean_slug("m" * 126 + ".1.2") == "m" * 126 + ".1"


def test_clean_slug_reserved_name_at_the_length_limit() -> None:
    # appending '_' to a device name must not push the name past the limit
    name = "con." + "a" * (MAX_NAME - 4)
    assert len(name) == MAX_NAME
    result = clean_slug(name)
    assert result == "con_." + "a" * (MAX_NAME - 5)
    assert len(result) == MAX_NAME
    assert clean_slug(result) == result
    # ... even when the extra cut exposes punctuation that strips back to the device name
    tricky = "con" + "." * (MAX_NAME - 4) + "a"
    assert clean_slug(tricky) == "con_"


# ----------------------------------------------------------------------- clean_filename: tables


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("sd_xl_base_1.0.safetensors", "sd_xl_base_1.0.safetensors"),
        ("model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors"),
        ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
        ("my lora v2.SafeTensors", "my_lora_v2.safetensors"),
        ("Llama-3.2-1B-Instruct-Q4_K_M.GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("Archive.TAR.GZ", "Archive.TAR.gz"),
        ("noext", "noext"),
        ("file.", "file"),
        ("file...", "file"),
        ("README", "README"),
        ("a/b.txt", "a_b.txt"),
        ("C:\\Users\\me\\model.ckpt", "C_Users_me_model.ckpt"),
        ("../../etc/passwd", "etc_passwd"),
        ("dir.v2/file", "dir.v2_file"),  # the last dot is followed by '/': no extension
        ('"model.ckpt" ', "model.ckpt"),  # Content-Disposition leftovers
        ("Café Model.pt", "Cafe_Model.pt"),
        ("🤗 model 🤗.bin", "model.bin"),
        ("file.\uff34\uff58\uff54", "file.txt"),  # fullwidth extension, folded first
        ("weights.tar.7z", "weights.tar.7z"),
        ("x.abcdefghijklmnop", "x.abcdefghijklmnop"),  # 16 characters: an extension
        ("x.ABCDEFGHIJKLMNOPQ", "x.ABCDEFGHIJKLMNOPQ"),  # 17: not an extension, case kept
        ("x.my_ext", "x.my_ext"),  # '_' in the suffix: not an extension
        ("x.Ext!", "x.ext"),  # trailing junk is stripped before the extension is found
        ("-dash.bin", "dash.bin"),
        ("_under_.bin", "under.bin"),
        (".hidden.txt", "hidden.txt"),
        ("con", "con_"),
        ("CON.txt", "CON_.txt"),
        ("Nul.tar.gz", "Nul_.tar.gz"),
        ("com1", "com1_"),
        ("Aux_.txt", "Aux_.txt"),
        ("lpt1.SafeTensors", "lpt1_.safetensors"),
    ],
)
def test_clean_filename_examples(given_name: str, expected: str) -> None:
    assert clean_filename(given_name) == expected
    assert clean_filename(expected) == expected


@pytest.mark.parametrize(
    "bad", [".safetensors", "..", ".", "/", "\\", "", "!!!", "🤗.safetensors", "_.gz", "-..-.bin"]
)
def test_clean_filename_rejects_an_empty_stem(bad: str) -> None:
    with pytest.raises(NamingError, match=re.escape(repr(bad))):
        clean_filename(bad)


def test_clean_filename_keeps_the_extension_when_cutting() -> None:
    result = clean_filename("A" * 300 + ".SafeTensors")
    assert result == "A" * (MAX_NAME - len(".safetensors")) + ".safetensors"
    assert len(result) == MAX_NAME
    longest_ext = "e" * 16
    result = clean_filename("s" * 200 + "." + longest_ext)
    assert result.endswith("." + longest_ext)
    assert len(result) == MAX_NAME


def test_clean_filename_cut_that_exposes_an_extension_stays_idempotent() -> None:
    # No extension (the suffix is too long), but the cut leaves a short suffix behind.
    name = "x" * 120 + "." + "A" * 20
    result = clean_filename(name)
    assert len(result) <= MAX_NAME
    assert clean_filename(result) == result
    assert result == "x" * 120 + "." + "a" * 7


def test_clean_filename_reserved_name_at_the_length_limit() -> None:
    name = "nul." + "b" * (MAX_NAME - 8) + ".bin"
    assert len(name) == MAX_NAME
    result = clean_filename(name)
    assert len(result) == MAX_NAME
    assert result.startswith("nul_.")
    assert result.endswith(".bin")
    assert clean_filename(result) == result


# ------------------------------------------------------------------------ cleaners: properties

ODD_CHARACTERS = "aZ09._- /\\:é\u0301ﬁ²İß🤗\x00\t\u200d\u202e\u2024"
texts = st.one_of(
    st.text(),
    st.text(alphabet=ODD_CHARACTERS),
    st.text(alphabet=ODD_CHARACTERS, min_size=100, max_size=300),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(sorted(RESERVED | {name.upper() for name in RESERVED})),
        st.text(alphabet="._- aB1", max_size=6),
    ),
    st.builds(
        lambda stem, ext: f"{stem}.{ext}",
        st.text(alphabet="aB1._- /", max_size=200),
        st.text(alphabet="aB1xYz", min_size=1, max_size=18),
    ),
)


def check_common(result: str, original: str) -> None:
    assert result, original
    assert len(result) <= MAX_NAME
    assert result not in (".", "..")
    assert result[0] not in "._-"
    assert "/" not in result
    assert "\\" not in result
    assert not is_reserved(result)
    # Only a device-name fix leaves a trailing '_', and only on a name without a dot.
    if result.endswith("_"):
        assert "." not in result
        assert result[:-1].lower() in RESERVED
    assert result[-1] not in ".-"


@settings(max_examples=150)
@given(texts)
def test_clean_slug_properties(text: str) -> None:
    try:
        result = clean_slug(text)
    except NamingError:
        assert not any(char in string.ascii_letters + string.digits for char in text)
        return
    check_common(result, text)
    assert SLUG_RE.fullmatch(result)
    assert clean_slug(result) == result


@settings(max_examples=150)
@given(texts)
def test_clean_filename_properties(text: str) -> None:
    try:
        result = clean_filename(text)
    except NamingError:
        return
    check_common(result, text)
    assert FILE_RE.fullmatch(result)
    assert clean_filename(result) == result
    stem, dot, suffix = result.rpartition(".")
    if dot and EXT_RE.fullmatch(suffix):
        assert suffix == suffix.lower()
        assert stem[-1] not in ".-"


@given(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,60}[A-Za-z0-9])?", fullmatch=True),
    st.text(alphabet=string.ascii_letters + string.digits + " !/", max_size=20),
)
def test_clean_filename_never_raises_when_a_letter_or_digit_has_no_dot_after_it(
    word: str, rest: str
) -> None:
    # the word contributes a non-empty stem whatever follows, since no dot follows it
    text = rest + word.replace(".", "_")
    assert clean_filename(text)


@given(st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,100}[a-z0-9])?", fullmatch=True))
def test_clean_slug_keeps_clean_names(name: str) -> None:
    assume(not is_reserved(name))
    assert clean_slug(name) == name


@given(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,80}[A-Za-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,16}", fullmatch=True),
)
def test_clean_filename_keeps_clean_published_names(stem: str, ext: str) -> None:
    assume(not is_reserved(stem))
    name = f"{stem}.{ext}"
    assert clean_filename(name) == name


# ------------------------------------------------------------------------------- check_relpath


@pytest.mark.parametrize(
    "good",
    [
        "text_encoder/model.safetensors",
        "model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "a/b/c/d.json",
        ".gitattributes",
        "folder with spaces/Café.bin",
        "con_/x",
        "console/x",
        "a..b/c",
    ],
)
def test_check_relpath_accepts(good: str) -> None:
    result = check_relpath(good)
    assert result == PurePosixPath(good)
    assert str(result) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        ("/x", "absolute"),
        ("/", "absolute"),
        ("\\x", "absolute"),
        ("\\\\server\\share\\x", "absolute"),
        ("C:\\x", "absolute"),
        ("C:x", "absolute"),
        ("c:/x", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        (".", "'.'"),
        ("./a", "'.'"),
        ("a/./b", "'.'"),
        ("a/...", "dots"),
        ("a/ . ", "dots"),
        ("a\\b", "backslash"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("a/\ud800", "Unicode"),
        ("con", "device"),
        ("a/NUL.txt", "device"),
        ("Com1/x", "device"),
        ("lpt9.tar.gz", "device"),
        ("aux /x", "device"),
        ("a/COM¹", "device"),
        ("a/C:evil", "drive"),
        ("x" * 256, "bytes"),
        ("a/" + "é" * 128, "bytes"),
    ],
)
def test_check_relpath_rejects(bad: str, why: str) -> None:
    with pytest.raises(NamingError) as info:
        check_relpath(bad)
    message = str(info.value)
    assert why in message
    assert repr(bad)[:40] in message


def test_check_relpath_component_length_is_in_bytes() -> None:
    assert check_relpath("x" * 255)
    assert check_relpath("é" * 127)  # 254 bytes
    with pytest.raises(NamingError):
        check_relpath("é" * 128)  # 256 bytes


components = st.one_of(
    st.sampled_from(
        ["..", ".", "", "a", "b.txt", "/", "\\", "C:", "c:x", "con", "NUL.txt", " ", "...", "\x00"]
    ),
    st.text(max_size=8),
    st.text(alphabet="./\\: aC", max_size=5),
)


@settings(max_examples=150)
@given(st.lists(components, min_size=1, max_size=6))
def test_check_relpath_never_returns_an_escaping_path(parts: list[str]) -> None:
    text = "/".join(parts)
    try:
        result = check_relpath(text)
    except NamingError:
        return
    assert str(result) == text
    assert not result.is_absolute()
    assert ".." not in result.parts
    assert "." not in text.split("/")
    assert ".." not in text.split("/")
    assert "" not in text.split("/")
    windows = PureWindowsPath(text)
    assert not windows.is_absolute()
    assert windows.drive == ""
    assert ".." not in windows.parts
    assert posixpath.normpath(posixpath.join("/root", text)).startswith("/root/")
    assert not any(is_reserved(part) for part in result.parts)


@given(
    st.lists(
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._ -]{0,30}", fullmatch=True),
        min_size=1,
        max_size=5,
    )
)
def test_check_relpath_accepts_ordinary_paths(parts: list[str]) -> None:
    assume(not any(is_reserved(part.rstrip(" ")) for part in parts))
    text = "/".join(parts)
    assert str(check_relpath(text)) == text


# ------------------------------------------------------------------------------------- dedupe


def test_dedupe_keeps_unique_names() -> None:
    named = {"b": "x.safetensors", "a": "y.safetensors", "c": "Z"}
    assert dedupe(named) == named
    assert dedupe({}) == {}


def test_dedupe_smallest_key_keeps_the_name_and_others_get_key_hashes() -> None:
    named = {"m/c": "model.safetensors", "m/a": "Model.safetensors", "m/b": "MODEL.safetensors"}
    result = dedupe(named)
    assert result == {
        "m/a": "Model.safetensors",
        "m/b": f"MODEL_{sha6('m/b')}.safetensors",
        "m/c": f"model_{sha6('m/c')}.safetensors",
    }
    assert list(result) == ["m/a", "m/b", "m/c"]


def test_dedupe_suffix_goes_before_the_last_extension_only() -> None:
    result = dedupe({"a": "w.tar.gz", "b": "w.tar.gz", "c": "noext", "d": "noext"})
    assert result["b"] == f"w.tar_{sha6('b')}.gz"
    assert result["d"] == f"noext_{sha6('d')}"


def test_dedupe_without_extensions_for_slugs() -> None:
    named = {"diffusion/a": "sdxl_base_1.0", "diffusion/b": "sdxl_base_1.0"}
    assert (
        dedupe(named, keep_extension=False)["diffusion/b"] == f"sdxl_base_1.0_{sha6('diffusion/b')}"
    )
    assert dedupe(named)["diffusion/b"] == f"sdxl_base_1_{sha6('diffusion/b')}.0"


def test_dedupe_dotfile_names_are_all_stem() -> None:
    result = dedupe({"a": ".gitignore", "b": ".GITIGNORE"})
    assert result["b"] == f".GITIGNORE_{sha6('b')}"


def test_dedupe_lengthens_the_hash_when_the_suffixed_name_is_taken() -> None:
    digest = hashlib.sha256(b"b").hexdigest()
    named = {"a": "x.bin", "b": "x.bin", "c": f"x_{digest[:6]}.bin"}
    result = dedupe(named)
    assert result == {"a": "x.bin", "b": f"x_{digest[:8]}.bin", "c": f"x_{digest[:6]}.bin"}
    # and once more, case-insensitively
    named["d"] = f"X_{digest[:8].upper()}.BIN"
    assert dedupe(named)["b"] == f"x_{digest[:10]}.bin"


def test_dedupe_lengthens_the_hash_when_two_suffixed_names_meet() -> None:
    # Two keys whose SHA-256 share their first 6 hex digits (found by brute force).
    first, second = "model-3297", "model-391"  # in sorted order
    assert sha6(first) == sha6(second)
    named = {"model-0": "x.bin", second: "x.bin", first: "X.bin"}
    longer = hashlib.sha256(second.encode()).hexdigest()[:8]
    assert dedupe(named) == {
        "model-0": "x.bin",
        first: f"X_{sha6(first)}.bin",
        second: f"x_{longer}.bin",
    }


def test_dedupe_cuts_the_stem_to_stay_within_the_limit() -> None:
    name = "s" * (MAX_NAME - len(".safetensors")) + ".safetensors"
    result = dedupe({"a": name, "b": name})
    assert result["a"] == name
    assert result["b"] == "s" * (MAX_NAME - 19) + f"_{sha6('b')}.safetensors"
    assert len(result["b"]) == MAX_NAME
    assert clean_filename(result["b"]) == result["b"]


def test_dedupe_cut_strips_trailing_punctuation() -> None:
    slug = "a" * 119 + "-.--" + "b" * 5
    assert len(slug) == MAX_NAME
    result = dedupe({"k1": slug, "k2": slug}, keep_extension=False)
    assert result["k2"] == "a" * 119 + f"_{sha6('k2')}"
    name = "a" * 112 + ".-" + "c" * 6 + ".bbbbbbb"
    assert len(name) == MAX_NAME
    result = dedupe({"k1": name, "k2": name})
    assert result["k2"] == "a" * 112 + f"_{sha6('k2')}.bbbbbbb"


def test_adding_a_model_never_renames_other_suffixed_models() -> None:
    before = dedupe({"b": "lora.safetensors", "c": "lora.safetensors", "d": "lora.safetensors"})
    after = dedupe(
        {
            "a": "Lora.safetensors",
            "b": "lora.safetensors",
            "c": "lora.safetensors",
            "d": "lora.safetensors",
            "bb": "lora.safetensors",
        }
    )
    assert after["c"] == before["c"]
    assert after["d"] == before["d"]
    assert after["a"] == "Lora.safetensors"  # the new smallest key takes the plain name
    assert after["b"] == f"lora_{sha6('b')}.safetensors"


@pytest.mark.parametrize("bad", ["", "n" * (MAX_NAME + 1)])
def test_dedupe_rejects_names_that_are_empty_or_too_long(bad: str) -> None:
    with pytest.raises(NamingError, match="1 to 128"):
        dedupe({"k": bad})


# dedupe properties: tiny alphabets so that names collide often; some names near the limit.
short_names = st.text(alphabet="aAbB._x", min_size=1, max_size=4)
long_names = st.builds(
    lambda stem, ext: (stem + ext)[-MAX_NAME:],
    st.text(alphabet="aA.", min_size=110, max_size=130),
    st.sampled_from(["", ".bin", ".SafeTensors", ".x"]),
)
mappings = st.dictionaries(st.text(max_size=4), st.one_of(short_names, long_names), max_size=12)


def check_dedupe(named: dict[str, str], result: dict[str, str]) -> None:
    assert set(result) == set(named)
    folded = [name.casefold() for name in result.values()]
    assert len(folded) == len(set(folded))
    assert all(0 < len(name) <= MAX_NAME for name in result.values())
    counts: dict[str, list[str]] = {}
    for key, name in named.items():
        counts.setdefault(name.casefold(), []).append(key)
    for keys in counts.values():
        winner, *others = sorted(keys)
        assert result[winner] == named[winner]
        for key in others:
            assert result[key] != named[key]
            assert f"_{sha6(key)}" in result[key]


@settings(max_examples=150)
@given(mappings, st.randoms(use_true_random=False), st.booleans())
def test_dedupe_properties(named: dict[str, str], rng: random.Random, keep: bool) -> None:
    result = dedupe(named, keep_extension=keep)
    check_dedupe(named, result)
    items = list(named.items())
    rng.shuffle(items)
    shuffled = dedupe(dict(items), keep_extension=keep)
    assert list(shuffled.items()) == list(result.items())
    assert dedupe(result, keep_extension=keep) == result


@given(mappings, st.text(max_size=4), st.one_of(short_names, long_names))
def test_dedupe_adding_a_key_keeps_other_suffixed_names(
    named: dict[str, str], new_key: str, new_name: str
) -> None:
    assume(new_key not in named)
    before = dedupe(named)
    after = dedupe({**named, new_key: new_name})
    for key, name in before.items():
        if name != named[key]:  # was suffixed before
            assert after[key] == name


def _clean_or_none(text: str) -> str | None:
    try:
        return clean_filename(text)
    except NamingError:
        return None


clean_names = (
    st.text(alphabet="aA1._- é/", min_size=1, max_size=6)
    .map(_clean_or_none)
    .filter(lambda name: name is not None)
)


@given(st.dictionaries(st.text(max_size=3), clean_names, max_size=10))
def test_dedupe_of_clean_file_names_gives_clean_file_names(named: dict[str, str | None]) -> None:
    plain = {key: name for key, name in named.items() if name is not None}
    for name in dedupe(plain).values():
        assert clean_filename(name) == name


@given(st.dictionaries(st.text(max_size=3), st.text(alphabet="a1.-_ ", min_size=1), max_size=10))
def test_dedupe_of_slugs_gives_slugs(named: dict[str, str]) -> None:
    slugs = {}
    for key, text in named.items():
        try:
            slugs[key] = clean_slug(text)
        except NamingError:
            continue
    for name in dedupe(slugs, keep_extension=False).values():
        assert clean_slug(name) == name
