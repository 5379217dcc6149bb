"""Reading a real library tree: which folders are models, and how bad files are reported; plus the
fast metadata checker against the JSON Schema it stands in for."""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.synth import make_library
from reconciler import library
from reconciler.index import Entry, _row_values
from reconciler.library import LibraryModels, Skipped, read_entries
from reconciler.loaders import validator
from reconciler.metadata import (
    Malformed,
    dumps,
    metadata_from_dict,
    metadata_to_dict,
    overrides_from_dict,
)
from reconciler.model import (
    FileEntry,
    HfSource,
    ImportMode,
    LocalSource,
    Metadata,
    ModelType,
    Overrides,
    UrlSource,
)

Doc = dict[str, Any]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------- discovery


def test_models_are_found_at_depth_three_only(tmp_path: Path) -> None:
    info = make_library(tmp_path, 12, seed=5)
    ids = {m["id"] for m in info["models"]}
    sample = read_json(tmp_path / info["models"][0]["id"] / "metadata.json")
    some_model = tmp_path / info["models"][1]["id"]
    # metadata.json files at every other depth, each a valid document
    for where in (
        tmp_path,
        tmp_path / "llm",
        tmp_path / "llm" / "llama",
        some_model / "sub",
        tmp_path / "llm" / "llama" / "deep" / "er",
        tmp_path / "a" / "b" / "c" / "d",
    ):
        write_json(where / "metadata.json", sample)
    (tmp_path / "llm" / "llama" / "empty-folder").mkdir()  # at depth 3 but no metadata.json
    (tmp_path / "llm" / "llama" / "a-file").write_text("not a folder")

    entries, skipped = read_entries(tmp_path)

    assert skipped == []
    assert len(entries) == 12
    assert {e.meta.id for e in entries} == ids
    by_id = {e.meta.id: e for e in entries}
    for m in info["models"]:
        e = by_id[m["id"]]
        assert e.metadata_json == (tmp_path / m["id"] / "metadata.json").read_text()
        assert (e.meta.tags, e.meta.kind, e.meta.size_bytes) == (
            m["tags"],
            m["kind"],
            m["size_bytes"],
        )


def test_dot_folders_are_never_models(tmp_path: Path) -> None:
    info = make_library(tmp_path, 5, seed=6, with_overrides=True)
    sample = read_json(tmp_path / info["models"][0]["id"] / "metadata.json")
    for hidden in (
        ".mlib/staging/x",
        ".mlib/trash/llm/llama/old/llm/llama/old",
        ".mlib/trash/llm/llama",
        "llm/.cache/x",
        "llm/llama/.partial-download",
        ".hidden/llama/m",
    ):
        write_json(tmp_path / hidden / "metadata.json", sample)
        (tmp_path / hidden / "overrides.json").write_text("{broken")

    entries, skipped = read_entries(tmp_path)

    assert skipped == []
    assert {e.meta.id for e in entries} == {m["id"] for m in info["models"]}


def test_each_bad_file_is_skipped_with_its_reason_and_the_rest_indexed(tmp_path: Path) -> None:
    info = make_library(tmp_path, 30, seed=7, with_overrides=True)
    ids = [m["id"] for m in info["models"]]
    bad: dict[str, tuple[str, list[str]]] = {}  # id -> (file shown, words the reason must have)

    def meta_path(model_id: str) -> Path:
        return tmp_path / model_id / "metadata.json"

    def edit(model_id: str, change: Callable[[Doc], None]) -> None:
        doc = read_json(meta_path(model_id))
        change(doc)
        write_json(meta_path(model_id), doc)

    # invalid JSON
    meta_path(ids[0]).write_text('{\n  "id": "x",\n  oops\n}\n')
    bad[ids[0]] = ("metadata.json", ["invalid JSON at line 3"])
    # valid JSON that fails the schema: a file size given as a string
    edit(ids[1], lambda d: d["files"][0].update(size="1234"))
    bad[ids[1]] = ("metadata.json", ["schema error", "files[0].size", "got string"])
    # a negative total size
    edit(ids[2], lambda d: d.update(size_bytes=-1))
    bad[ids[2]] = ("metadata.json", ["schema error", "size_bytes"])
    # an id that is not its folder
    edit(ids[3], lambda d: d.update(id="llm/llama/somewhere-else"))
    bad[ids[3]] = ("metadata.json", ["'llm/llama/somewhere-else'", "differs from its folder"])
    # not UTF-8
    meta_path(ids[4]).write_bytes(b'{"id": "\xff\xfe"}')
    bad[ids[4]] = ("metadata.json", ["not UTF-8"])
    # shapes that once crashed the fast converter (TypeError, KeyError) instead of failing it
    edit(ids[5], lambda d: d.update(model_type=[]))
    bad[ids[5]] = ("metadata.json", ["schema error", "model_type", "is not allowed"])
    edit(ids[6], lambda d: d.update(source={"mode": "copy"}))
    bad[ids[6]] = ("metadata.json", ["schema error", "source"])
    # overrides.json that cannot be read (a folder), is not JSON, or fails its schema
    overrides = [tmp_path / i / "overrides.json" for i in ids[7:10]]
    for path in overrides:
        path.unlink(missing_ok=True)
    overrides[0].mkdir()
    bad[ids[7]] = ("overrides.json", ["unreadable", "Is a directory"])
    overrides[1].write_text('{"schema_version": 1, "apps": {')
    bad[ids[8]] = ("overrides.json", ["invalid JSON"])
    write_json(overrides[2], {"schema_version": 1, "apps": {"comfy": {"enabled": "no"}}})
    bad[ids[9]] = ("overrides.json", ["schema error", "apps.comfy"])

    entries, skipped = read_entries(tmp_path)

    assert {e.meta.id for e in entries} == set(ids) - set(bad)
    assert len(skipped) == len(bad)
    by_path = {s.path: s for s in skipped}
    for model_id, (file, words) in bad.items():
        found = by_path[f"{model_id}/{file}"]
        assert isinstance(found, Skipped)
        for word in words:
            assert word in found.reason, (model_id, found.reason)
    # the overrides of the good models were read
    for e in entries:
        path = tmp_path / e.meta.id / "overrides.json"
        expected = overrides_from_dict(read_json(path)) if path.exists() else Overrides()
        assert e.overrides == expected
    assert any(e.overrides.apps for e in entries)


def break_some(root: Path, ids: list[str]) -> None:
    """Spoil a few models in the ways a library goes wrong (each one is skipped, not indexed)."""
    (root / ids[1] / "metadata.json").write_text('{"id": ')
    doc = read_json(root / ids[5] / "metadata.json")
    doc["files"][0]["size"] = "big"
    write_json(root / ids[5] / "metadata.json", doc)
    (root / ids[8] / "metadata.json").unlink()  # no metadata.json: not a model at all
    (root / ids[13] / "overrides.json").unlink(missing_ok=True)
    (root / ids[13] / "overrides.json").write_text("[")


def small_chunks(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Workers for a library of a few dozen models, on two cores even if there is only one."""
    monkeypatch.setattr(library, "_CHUNK", size)
    monkeypatch.setattr(library, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    # Idle pool threads that earlier tests' servers leave (AnyIO's) would turn forking off;
    # these workers take no lock such a thread could hold.
    monkeypatch.setattr(threading, "active_count", lambda: 1)


def test_workers_read_what_one_process_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = make_library(tmp_path, 60, seed=8, with_overrides=True)
    break_some(tmp_path, [m["id"] for m in info["models"]])
    serial = LibraryModels(tmp_path)
    expected = [_row_values(e) for e in serial]
    assert len(serial.skipped) == 3 and len(expected) == 56

    small_chunks(monkeypatch, 7)
    parent = os.getpid()
    models = LibraryModels(tmp_path)
    batches = list(models.converted(lambda e: (os.getpid(), *_row_values(e))))

    assert [row[1:] for batch in batches for row in batch] == expected
    assert models.skipped == serial.skipped
    assert all(0 < len(batch) <= 7 for batch in batches)
    assert {row[0] for batch in batches for row in batch} - {parent}  # workers did the reading


def test_the_chunks_of_a_worker_that_fails_are_read_by_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = make_library(tmp_path, 60, seed=9, with_overrides=True)
    ids = [m["id"] for m in info["models"]]
    break_some(tmp_path, ids)
    expected = [_row_values(e) for e in LibraryModels(tmp_path)]
    small_chunks(monkeypatch, 5)
    parent = os.getpid()

    def convert(entry: Entry) -> tuple[Any, ...]:
        if os.getpid() != parent and entry.meta.id in (ids[22], ids[40]):
            os._exit(3)  # a worker dies half-way (or two of them)
        return _row_values(entry)

    models = LibraryModels(tmp_path)
    assert [row for batch in models.converted(convert) for row in batch] == expected
    assert len(models.skipped) == 3


def test_an_unfinished_conversion_stops_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_library(tmp_path, 60, seed=10)
    small_chunks(monkeypatch, 5)
    forked: list[int] = []
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    batches = LibraryModels(tmp_path).converted(_row_values)
    next(batches)
    batches.close()  # e.g. the index failed to insert the first batch
    assert forked
    for pid in forked:  # reaped: waiting again finds no such child
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, 0)


def test_text_is_read_as_text_mode_reads_it(tmp_path: Path) -> None:
    info = make_library(tmp_path, 3, seed=12)
    first, second, third = (tmp_path / m["id"] for m in info["models"])
    crlf = (first / "metadata.json").read_bytes().replace(b"\n", b"\r\n")
    (first / "metadata.json").write_bytes(crlf)
    os.mkfifo(second / "metadata.json.tmp")
    (second / "metadata.json").unlink()
    os.rename(second / "metadata.json.tmp", second / "metadata.json")  # a FIFO is not a model
    (third / "overrides.json").mkdir()

    entries, skipped = read_entries(tmp_path)

    (entry,) = entries
    assert entry.metadata_json == (first / "metadata.json").read_text(encoding="utf-8")
    assert "\r" not in entry.metadata_json
    assert skipped == [
        Skipped(f"{info['models'][2]['id']}/overrides.json", "unreadable: Is a directory")
    ]


# ------------------------------------------------------------ fast checker against the JSON Schema

SLUG = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
SOURCES = st.one_of(
    st.builds(
        HfSource,
        repo=st.text(max_size=10),
        revision=st.text(max_size=10),
        files=st.lists(st.text(max_size=5), max_size=2).map(tuple),
        exclude=st.lists(st.text(max_size=5), max_size=2).map(tuple),
    ),
    st.builds(UrlSource, url=st.text(max_size=10), filename=st.none() | st.text(min_size=1)),
    st.builds(LocalSource, path=st.text(max_size=10), mode=st.sampled_from(ImportMode)),
)


@st.composite
def metadata_values(draw: st.DrawFn) -> Metadata:
    model_type = draw(st.sampled_from(ModelType))
    family, name = draw(SLUG), draw(SLUG)
    return Metadata(
        id=f"{model_type.value}/{family}/{name}",
        official_name=draw(st.text(min_size=1, max_size=12)),
        cleaned_name=name,
        model_type=model_type,
        family=family,
        kind=draw(SLUG),
        source=draw(SOURCES),
        files=tuple(
            draw(
                st.lists(
                    st.builds(
                        FileEntry,
                        # a path inside the model folder: no '', '.' or '..' component, no
                        # leading '/', backslash or NUL (metadata that escapes it is refused)
                        path=st.lists(
                            st.text(
                                st.characters(
                                    exclude_categories=["Cs"], exclude_characters="/\\\0"
                                ),
                                min_size=1,
                            ).filter(lambda part: part.rstrip("\n") not in ("", ".", "..")),
                            min_size=1,
                            max_size=3,
                        ).map("/".join),
                        size=st.integers(0, 2**50),
                        sha256=HEX,
                        blake3=HEX,
                    ),
                    max_size=3,
                )
            )
        ),
        added_at=draw(st.text(max_size=25)),
        updated_at=draw(st.text(max_size=25)),
        tags=tuple(draw(st.lists(st.text(min_size=1, max_size=6), max_size=4))),
    )


def as_document(meta: Metadata) -> Doc:
    """The document as a metadata.json file holds it (through the JSON text, like the index)."""
    doc: Doc = json.loads(dumps(metadata_to_dict(meta)))
    return doc


def schema_accepts(doc: Any) -> bool:
    return not list(validator("metadata").iter_errors(doc))


def fast_accepts(doc: Any) -> bool:
    """Whether the fast path takes ``doc``; any exception but Malformed fails the test."""
    try:
        metadata_from_dict(doc)
    except Malformed:
        return False
    return True


def test_sample_document_is_valid() -> None:
    doc = as_document(base_metadata())
    assert schema_accepts(doc)
    assert fast_accepts(doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=metadata_values())
def test_fast_checker_accepts_every_valid_document(meta: Metadata) -> None:
    doc = as_document(meta)
    assert schema_accepts(doc)
    assert metadata_from_dict(doc) == meta
    assert metadata_to_dict(metadata_from_dict(doc)) == doc


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
TRICKY_VALUES: list[Any] = [
    -1, 0, 1.5, 2.0, -0.0, 1e300, True, False, None, "", "1", "llm", "LLM", "x/y", "a/b/c",
    "Bad Slug", "a" * 129, "a" * 63, "a" * 64, "a" * 65, "A" * 64, "g" * 64, "a" * 64 + "\n",
    "copy", "link", [], {}, [""], ["x"], [1], {"x": 1}, {"sha256": "a" * 64},
]  # fmt: skip
TRICKY = st.sampled_from(TRICKY_VALUES)
FIELD_NAMES = st.sampled_from(
    ["hf", "url", "path", "mode", "revision", "files", "sha256", "blake3", "size", "extra", ""]
)


def locations(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, child in value.items():
            yield from locations(child, (*at, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from locations(child, (*at, i))


def get(doc: Any, at: tuple[Any, ...]) -> Any:
    for key in at:
        doc = doc[key]
    return doc


STRING_EDITS: list[Callable[[str], Any]] = [
    str.upper, str.title, lambda s: "", lambda s: s[:-1], lambda s: s + "\n", lambda s: s + "x",
    lambda s: "A" + s, lambda s: "-" + s, lambda s: s + "/", lambda s: s + " y", lambda s: s * 3,
    lambda s: s.replace("/", ""), lambda s: s.replace("/", "//"), lambda s: s + "x" * 128,
    lambda s: [s], lambda s: None,
]  # fmt: skip
NUMBER_EDITS: list[Callable[[Any], Any]] = [
    lambda n: -1 - n, lambda n: n + 0.5, float, str, bool, lambda n: None, lambda n: [n],
]  # fmt: skip


@st.composite
def near_miss(draw: st.DrawFn, value: Any) -> Any:
    """A value close to ``value``: the edits a checker is most likely to let through."""
    if isinstance(value, str):
        return draw(st.sampled_from(STRING_EDITS))(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return draw(st.sampled_from(NUMBER_EDITS))(value)
    if isinstance(value, list):
        return draw(st.sampled_from([[], [*value, draw(TRICKY)], value[1:], {"0": value}]))
    if isinstance(value, dict):
        return draw(st.sampled_from([{}, list(value.values()), str(value)]))
    return draw(TRICKY)


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid document with one or two changes: drop, near miss, another value, an added key."""
    doc: Any = copy.deepcopy(as_document(draw(metadata_values())))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        every = list(locations(doc))
        top = [at for at in every if len(at) == 1] or every  # half the time a top-level field
        at = draw(st.sampled_from(top) | st.sampled_from(every))
        target = get(doc, at)
        action = draw(st.sampled_from(["drop", "near", "near", "near", "other", "add"]))
        if action == "drop" and at:
            del get(doc, at[:-1])[at[-1]]
        elif action == "add" and isinstance(target, dict):
            target[draw(FIELD_NAMES | st.text(max_size=4))] = draw(TRICKY | JSON_VALUES)
        else:
            new = draw(near_miss(target)) if action == "near" else draw(TRICKY | JSON_VALUES)
            if at:
                get(doc, at[:-1])[at[-1]] = new
            else:
                doc = new
    return doc


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(doc=mutated_documents())
def test_fast_checker_never_accepts_what_the_schema_rejects(doc: Any) -> None:
    if fast_accepts(doc):
        assert schema_accepts(doc), list(validator("metadata").iter_errors(doc))


def single_changes(doc: Doc) -> Iterator[tuple[str, Any]]:
    """Every document one change away from ``doc``: each field dropped, near-missed or replaced."""
    for at in locations(doc):
        if not at:
            continue
        value = get(doc, at)
        edits: list[Any] = list(TRICKY_VALUES)
        if isinstance(value, str):
            edits += [edit(value) for edit in STRING_EDITS]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            edits += [edit(value) for edit in NUMBER_EDITS]
        elif isinstance(value, list):
            edits += [[], [*value, 1], [*value, ""], value[1:]]
        elif isinstance(value, dict):
            edits += [{}, list(value.values()), {**value, "extra": 1}]
        changed = copy.deepcopy(doc)
        del get(changed, at[:-1])[at[-1]]
        yield f"drop {at}", changed
        for edit in edits:
            changed = copy.deepcopy(doc)
            get(changed, at[:-1])[at[-1]] = edit
            yield f"{at} = {edit!r}", changed


def test_no_single_change_gets_past_the_fast_checker_alone() -> None:
    meta = base_metadata()
    bases = [
        meta,
        replace(meta, source=UrlSource("https://x.invalid/a.safetensors", "a.safetensors")),
        replace(meta, source=LocalSource("/downloads/a.safetensors", ImportMode.MOVE)),
    ]
    laxer = []
    tried = rejected = 0
    for base in bases:
        for what, doc in single_changes(as_document(base)):
            tried += 1
            if not fast_accepts(doc):
                rejected += 1
            elif not schema_accepts(doc):
                laxer.append(what)
    assert laxer == []
    assert tried > 1000 and rejected > tried // 2  # the sweep really tries bad documents


def base_metadata() -> Metadata:
    return Metadata(
        id="diffusion/sdxl/sd_xl_base_1.0",
        official_name="SDXL Base 1.0",
        cleaned_name="sd_xl_base_1.0",
        model_type=ModelType.DIFFUSION,
        family="sdxl",
        kind="checkpoint",
        source=HfSource(repo="stabilityai/sdxl", files=("sd_xl_base_1.0.safetensors",)),
        files=(
            FileEntry("sd_xl_base_1.0.safetensors", 6_938_078_334, "a" * 64, "b" * 64),
            FileEntry("config.json", 1000, "c" * 64, "d" * 64),
        ),
        added_at="2025-01-01T00:00:00Z",
        updated_at="2025-01-02T00:00:00Z",
        tags=("base", "fp16"),
    )


def _set(at: tuple[Any, ...], value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        get(doc, at[:-1])[at[-1]] = value

    return change


def _drop(at: tuple[Any, ...]) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        del get(doc, at[:-1])[at[-1]]

    return change


REJECTED = {
    "no id": _drop(("id",)),
    "no hashes": _drop(("hashes",)),
    "file without sha256": _drop(("files", 0, "sha256")),
    "hashes without blake3": _drop(("hashes", "blake3")),
    "size is a string": _set(("files", 0, "size"), "1000"),
    "size is negative": _set(("files", 1, "size"), -1),
    "size is fractional": _set(("files", 1, "size"), 1.5),
    "size is a boolean": _set(("files", 1, "size"), True),
    "size_bytes negative": _set(("size_bytes",), -5),
    "sha256 uppercase": _set(("files", 0, "sha256"), "A" * 64),
    "sha256 too short": _set(("files", 0, "sha256"), "a" * 63),
    "blake3 not hex": _set(("hashes", "blake3"), "g" * 64),
    "hashes.sha256 null": _set(("hashes", "sha256"), None),
    "extra key in a file": _set(("files", 0, "mtime"), 1),
    "extra key in hashes": _set(("hashes", "md5"), "a" * 32),
    "extra key in source": _set(("source", "token"), "x"),
    "empty source": _set(("source",), {}),
    "source without an origin": _set(("source",), {"revision": "main"}),
    "source with two origins": _set(("source", "url"), "https://x.invalid/a"),
    "unknown import mode": _set(("source", "mode"), "link"),
    "hf is a number": _set(("source", "hf"), 1),
    "source files hold a number": _set(("source", "files"), [1]),
    "id with capitals": _set(("id",), "Diffusion/sdxl/x"),
    "id with two parts": _set(("id",), "diffusion/sdxl"),
    "cleaned_name too long": _set(("cleaned_name",), "a" * 129),
    "empty official_name": _set(("official_name",), ""),
    "empty tag": _set(("tags",), [""]),
    "tags is a string": _set(("tags",), "base"),
    "model_type in capitals": _set(("model_type",), "LLM"),
    "model_type is a list": _set(("model_type",), []),
    "schema_version 2": _set(("schema_version",), 2),
    "schema_version true": _set(("schema_version",), True),
    "files is an object": _set(("files",), {}),
}
ACCEPTED = {
    "an extra top-level field": _set(("comment",), "mine"),
    "a size written as 2.0": _set(("files", 1, "size"), 2.0),
    "a size beyond the range of a float": _set(("files", 1, "size"), 10**400),
    "a total size written as 2.0": _set(("size_bytes",), 2.0),
}


@pytest.mark.parametrize("change", REJECTED.values(), ids=REJECTED.keys())
def test_both_checkers_reject(change: Callable[[Doc], None]) -> None:
    doc = as_document(base_metadata())
    change(doc)
    assert not schema_accepts(doc)
    with pytest.raises(Malformed):
        metadata_from_dict(doc)


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_both_checkers_accept(change: Callable[[Doc], None]) -> None:
    doc = as_document(base_metadata())
    change(doc)
    assert schema_accepts(doc)
    assert fast_accepts(doc)
