"""models.db on real SQLite files: migrations, refusal of newer files, transactional rebuild, and
query filters checked against the exact counts of a synthetic library and a brute-force filter."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.synth import APPS, VOCABULARY, make_library
from reconciler import api
from reconciler.errors import IndexDbError
from reconciler.index import DB_NAME, SCHEMA_VERSION, Entry, Query, open_index
from reconciler.metadata import dumps, metadata_to_dict
from reconciler.model import (
    AppOverride,
    FileEntry,
    HfSource,
    Metadata,
    ModelType,
    Overrides,
)

HEX_A = "a" * 64
HEX_B = "b" * 64


def entry(
    name: str,
    *,
    tags: tuple[str, ...] = (),
    type_: ModelType = ModelType.LLM,
    family: str = "fam",
    kind: str = "gguf",
    official: str | None = None,
    apps: dict[str, bool] | None = None,
) -> Entry:
    meta = Metadata(
        id=f"{type_.value}/{family}/{name}",
        official_name=official or name.upper(),
        cleaned_name=name,
        model_type=type_,
        family=family,
        kind=kind,
        source=HfSource(repo=f"org/{name}"),
        files=(FileEntry(f"{name}.gguf", 1234, HEX_A, HEX_B),),
        added_at="2025-01-01T00:00:00Z",
        updated_at="2025-01-02T00:00:00Z",
        tags=tags,
    )
    overrides = Overrides(
        apps=tuple(AppOverride(target=a, enabled=e) for a, e in sorted((apps or {}).items()))
    )
    return Entry(meta, overrides, dumps(metadata_to_dict(meta)).decode())


Lib = tuple[Path, dict[str, Any]]


def ids_of(rows: list[Any]) -> list[str]:
    return [r.id for r in rows]


# ------------------------------------------------------------------------------ opening, migrations


def test_a_new_index_is_migrated_to_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    with open_index(tmp_path) as index:
        assert index.count() == 0
    assert (tmp_path / DB_NAME).is_file()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"models", "model_tags", "file_stats", "links"}
    # Opening again is a no-op: nothing to migrate, nothing lost.
    with open_index(tmp_path) as index:
        index.upsert(entry("a", tags=("x",)))
    with open_index(tmp_path) as index:
        assert index.ids() == {"llm/fam/a"}


def test_an_existing_empty_file_is_migrated(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"")
    with open_index(tmp_path) as index:
        assert index.conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert index.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert index.count() == 0


def test_a_db_from_a_newer_mlib_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute("INSERT INTO future VALUES (42)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    with pytest.raises(IndexDbError) as info, open_index(tmp_path):
        pytest.fail("a newer index must not open")
    message = str(info.value)
    assert str(path) in message
    assert f"newer mlib (schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION})" in message
    assert "mlib index rebuild" in message

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert conn.execute("SELECT x FROM future").fetchall() == [(42,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"future"}


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite at all, just some bytes" * 100)
    with (
        pytest.raises(IndexDbError, match=r"delete it and run 'mlib index rebuild'"),
        open_index(tmp_path),
    ):
        pytest.fail("garbage must not open as an index")


# ----------------------------------------------------------------------------- writing


def test_rebuild_is_one_transaction(tmp_path: Path) -> None:
    first = [entry(f"m{i:02d}", tags=("old", f"t{i % 3}")) for i in range(30)]
    with open_index(tmp_path) as index:
        assert index.rebuild(first) == 30
        before = index.query(Query())
        before_tagged = index.query(Query(tags=("t1",)))

    def failing() -> Iterator[Entry]:
        for i in range(10):
            yield entry(f"new{i}", tags=("new",))
        raise RuntimeError("disk went away")

    with open_index(tmp_path) as index, pytest.raises(RuntimeError, match="disk went away"):
        index.rebuild(failing())

    with open_index(tmp_path) as index:
        assert index.query(Query()) == before
        assert index.query(Query(tags=("t1",))) == before_tagged
        assert index.query(Query(tags=("new",))) == []
        assert index.count() == 30
        (tag_rows,) = index.conn.execute("SELECT count(*) FROM model_tags").fetchone()
        assert tag_rows == 60
        # The indexes dropped with the tables are back too.
        names = {r[0] for r in index.conn.execute("SELECT name FROM sqlite_schema")}
        assert {"models_type", "models_kind", "model_tags_model"} <= names


def test_rebuild_replaces_models_and_keeps_links_and_file_stats(tmp_path: Path) -> None:
    stats = [("/lib/llm/a/a.gguf", 10, 123456789, 77, HEX_A, HEX_B)]
    links = [
        ("comfy", "/apps/comfy/models/a.gguf", "llm/fam/a", "a.gguf", "symlink"),
        ("forge", "/apps/forge/models/a.gguf", "llm/fam/a", "a.gguf", "hardlink"),
    ]
    with open_index(tmp_path) as index:
        index.rebuild([entry("a"), entry("b")])
        index.conn.execute("BEGIN")
        index.conn.executemany("INSERT INTO file_stats VALUES (?, ?, ?, ?, ?, ?)", stats)
        index.conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?)", links)
        index.conn.execute("COMMIT")
    with open_index(tmp_path) as index:
        assert index.rebuild([entry("c", tags=("x",))]) == 1
        assert index.ids() == {"llm/fam/c"}
        assert index.conn.execute("SELECT * FROM file_stats").fetchall() == stats
        assert index.conn.execute("SELECT * FROM links ORDER BY target").fetchall() == links


def test_upsert_then_delete(tmp_path: Path) -> None:
    with open_index(tmp_path) as index:
        index.rebuild([entry("a", tags=("x",))])
        index.upsert(entry("b", tags=("x", "y", "y")))
        assert ids_of(index.query(Query(tags=("x",)))) == ["llm/fam/a", "llm/fam/b"]
        assert ids_of(index.query(Query(tags=("y",)))) == ["llm/fam/b"]

        # Upserting again replaces the row and its tags (no stale tag rows).
        index.upsert(entry("b", tags=("z",), kind="lora"))
        assert index.count() == 2
        assert ids_of(index.query(Query(tags=("y",)))) == []
        assert ids_of(index.query(Query(tags=("x",)))) == ["llm/fam/a"]
        (row,) = index.query(Query(tags=("z",)))
        assert (row.id, row.kind, row.tags) == ("llm/fam/b", "lora", ("z",))

        index.delete("llm/fam/b")
        assert index.ids() == {"llm/fam/a"}
        assert index.conn.execute(
            "SELECT count(*) FROM model_tags WHERE model_id = 'llm/fam/b'"
        ).fetchone() == (0,)
        index.delete("llm/fam/nothing")  # deleting an unknown id is harmless
        assert index.count() == 1


def test_a_row_carries_the_model_values(tmp_path: Path) -> None:
    e = entry("r", tags=("b", "a"), official="Official R", apps={"comfy": False})
    with open_index(tmp_path) as index:
        index.rebuild([e])
        (row,) = index.query(Query())
        (metadata_json,) = index.conn.execute("SELECT metadata_json FROM models").fetchone()
    assert row.id == row.path == "llm/fam/r"
    assert (row.official_name, row.cleaned_name, row.model_type) == ("Official R", "r", "llm")
    assert (row.family, row.kind, row.size_bytes, row.sha256) == ("fam", "gguf", 1234, HEX_A)
    assert row.tags == ("b", "a")  # the order of metadata.json is kept
    assert row.overrides == {"comfy": {"enabled": False, "versions": "*"}}
    assert row.updated_at == "2025-01-02T00:00:00Z"
    assert metadata_json == e.metadata_json


# ------------------------------------------------------------------- queries on a synthetic library


@pytest.fixture(scope="module")
def synth_lib(tmp_path_factory: pytest.TempPathFactory) -> Lib:
    root = tmp_path_factory.mktemp("synth")
    info = make_library(root, 600, seed=3, with_overrides=True)
    report = api.rebuild_index(root)
    assert (report.indexed, report.skipped) == (600, ())
    return root, info


def q(root: Path, **filters: Any) -> list[str]:
    return ids_of(api.query(root, Query(**filters)))


def test_every_filter_count_matches_the_known_counts(synth_lib: Lib) -> None:
    root, info = synth_lib
    everything = q(root)
    assert everything == sorted(m["id"] for m in info["models"])
    for field, key in (("types", "type"), ("families", "family"), ("kinds", "kind")):
        assert info[field], field
        for value, expected in info[field].items():
            found = q(root, **{key: value})
            assert len(found) == expected, (key, value)
    assert set(info["tags"]) == set(VOCABULARY)
    for tag, expected in info["tags"].items():
        assert len(q(root, tags=(tag,))) == expected, tag
    assert q(root, type="llm", family="sdxl") == []  # sdxl is a diffusion family
    assert q(root, tags=("no-such-tag",)) == []


def test_several_tags_must_all_match(synth_lib: Lib) -> None:
    root, info = synth_lib
    models = info["models"]
    for pair in itertools.combinations(VOCABULARY[:8], 2):
        expected = [m["id"] for m in models if set(pair) <= set(m["tags"])]
        assert q(root, tags=pair) == expected, pair
        assert len(expected) < min(info["tags"][t] for t in pair)
    triple = ("base", "fp16", "anime")
    expected = [m["id"] for m in models if set(triple) <= set(m["tags"])]
    assert q(root, tags=triple) == expected
    assert q(root, tags=("base", "base")) == q(root, tags=("base",))
    # combined with the plain filters
    expected = [
        m["id"]
        for m in models
        if m["type"] == "diffusion" and m["kind"] == "lora" and "style" in m["tags"]
    ]
    assert expected
    assert q(root, type="diffusion", kind="lora", tags=("style",)) == expected


def test_app_filter_follows_overrides(synth_lib: Lib) -> None:
    root, info = synth_lib
    everything = set(q(root))
    for app in APPS:
        enabled = q(root, app=app)
        assert len(enabled) == info["apps"][app]
        disabled = {m["id"] for m in info["models"] if m["apps"].get(app) is False}
        assert 0 < len(disabled) < len(everything)
        assert everything - set(enabled) == disabled
    # An app no override names: every model is enabled for it.
    assert len(q(root, app="unknown-app")) == info["n"]


def test_search_is_case_insensitive_on_names_and_ids(
    synth_lib: Lib,
) -> None:
    root, info = synth_lib
    sdxl = info["families"]["sdxl"]
    # official names read "Synth SDXL ...": any case of the text finds them
    for needle in ("synth sdxl", "SYNTH SDXL", "Synth SdXl"):
        assert len(q(root, search=needle)) == sdxl
    one = info["models"][7]
    assert q(root, search=one["official_name"].upper()) == [one["id"]]
    suffix = one["id"][-6:]  # "000123": in the id, the cleaned name and the official name
    assert q(root, search=suffix) == [m["id"] for m in info["models"] if suffix in m["id"]]
    assert q(root, search=one["id"].upper()) == [one["id"]]
    assert q(root, search="nothing like this") == []


def test_search_folds_case_beyond_ascii(tmp_path: Path) -> None:
    with open_index(tmp_path) as index:
        index.rebuild(
            [
                entry("elan", official="Élan Vital"),
                entry("aero", official="ÆRØ Ωmega"),
                entry("plain", official="Plain"),
            ]
        )
    assert q(tmp_path, search="élan") == ["llm/fam/elan"]
    assert q(tmp_path, search="ÉLAN") == ["llm/fam/elan"]
    assert q(tmp_path, search="ærø ω") == ["llm/fam/aero"]
    assert q(tmp_path, search="ΩMEGA") == ["llm/fam/aero"]


# ---------------------------------------------------------------------------- property: brute force

TAGS = st.sampled_from(["a", "b", "c", "d", "ü", "x y", 'q"t', "%", "_"])
NAMES = st.text(alphabet="abcxyzÉéÆæ ", min_size=1, max_size=8)
MODEL = st.fixed_dictionaries(
    {
        "type": st.sampled_from([ModelType.LLM, ModelType.DIFFUSION]),
        "kind": st.sampled_from(["lora", "vae"]),
        "tags": st.lists(TAGS, max_size=5),
        "official": NAMES,
        "apps": st.dictionaries(st.sampled_from(["comfy", "forge"]), st.booleans()),
    }
)


@st.composite
def queries_for(draw: st.DrawFn, models: list[dict[str, Any]]) -> dict[str, Any]:
    search = st.none() | NAMES
    if models:  # a piece of an official name in another case: the matches worth checking
        search |= st.builds(
            lambda name, a, b: name[min(a, b) : max(a, b) + 1].swapcase(),
            st.sampled_from([m["official"] for m in models]),
            st.integers(0, 7),
            st.integers(0, 7),
        )
    return draw(
        st.fixed_dictionaries(
            {
                "tags": st.lists(TAGS, max_size=3).map(tuple),
                "type": st.none() | st.sampled_from(["llm", "diffusion"]),
                "kind": st.none() | st.sampled_from(["lora", "vae"]),
                "app": st.none() | st.sampled_from(["comfy", "forge"]),
                "search": search,
            }
        )
    )


def brute_force(models: dict[str, dict[str, Any]], f: dict[str, Any]) -> list[str]:
    out = []
    for model_id, m in sorted(models.items()):
        if f["type"] is not None and m["type"].value != f["type"]:
            continue
        if f["kind"] is not None and m["kind"] != f["kind"]:
            continue
        if not all(t in m["tags"] for t in f["tags"]):
            continue
        if f["app"] is not None and not m["apps"].get(f["app"], True):
            continue
        if f["search"]:
            needle = f["search"].lower()
            if needle not in m["official"].lower() and needle not in model_id:
                continue
        out.append(model_id)
    return out


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(models=st.lists(MODEL, max_size=12), data=st.data())
def test_query_equals_a_brute_force_filter(
    tmp_path_factory: pytest.TempPathFactory, models: list[dict[str, Any]], data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("prop")
    by_id: dict[str, dict[str, Any]] = {}
    entries = []
    for i, m in enumerate(models):
        e = entry(
            f"m{i}",
            type_=m["type"],
            kind=m["kind"],
            tags=tuple(m["tags"]),
            official=m["official"],
            apps=m["apps"],
        )
        by_id[e.meta.id] = m
        entries.append(e)
    with open_index(root) as index:
        assert index.rebuild(entries) == len(entries)
    for f in data.draw(st.lists(queries_for(models), min_size=1, max_size=3)):
        # The whole query, then each of its filters alone (alone they select more, so a wrong
        # filter is not hidden behind the others).
        no_filter = dict.fromkeys(f, None) | {"tags": ()}
        for part in (f, *({**no_filter, key: f[key]} for key in f)):
            assert q(root, **part) == brute_force(by_id, part), part
