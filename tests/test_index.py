"""models.db on real SQLite files: migrations, refusal of newer files, transactional rebuild, and
query filters checked against the exact counts of a synthetic library and a brute-force filter."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.synth import APPS, VOCABULARY, make_library
from reconciler import api
from reconciler import index as index_module
from reconciler.errors import IndexDbError
from reconciler.facts import LinkRecord
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
    before = path.read_bytes()

    with pytest.raises(IndexDbError) as info, open_index(tmp_path):
        pytest.fail("a newer index must not open")
    message = str(info.value)
    assert str(path) in message
    assert f"newer mlib (schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION})" in message
    assert "mlib index rebuild" in message
    # Not even its header changed (the journal mode used to be switched to WAL first), and a
    # rebuild refuses it just the same.
    assert path.read_bytes() == before
    with pytest.raises(IndexDbError, match="newer mlib"):
        api.rebuild_index(tmp_path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(DB_NAME)) == [DB_NAME]

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
    assert [p.name for p in tmp_path.iterdir()] == [DB_NAME]  # the new file is gone

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


def test_rebuild_swaps_in_a_new_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    with open_index(tmp_path) as index:
        index.rebuild([entry("a", tags=("x",))])
        before = path.stat().st_ino
        assert index.rebuild([entry("b", tags=("y", "z")), entry("c")]) == 2
        assert path.stat().st_ino != before  # renamed over: nothing held the old file open
        assert index.ids() == {"llm/fam/b", "llm/fam/c"}
        assert ids_of(index.query(Query(tags=("z",)))) == ["llm/fam/b"]
        assert index.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert index.conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert index.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = {r[0] for r in index.conn.execute("SELECT name FROM sqlite_schema")}
        assert {"models_type", "models_kind", "model_tags_model", "links_model"} <= names
    assert [p.name for p in tmp_path.iterdir()] == [DB_NAME]


def test_rebuild_keeps_the_permissions_of_the_index_and_a_link_to_it(tmp_path: Path) -> None:
    elsewhere, library_root = tmp_path / "elsewhere", tmp_path / "library"
    elsewhere.mkdir()
    library_root.mkdir()
    with open_index(elsewhere) as index:
        index.rebuild([entry("a")])
    os.chmod(elsewhere / DB_NAME, 0o640)
    (library_root / DB_NAME).symlink_to(elsewhere / DB_NAME)

    with open_index(library_root) as index:
        assert index.rebuild([entry("b")]) == 1

    assert (library_root / DB_NAME).is_symlink()
    assert stat.S_IMODE((elsewhere / DB_NAME).stat().st_mode) == 0o640
    with open_index(elsewhere) as index:
        assert index.ids() == {"llm/fam/b"}
    assert [p.name for p in library_root.iterdir()] == [DB_NAME]
    assert [p.name for p in elsewhere.iterdir()] == [DB_NAME]


def test_rebuild_of_a_corrupt_file_starts_afresh_and_keeps_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_library(tmp_path, 20, seed=4)
    garbage = b"this is not sqlite at all, just some bytes" * 100
    (tmp_path / DB_NAME).write_bytes(garbage)

    with caplog.at_level(logging.WARNING, logger="reconciler.index"):
        report = api.rebuild_index(tmp_path)

    assert (report.indexed, report.skipped) == (20, ())
    (kept,) = tmp_path.glob(f"{DB_NAME}.corrupt-*")
    assert re.fullmatch(rf"{re.escape(DB_NAME)}\.corrupt-\d{{8}}T\d{{6}}Z", kept.name)
    assert kept.read_bytes() == garbage
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert kept.name in warning.getMessage() and "rebuilt from scratch" in warning.getMessage()
    with open_index(tmp_path) as index:
        assert index.count() == 20
    # Opening it for anything else than a rebuild still refuses a corrupt file.
    (tmp_path / DB_NAME).write_bytes(garbage)
    with pytest.raises(IndexDbError, match="delete it and run 'mlib index rebuild'"):
        api.query(tmp_path, Query())


def test_rebuild_of_a_file_with_a_corrupt_link_registry_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    with open_index(tmp_path) as index:
        index.rebuild([entry("a")])
        index.add_link(LinkRecord("comfy", "/apps/comfy/a.gguf", "llm/fam/a", "a.gguf", "symlink"))
        ((root_page,),) = index.conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'links'"
        ).fetchall()
        (page_size,) = index.conn.execute("PRAGMA page_size").fetchone()
        index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as fh:  # the b-tree page of the links table becomes noise
        fh.seek((root_page - 1) * page_size)
        fh.write(b"\xff" * page_size)

    with open_index(tmp_path, rebuild=True) as index:
        assert index.rebuild([entry("b")]) == 1
        assert index.ids() == {"llm/fam/b"}
        assert index.links() == []
    assert len(list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))) == 1


def test_a_reader_holding_the_old_index_open_keeps_its_view_until_it_looks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "_SWAP_WAIT_MS", 50)
    record = LinkRecord("comfy", "/apps/comfy/old0.gguf", "llm/fam/old0", "old0.gguf", "symlink")
    conn = sqlite3.connect(tmp_path / DB_NAME)  # not SQLite's default page size: kept
    conn.execute("PRAGMA page_size = 8192")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    with open_index(tmp_path) as index:
        index.rebuild([entry(f"old{i}", tags=("t",)) for i in range(30)])
        index.add_link(record)
    reader = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM models").fetchone() == (30,)

        # The reader keeps the file open: no rename over it; the new index is copied into it.
        with open_index(tmp_path) as index:
            assert index.rebuild([entry(f"new{i}", tags=("t",)) for i in range(50)]) == 50
            assert index.count() == 50
            assert index.links() == [record]

        assert reader.execute("SELECT count(*) FROM models").fetchone() == (30,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM models").fetchone() == (50,)
        assert reader.execute("SELECT count(*) FROM model_tags").fetchone() == (50,)
    finally:
        reader.close()
    with open_index(tmp_path) as index:
        assert index.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert index.conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert index.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert index.conn.execute("PRAGMA page_size").fetchone() == (8192,)
    assert [p.name for p in tmp_path.iterdir()] == [DB_NAME]


def test_a_reader_that_opened_the_old_file_during_the_swap_reopens_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / DB_NAME
    with open_index(tmp_path) as index:
        index.rebuild([entry(f"old{i}") for i in range(3)])
    opened = threading.Event()
    seen: list[Any] = []

    def late_reader() -> None:  # opens the old file while the rebuild holds it exclusively
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        opened.set()
        try:
            seen.append(index_module._prepare(conn, path))  # waits for the lock, sees the mark
        finally:
            conn.close()
        seen.append(api.query(tmp_path, Query()))

    finish = index_module._finish

    def finish_with_a_reader_waiting(fresh: Path, like: Path) -> None:
        thread.start()
        assert opened.wait(10)
        time.sleep(0.2)  # let it block on the lock
        finish(fresh, like)

    thread = threading.Thread(target=late_reader)
    monkeypatch.setattr(index_module, "_finish", finish_with_a_reader_waiting)
    with open_index(tmp_path) as index:
        index.rebuild([entry(f"new{i}") for i in range(5)])
    thread.join(30)
    assert seen[0] is False  # superseded: open the path again
    assert ids_of(seen[1]) == [f"llm/fam/new{i}" for i in range(5)]


def test_a_mark_left_by_a_rebuild_that_died_is_undone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_index(tmp_path) as index:
        index.rebuild([entry("a"), entry("b")])
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")  # as the rebuild leaves it before the rename
    conn.execute(f"PRAGMA user_version = {-1 - SCHEMA_VERSION}")
    conn.close()

    with caplog.at_level(logging.WARNING, logger="reconciler.index"), open_index(tmp_path) as index:
        assert index.ids() == {"llm/fam/a", "llm/fam/b"}
        assert index.conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert index.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert "did not finish" in caplog.text


def test_the_new_files_of_dead_rebuilds_are_removed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead = int(done.stdout)
    for suffix in ("", "-journal"):
        (tmp_path / f"{DB_NAME}.rebuild-{dead}{suffix}").write_bytes(b"half a database")
    alive = tmp_path / f"{DB_NAME}.rebuild-{os.getppid()}"  # another rebuild, still running
    alive.write_bytes(b"being written")
    with open_index(tmp_path) as index:
        index.rebuild([entry("a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DB_NAME, alive.name])


READER = """
import sys, time
from pathlib import Path
from reconciler.index import open_index
root, stop = Path(sys.argv[1]), Path(sys.argv[2])
while not stop.exists():
    with open_index(root) as index:
        index.conn.execute("BEGIN")
        models = index.count()
        tagged = index.conn.execute("SELECT count(DISTINCT model_id) FROM model_tags").fetchone()
        index.conn.execute("COMMIT")
    print(models, tagged[0], flush=True)
"""


def test_readers_during_rebuilds_see_the_old_or_the_new_index(tmp_path: Path) -> None:
    sizes = (30, 50)
    with open_index(tmp_path) as index:
        index.rebuild([entry(f"m{i}", tags=("a", "b")) for i in range(sizes[0])])
    stop = tmp_path / "stop"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(tmp_path), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        for _ in range(2)
    ]
    try:
        time.sleep(0.5)  # the readers are running
        for round_ in range(8):
            n = sizes[(round_ + 1) % 2]
            with open_index(tmp_path) as index:
                assert index.rebuild([entry(f"m{i}", tags=("a", "b")) for i in range(n)]) == n
            time.sleep(0.05)
    finally:
        stop.touch()
        outputs = [r.communicate(timeout=60) for r in readers]
    for reader, (out, err) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0, err
        seen = [tuple(map(int, line.split())) for line in out.splitlines()]
        assert seen, err
        assert {models for models, _ in seen} <= set(sizes)
        assert all(models == tagged for models, tagged in seen)  # never half of one, half of other
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME, "stop"]


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


JSON_TEXT = st.text(max_size=8)  # any text: quotes, backslashes, control and non-ASCII characters


@settings(max_examples=300, deadline=None)
@given(
    tags=st.lists(st.text(min_size=1, max_size=6), max_size=5),
    hashes=st.sampled_from([(HEX_A, HEX_B), None]) | st.tuples(JSON_TEXT, JSON_TEXT),
    apps=st.dictionaries(JSON_TEXT.filter(bool), st.booleans(), max_size=3),
)
def test_row_json_columns_are_what_json_dumps_writes(
    tags: list[str], hashes: tuple[str, str] | None, apps: dict[str, bool]
) -> None:
    e = entry("r", tags=tuple(tags), apps=apps)
    files = () if hashes is None else (FileEntry("r.gguf", 1, *hashes), FileEntry("c", 0, "", ""))
    e = Entry(replace(e.meta, files=files), e.overrides, e.metadata_json)
    row = dict(zip(index_module._COLUMNS.split(", "), index_module._row_values(e), strict=True))
    assert row["tags_json"] == json.dumps(tags)
    primary = None if hashes is None else {"sha256": hashes[0], "blake3": hashes[1]}
    assert row["hashes_json"] == json.dumps(primary)
    overrides = {o.target: {"enabled": o.enabled, "versions": o.versions} for o in e.overrides.apps}
    assert row["overrides_json"] == json.dumps(overrides)
    assert row["size_bytes"] == e.meta.size_bytes


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
