"""Fuzzing (issue 7, deliverable 2): generated and mutated input fed to the real loaders and parsers.

Every target takes what an outsider can write (a manifest, a translation, a model folder's
metadata.json and overrides.json, mlib.lock, the Hub's JSON replies, file names from a URL, a
Content-Disposition header or the Hub) and checks one property: the project's clean error
(:class:`~reconciler.errors.InvalidInputError` with problems, :class:`LockFileError`,
:class:`SourceError`, :class:`NamingError`) or a value whose invariants hold (a cleaned name
never holds ``/``, ``..`` or NUL; an accepted metadata file never names a path outside its
folder...). Anything else (a ``KeyError``, a ``RecursionError``, a hang) fails.

``MLIB_FUZZ_EXAMPLES`` sets the examples per target (default 40: the whole file in well under
30 s); ``tests/fuzz_run.py`` runs them with >= 10k each and prints the table of
docs/reliability.md. ``COUNTS`` holds the examples each target really ran, for that table.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import isolate_hf_client
from test_probe import RANDOM_FILES as PROBE_FILES

from reconciler import observe
from reconciler.errors import (
    InvalidInputError,
    LockFileError,
    NamingError,
    SourceError,
    TranslationError,
)
from reconciler.index import Entry
from reconciler.library import Skipped, read_entry
from reconciler.loaders import load_manifest, read_metadata, read_overrides
from reconciler.lockfile import read_lock
from reconciler.model import HfSource, UrlSource
from reconciler.naming import check_relpath, clean_filename, clean_slug
from reconciler.probe import Format, Probe, probe_file
from reconciler.sources import hf
from reconciler.sources import url as url_source
from reconciler.translation_files import load_translations, read_translation
from reconciler.translations import links_for

EXAMPLES = int(os.environ.get("MLIB_FUZZ_EXAMPLES", "40"))
#: Examples each target really ran (hypothesis may stop early once a space is exhausted).
COUNTS: Counter[str] = Counter()

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

ROOT = Path(__file__).resolve().parent.parent
_ID = re.compile(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*").fullmatch
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*").fullmatch


# --- invariants ------------------------------------------------------------------------------


def assert_safe_relpath(path: str) -> None:
    """``path`` stays inside the folder it is joined to."""
    assert path and not path.startswith(("/", "\\")), path
    assert "\\" not in path and "\0" not in path, path
    assert all(part not in ("", ".", "..") for part in path.split("/")), path


def _is_safe(path: str) -> bool:
    try:
        check_relpath(path)
    except NamingError:
        return False
    return True


def assert_clean_file_name(name: str) -> None:
    assert name and "/" not in name and "\\" not in name and "\0" not in name, name
    assert name not in (".", ".."), name
    assert len(name.encode("utf-8")) <= 255, name
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


def assert_clean_problems(exc: InvalidInputError) -> None:
    assert exc.problems
    for p in exc.problems:
        assert p.file and p.message, p
        p.render()


# --- mutation helpers -------------------------------------------------------------------------

NASTY = [
    "", " ", ".", "..", "../..", "../../etc/passwd", "/etc/passwd", "a/../../b", "C:\\x", "con",
    "nul.txt", "a\0b", "\udcff", "\u202e", "~", "~/x", "*", "?", "[", "${HOME}", "%2e%2e%2f",
    "a" * 300, "é", "😀", "\n", "\t", "x" * 5000, "0", "1e309", "-1", "true", "null", "&a", "*a",
]  # fmt: skip
TEXT = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
SNIPPETS = [
    "\n", ": ", "- ", "&a ", "*a", "&b [*b]", "!!python/object/apply:os.system ['true']",
    "!!binary ", "<<: ", "{", "}", "[", "]", "'", '"', "\t", "#", "\n---\n", "\n...\n", "\x00",
    "\ufeff", "%YAML 1.1\n", "? ", "|", ">", ",", "\\", "\\u0000", "1e999", "[" * 200,
    "9" * 5000, "\udcff", "\r", "NaN", "-Infinity",
]  # fmt: skip


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few random edits: snippets inserted, spans deleted, lines doubled or swapped."""
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["insert", "delete", "dup", "swap", "replace"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            snippet = draw(st.sampled_from(SNIPPETS) | st.text(max_size=6))
            text = text[:at] + snippet + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "replace" and text:
            i = min(at, len(text) - 1)
            text = text[:i] + draw(st.characters()) + text[i + 1 :]
        else:
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "dup":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


@st.composite
def mutated_doc(draw: st.DrawFn, doc: Any) -> Any:
    """A deep copy of ``doc`` with a few values replaced, dropped or added anywhere in it."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(doc))
        at = draw(st.sampled_from(paths))
        if not at:
            if draw(st.integers(0, 9)) == 0:
                doc = draw(JSON_VALUES)
            continue
        parent: Any = doc
        for step in at[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "drop", "add", "nasty"]))
        if op == "replace":
            parent[at[-1]] = draw(JSON_VALUES)
        elif op == "nasty":
            parent[at[-1]] = draw(st.sampled_from(NASTY))
        elif op == "drop":
            del parent[at[-1]]
        elif isinstance(parent, dict):
            parent[draw(TEXT)] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    return doc


def json_text(doc: Any) -> str:
    return json.dumps(doc, allow_nan=True, ensure_ascii=False)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    """For tests/fuzz_run.py: the examples run per target, written where MLIB_FUZZ_COUNTS says."""
    yield
    where = os.environ.get("MLIB_FUZZ_COUNTS")
    if where:
        Path(where).write_text(json.dumps(dict(COUNTS)), encoding="utf-8")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- manifests ---------------------------------------------------------------------------------

SOURCES = st.one_of(
    st.fixed_dictionaries(
        {"hf": st.sampled_from(["org/repo", "a/b", "../x", "org/../..", "x"]) | TEXT},
        optional={
            "revision": TEXT,
            "files": st.lists(st.sampled_from(["*.safetensors", "../x", "a/*", "/x"]) | TEXT),
            "exclude": st.lists(TEXT, max_size=2),
        },
    ),
    st.fixed_dictionaries(
        {"url": st.sampled_from(["https://x.invalid/a.bin", "http://[::1/x", "ftp://x"]) | TEXT},
        optional={"filename": TEXT},
    ),
    st.fixed_dictionaries(
        {"path": st.sampled_from(["~/a.bin", "/etc/passwd", "../a", "a b.safetensors"]) | TEXT},
        optional={"mode": st.sampled_from(["copy", "hardlink", "move", "link"])},
    ),
)
OVERRIDE = st.one_of(
    st.booleans(),
    st.sampled_from([">=0.3,<0.4", "^0.3", "~0.3.1", "0.3.x", ">=0.3 <0.5", "*", ">=banana"]),
    st.fixed_dictionaries(
        {},
        optional={
            "versions": TEXT,
            "enabled": st.booleans(),
            "folder": TEXT,
            "filename": TEXT,
        },
    ),
)
MODEL = st.fixed_dictionaries(
    {
        "name": TEXT,
        "type": st.sampled_from(["llm", "diffusion", "other", "LLM", ".."]),
        "family": st.sampled_from(["sdxl", "flux", "..", "a/b"]) | TEXT,
        "kind": st.sampled_from(["lora", "checkpoint", "diffusers"]) | TEXT,
        "source": SOURCES,
    },
    optional={
        "id": st.sampled_from(["diffusion/sdxl/a", "../../x", "a/b/c/d"]) | TEXT,
        "tags": st.lists(TEXT, max_size=3),
        "sha256": st.sampled_from(["a" * 64, "A" * 64, "x"]),
        "apps": st.dictionaries(st.sampled_from(["comfy", "other"]), OVERRIDE, max_size=2),
    },
)
APP = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["0.3.62", "1", "x"]) | TEXT,
        "models_dir": st.sampled_from(["comfy", "lib/comfy", "..", "/", "~/comfy"]) | TEXT,
    },
    optional={
        "app": st.sampled_from(["comfyui", "a1111", "lmstudio"]) | TEXT,
        "variant": TEXT,
        "link": st.sampled_from(["auto", "symlink", "copy", "config", "x"]),
        "config": TEXT,
    },
)
MANIFESTS = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 1, 1, "1", 2, None]),
        "models": st.lists(MODEL, max_size=4),
    },
    optional={
        "library": st.sampled_from(["lib", "comfy/lib", "/", "~", "..", ""]) | TEXT,
        "apps": st.dictionaries(st.sampled_from(["comfy", "other", "b@d"]), APP, max_size=2),
        "translations": st.lists(TEXT, max_size=2),
    },
)


def check_manifest(path: Path, home: Path) -> None:
    try:
        manifest = load_manifest(path, home=home)
    except InvalidInputError as exc:
        assert_clean_problems(exc)
        return
    assert manifest.library.is_absolute() and os.path.normpath(manifest.library) == str(
        manifest.library
    )
    ids = [m.id for m in manifest.models]
    assert all(_ID(i) for i in ids), ids
    assert len({i.casefold() for i in ids}) == len(ids)
    for app in manifest.apps:
        lib, apps_dir = manifest.library, app.models_dir
        assert lib != apps_dir and lib not in apps_dir.parents and apps_dir not in lib.parents
    for spec in manifest.models:
        if isinstance(spec.source, UrlSource) and spec.source.filename is not None:
            assert "/" not in spec.source.filename
            check_relpath(spec.source.filename)
        for o in spec.apps:
            if o.filename is not None:
                assert "/" not in o.filename
                check_relpath(o.filename)
            if o.folder is not None:
                check_relpath(o.folder)


@FUZZ
@given(doc=MANIFESTS, data=st.data())
def test_fuzz_manifest_documents(workdir: Path, doc: dict[str, Any], data: st.DataObject) -> None:
    COUNTS["manifest (YAML, structured + text mutations)"] += 1
    text = yaml.safe_dump(doc, allow_unicode=True)
    text = data.draw(mutated_text(text))
    path = workdir / "mlib.yaml"
    path.write_bytes(utf8(text))
    check_manifest(path, workdir)


GOOD_MANIFEST = (ROOT / "manifests" / "example.yaml").read_bytes()


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda cuts: _flip(GOOD_MANIFEST, cuts),
            st.lists(st.tuples(st.integers(0, len(GOOD_MANIFEST) - 1), st.integers(0, 255))),
        ),
    )
)
def test_fuzz_manifest_bytes(workdir: Path, raw: bytes) -> None:
    COUNTS["manifest (raw bytes)"] += 1
    path = workdir / "mlib.yaml"
    path.write_bytes(raw)
    check_manifest(path, workdir)


def _flip(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, value in cuts:
        out[at] = value
    return bytes(out)


# --- translations ----------------------------------------------------------------------------

BUNDLED = json.loads((ROOT / "translations" / "comfyui_0.2.7_default.json").read_text())
SMALL_TRANSLATION = {
    "app": "myapp",
    "versions": ">=1.0",
    "variant": "default",
    "rules": [
        {"match": {"kind": ["lora"], "files": ["*.safetensors"]}, "targets": ["loras/{family}"]},
        {"match": {"kind": ["diffusers"]}, "targets": ["diffusers"], "link": "folder"},
        {"match": {"type": ["llm"]}, "targets": ["{model}"]},
    ],
}
TARGETS = st.sampled_from(["../x", "/abs", "a//b", "{model}/..", "{family}", "{kind}/{type}", "."])


@st.composite
def translation_texts(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from([SMALL_TRANSLATION, BUNDLED]))
    doc = draw(mutated_doc(base))
    if isinstance(doc, dict) and isinstance(doc.get("rules"), list) and draw(st.booleans()):
        doc["rules"].append({"match": {"kind": [draw(TEXT)]}, "targets": [draw(TARGETS | TEXT)]})
    text = json_text(doc)
    return draw(mutated_text(text)) if draw(st.integers(0, 3)) == 0 else text


@FUZZ
@given(
    text=translation_texts(),
    family=st.sampled_from(["sdxl", "..", "a/b", ""]) | TEXT,
    kind=st.sampled_from(["lora", "diffusers", "checkpoint"]) | TEXT,
    type_=st.sampled_from(["llm", "diffusion"]) | TEXT,
    # a model's files: what metadata.json may list (safe relative paths, see metadata.py)
    files=st.lists(
        st.sampled_from(["a.safetensors", "x/model_index.json", "a/b.gguf"]) | TEXT.filter(_is_safe)
    ),
    cleaned=st.sampled_from(["model", "..", "a/b", ""]) | TEXT,
)
def test_fuzz_translations(
    workdir: Path, text: str, family: str, kind: str, type_: str, files: list[str], cleaned: str
) -> None:
    COUNTS["translation (JSON, structured + text mutations)"] += 1
    folder = workdir / "translations"
    folder.mkdir(exist_ok=True)
    (folder / "fuzz_1_default.json").write_bytes(utf8(text))
    try:
        (translation,), _ = load_translations([folder], bundled=False)
    except InvalidInputError as exc:
        assert_clean_problems(exc)
        return
    try:
        wants = links_for(
            translation,
            type=type_,
            family=family,
            kind=kind,
            tags=(),
            files=files,
            cleaned_name=cleaned,
        )
    except (TranslationError, NamingError):
        return
    for want in wants:
        assert_safe_relpath(want.folder)
        assert "/" not in want.name and want.name not in ("", ".", ".."), want


# --- a model folder: metadata.json and overrides.json ---------------------------------------

SAMPLE_METADATA = {
    "schema_version": 1,
    "id": "diffusion/sdxl/a",
    "official_name": "A",
    "cleaned_name": "a",
    "model_type": "diffusion",
    "family": "sdxl",
    "kind": "lora",
    "tags": ["base"],
    "source": {"hf": "org/a", "revision": "main", "files": ["a.safetensors"]},
    "files": [
        {"path": "a.safetensors", "size": 8, "sha256": "a" * 64, "blake3": "b" * 64},
        {"path": "sub/c.json", "size": 2, "sha256": "c" * 64, "blake3": "d" * 64},
    ],
    "hashes": {"sha256": "a" * 64, "blake3": "b" * 64},
    "size_bytes": 10,
    "added_at": "2025-01-01T00:00:00Z",
    "updated_at": "2025-01-01T00:00:00Z",
}
SAMPLE_OVERRIDES = {
    "schema_version": 1,
    "apps": {"comfy": {"enabled": True, "versions": "*", "folder": "loras/x", "filename": "a.st"}},
}
FILE_PATHS = st.sampled_from(
    ["../../x", "/etc/passwd", "a/../../b", "a//b", ".", "a\\..\\b", "ok/x.bin", "x\0y", "a/"]
)


@st.composite
def model_file_texts(draw: st.DrawFn, base: dict[str, Any]) -> str:
    doc = draw(mutated_doc(base))
    if base is SAMPLE_METADATA and isinstance(doc, dict) and draw(st.booleans()):
        files = doc.get("files")
        if isinstance(files, list) and files and isinstance(files[0], dict):
            files[0]["path"] = draw(FILE_PATHS | TEXT)
    text = json_text(doc)
    return draw(mutated_text(text)) if draw(st.integers(0, 3)) == 0 else text


def _model_folder(workdir: Path, meta: str, overrides: str | None) -> tuple[Path, Path]:
    root = workdir / "lib"
    folder = root / "diffusion" / "sdxl" / "a"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_bytes(utf8(meta))
    if overrides is None:
        (folder / "overrides.json").unlink(missing_ok=True)
    else:
        (folder / "overrides.json").write_bytes(utf8(overrides))
    return root, folder


@FUZZ
@given(
    meta=model_file_texts(SAMPLE_METADATA),
    overrides=st.none() | model_file_texts(SAMPLE_OVERRIDES),
)
def test_fuzz_model_folder(workdir: Path, meta: str, overrides: str | None) -> None:
    COUNTS["metadata.json + overrides.json (loaders, index, observe)"] += 1
    root, folder = _model_folder(workdir, meta, overrides)
    try:
        read = read_metadata(folder / "metadata.json")
    except InvalidInputError as exc:
        assert_clean_problems(exc)
    else:
        for f in read.files:
            assert_safe_relpath(f.path)
        assert _ID(read.id), read.id
    try:
        read_overrides(folder / "overrides.json")
    except InvalidInputError as exc:
        assert_clean_problems(exc)
    entry = read_entry("diffusion/sdxl/a", str(folder))  # what index rebuild reads
    assert isinstance(entry, Entry | Skipped)
    if isinstance(entry, Entry):
        for f in entry.meta.files:
            assert_safe_relpath(f.path)
    seen = observe.observe_library(root)  # what plan and apply read
    for model in seen.values():
        assert (model.metadata is None) == (model.error is not None) or model.error
        if model.metadata is not None:
            for f in model.metadata.files:
                assert_safe_relpath(f.path)
        for rel, _ in model.extra:
            assert_safe_relpath(rel)


# --- mlib.lock -------------------------------------------------------------------------------

SAMPLE_LOCK = {
    "version": 1,
    "models": {
        "diffusion/sdxl/a": {
            "spec": "e" * 64,
            "origin": "hf:org/a@" + "1" * 40,
            "etag": '"x"',
            "files": [
                {
                    "path": "a.safetensors",
                    "url": "https://huggingface.co/org/a/resolve/1/a.safetensors",
                    "size": 8,
                    "sha256": "a" * 64,
                    "blake3": None,
                }
            ],
        }
    },
}


@st.composite
def lock_texts(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=60))
    text = json_text(draw(mutated_doc(SAMPLE_LOCK)))
    return draw(mutated_text(text)) if draw(st.integers(0, 3)) == 0 else text


@FUZZ
@given(text=lock_texts())
def test_fuzz_lock(workdir: Path, text: str) -> None:
    COUNTS["mlib.lock"] += 1
    path = workdir / "mlib.lock"
    path.write_bytes(utf8(text))
    try:
        entries = read_lock(path)
    except LockFileError as exc:
        assert str(path) in str(exc)
        return
    for entry in entries.values():
        assert entry.files and re.fullmatch(r"[0-9a-f]{64}", entry.spec)
        for f in entry.files:
            assert f.url.startswith(("http://", "https://")) and f.size >= -1


# --- file names: cleaning, Content-Disposition, Hub paths ------------------------------------

NAME_TEXT = st.one_of(
    st.text(st.characters(), max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.builds(
        "".join, st.lists(st.sampled_from(["..", "/", "\\", ".", "a", "\0", " ", "é", "C:"]))
    ),
    st.sampled_from(NASTY),
)


@FUZZ
@given(name=NAME_TEXT)
def test_fuzz_names(name: str) -> None:
    COUNTS["file names (clean_filename, clean_slug, check_relpath)"] += 1
    try:
        cleaned = clean_filename(name)
    except NamingError:
        pass
    else:
        assert_clean_file_name(cleaned)
        assert clean_filename(cleaned) == cleaned
    try:
        slug = clean_slug(name)
    except NamingError:
        pass
    else:
        assert _SLUG(slug) and len(slug) <= 128 and slug not in (".", "..")
    try:
        rel = check_relpath(name)
    except NamingError:
        pass
    else:
        assert str(rel) == name
        assert_safe_relpath(name)


DISPOSITION_NAMES = st.one_of(
    NAME_TEXT,
    st.sampled_from(["../../x.bin", "..%2F..%2Fx.bin", "/etc/passwd", "..\\..\\x.bin", "%00.bin"]),
)


@st.composite
def dispositions(draw: st.DrawFn) -> str:
    name = draw(DISPOSITION_NAMES)
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    forms = [
        f'attachment; filename="{quoted}"',
        f"attachment; filename={name}",
        f"attachment; filename*=UTF-8''{name}",
        f"attachment; filename*={draw(TEXT | st.just('a' + chr(0)))}''{name}",
        f"inline; filename*0*=UTF-8''{name}; filename*1=\"{quoted}\"",
        draw(st.text(max_size=60)),
    ]
    return draw(st.sampled_from(forms))


@FUZZ
@given(
    disposition=dispositions() | st.just(""),
    path=st.lists(st.text(max_size=10), min_size=1, max_size=3),
    filename=st.none() | NAME_TEXT,
)
def test_fuzz_url_names(disposition: str, path: list[str], filename: str | None) -> None:
    COUNTS["Content-Disposition and URL file names"] += 1
    from urllib.parse import quote

    final = "https://127.0.0.1/" + "/".join(quote(p, safe="%") for p in path)
    source = UrlSource("https://127.0.0.1/x", filename)
    try:
        name = url_source._name(source, final, disposition)
    except SourceError as exc:
        assert "give one with 'filename:'" in str(exc)
        return
    assert_clean_file_name(name)


@FUZZ
@given(
    path=NAME_TEXT | st.lists(NAME_TEXT, min_size=1, max_size=4).map("/".join), single=st.booleans()
)
def test_fuzz_hub_paths(path: str, single: bool) -> None:
    COUNTS["Hub file paths"] += 1
    try:
        dest = hf._dest(path, single, HfSource("org/repo"))
    except SourceError as exc:
        assert "not a safe path" in str(exc)
        return
    if single:
        assert_clean_file_name(dest)
    else:
        assert dest == path
        assert_safe_relpath(dest)


# --- Hugging Face JSON replies through the real huggingface_hub client ------------------------


class _Replies:
    """What the fake Hub answers next: (status, body) for model info, tree and resolve."""

    def __init__(self) -> None:
        self.info: tuple[int, bytes] = (200, b"{}")
        self.tree: tuple[int, bytes] = (200, b"[]")
        self.head: tuple[int, dict[str, str]] = (200, {})


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms delayed-ACK wait
    replies: _Replies

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/api/agent-harnesses":
            self._send(200, b'{"standardEnvVars": [], "harnesses": {}}')
        elif "/tree/" in path:
            self._send(*self.replies.tree)
        elif path.startswith("/api/models/"):
            self._send(*self.replies.info)
        else:
            self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})

    def do_HEAD(self) -> None:
        status, headers = self.replies.head
        self._send(status, b"", headers)


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Replies]]:
    replies = _Replies()
    handler = type("Handler", (_HubHandler,), {"replies": replies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        isolate_hf_client(mp, tmp_path_factory.mktemp("hf-home"))
        try:
            yield f"http://127.0.0.1:{server.server_port}", replies
        finally:
            server.shutdown()
            server.server_close()


SHA = "0123456789abcdef0123456789abcdef01234567"
TREE_ENTRY = {
    "type": "file",
    "oid": "1" * 40,
    "size": 1234,
    "path": "model.safetensors",
    "lfs": {"oid": "a" * 64, "size": 1234, "pointerSize": 134},
}
HUB_PATHS = st.sampled_from(
    ["model.safetensors", "../x", "/etc/x", "a/../../x", "a//b", "unet/model.bin", "x\\..\\y"]
)


@st.composite
def hub_replies(draw: st.DrawFn) -> tuple[tuple[int, bytes], tuple[int, bytes], bool]:
    info: Any = {"id": "org/repo", "sha": SHA, "private": False, "gated": False, "siblings": []}
    info = draw(mutated_doc(info))
    entries: list[Any] = []
    for _ in range(draw(st.integers(0, 3))):
        entry = dict(TREE_ENTRY, path=draw(HUB_PATHS | TEXT))
        entries.append(draw(mutated_doc(entry)))
    tree: Any = entries if draw(st.integers(0, 9)) else draw(JSON_VALUES)
    info_text, tree_text = json_text(info), json_text(tree)
    if draw(st.integers(0, 5)) == 0:
        info_text = draw(mutated_text(info_text))
    if draw(st.integers(0, 5)) == 0:
        tree_text = draw(mutated_text(tree_text))
    status = draw(st.sampled_from([200] * 12 + [401, 403, 404, 429, 500]))
    return (status, utf8(info_text)), (200, utf8(tree_text)), draw(st.booleans())


@FUZZ
@given(replies=hub_replies(), files=st.sampled_from([(), ("*.safetensors",), ("*",)]))
def test_fuzz_hub_replies(
    fake_hub: tuple[str, _Replies],
    replies: tuple[tuple[int, bytes], tuple[int, bytes], bool],
    files: tuple[str, ...],
) -> None:
    COUNTS["Hub JSON replies (model info, tree) via huggingface_hub"] += 1
    endpoint, answers = fake_hub
    answers.info, answers.tree, head_ok = replies
    answers.head = (200, {"X-Repo-Commit": SHA, "ETag": '"e"'}) if head_ok else (403, {})
    source = HfSource("org/repo", "main", files)
    try:
        commit, found = hf.resolve(source, endpoint=endpoint)
    except SourceError as exc:
        assert str(exc).startswith("hf:org/repo@main: ")
        return
    assert isinstance(commit, str) and commit
    assert found
    for f in found:
        assert_safe_relpath(f.path)
        assert f.url.startswith(endpoint + "/org/repo/resolve/")
        assert isinstance(f.size, int) and f.size >= 0
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.sha256
    if len(found) == 1 and "/" not in found[0].path:
        assert_clean_file_name(found[0].path)


# --- model file headers (safetensors, GGUF): test_probe.py's generator, in the published run ---


@FUZZ
@given(data=PROBE_FILES)
def test_fuzz_model_file_headers(workdir: Path, data: bytes) -> None:
    COUNTS["model file headers (probe_file: safetensors, GGUF)"] += 1
    path = workdir / "model.bin"
    path.write_bytes(data)
    probe = probe_file(path)  # never raises, by contract: a file it cannot read is UNKNOWN
    assert isinstance(probe, Probe) and probe.reason and probe.format in Format
    if probe.format is Format.UNKNOWN:
        assert (probe.type, probe.kind, probe.family) == (None, None, None)


# --- regressions found by the fuzzers and the review (kept as plain examples) -----------------

BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
)


@pytest.mark.parametrize(
    "text",
    [
        "&a [*a]",
        "version: 1\nmodels: &m [*m]",
        "a: &a {b: *a}",
        BILLION_LAUGHS,
        "[" * 100_000,
        "version: " + "9" * 5000,
    ],
    ids=["alias-in-itself", "models-alias-loop", "map-alias-loop", "billion-laughs", "deep", "big"],
)
def test_hostile_yaml_gives_one_clean_problem_quickly(workdir: Path, text: str) -> None:
    """Found here: a self-referring alias raised RecursionError, and a "billion laughs" document
    (aliases of aliases) took hours: the reader walked every expansion."""
    path = workdir / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInputError) as caught:
        load_manifest(path, home=workdir)
    assert_clean_problems(caught.value)


def test_aliases_that_a_manifest_may_use_still_work(workdir: Path) -> None:
    """Anchors, aliases and merge keys stay usable, and a '&' inside a URL is no anchor."""
    text = (
        "version: 1\nlibrary: lib\nmodels:\n"
        "  - &first {name: A, type: diffusion, family: sdxl, kind: lora,\n"
        "            source: {url: 'https://x.invalid/a.bin?a=1&b=2'}}\n"
        "  - {<<: *first, name: B, source: {url: 'https://x.invalid/b.bin'}}\n"
        "  - *first\n"
    )
    path = workdir / "aliases.yaml"
    path.write_text(text.replace("  - *first\n", ""))
    manifest = load_manifest(path, home=workdir)
    assert [m.id for m in manifest.models] == ["diffusion/sdxl/a", "diffusion/sdxl/b"]
    path.write_text(text)
    with pytest.raises(InvalidInputError) as caught:  # the same model twice
        load_manifest(path, home=workdir)
    assert "duplicate model id" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000, "1" * 5000, '{"size": 1' + "0" * 5000 + "}"],
)
def test_hostile_json_gives_one_clean_problem(workdir: Path, text: str) -> None:
    """Found here: deeply nested JSON raised RecursionError and a 5000-digit number ValueError
    from every JSON reader (metadata, overrides, translations, the lock, index rebuild, plan)."""
    root, folder = _model_folder(workdir, text, text)
    for reader in (read_metadata, read_overrides):
        with pytest.raises(InvalidInputError):
            reader(folder / f"{'metadata' if reader is read_metadata else 'overrides'}.json")
    with pytest.raises(InvalidInputError):
        read_translation(text, "t.json")
    (workdir / "mlib.lock").write_text(text)
    with pytest.raises(LockFileError):
        read_lock(workdir / "mlib.lock")
    assert isinstance(read_entry("diffusion/sdxl/a", str(folder)), Skipped)
    (model,) = observe.observe_library(root).values()
    assert model.metadata is None and model.error
