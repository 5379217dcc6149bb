"""``models.db``: the derived SQLite index (the only module that imports sqlite3).

Tables (DESIGN section 3.4):

- ``models``: one row per model, the seed's "Option A" (JSON columns queried with JSON1), plus plain
  ``family``/``kind``/``size_bytes`` columns for filters;
- ``model_tags``: ``(tag, model_id)``, an indexed side table: a tag filter on 100k models takes
  ~2 ms through it against ~90 ms through ``json_each(tags_json)``;
- ``file_stats``: the stat cache, ``(path, size, mtime_ns, inode) -> sha256, blake3``;
- ``links``: the link registry, every link mlib made, so it only ever removes its own.

The schema version lives in ``PRAGMA user_version`` and is migrated forward on open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import IndexDbError
from reconciler.facts import LinkRecord
from reconciler.model import Metadata, Overrides

log = logging.getLogger(__name__)

DB_NAME = "models.db"

# ``models`` is a rowid table on purpose: its ~1.5 KB rows (metadata_json) do not fit an index
# b-tree cell, so WITHOUT ROWID put each row on its own overflow page (2x the file, 2x the rebuild).
_MODELS_DDL = """
CREATE TABLE models (
    id            TEXT PRIMARY KEY,
    path          TEXT NOT NULL,
    cleaned_name  TEXT NOT NULL,
    official_name TEXT NOT NULL,
    model_type    TEXT NOT NULL,
    family        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    tags_json     TEXT NOT NULL,
    hashes_json   TEXT NOT NULL,
    overrides_json TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE model_tags (
    tag      TEXT NOT NULL,
    model_id TEXT NOT NULL,
    PRIMARY KEY (tag, model_id)
) WITHOUT ROWID;
"""
_MODELS_INDEXES = """
CREATE INDEX models_type ON models(model_type, family);
CREATE INDEX models_kind ON models(kind);
CREATE INDEX model_tags_model ON model_tags(model_id);
"""

#: Forward migrations; entry i takes user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    _MODELS_DDL
    + _MODELS_INDEXES
    + """
CREATE TABLE file_stats (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    blake3   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE links (
    target    TEXT NOT NULL,
    link_path TEXT NOT NULL,
    model_id  TEXT NOT NULL,
    file      TEXT NOT NULL,
    mode      TEXT NOT NULL,
    PRIMARY KEY (target, link_path)
) WITHOUT ROWID;
CREATE INDEX links_model ON links(model_id);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Row:
    """One model as the index knows it."""

    id: str
    path: str
    cleaned_name: str
    official_name: str
    model_type: str
    family: str
    kind: str
    size_bytes: int
    tags: tuple[str, ...]
    sha256: str | None
    overrides: dict[str, Any]
    updated_at: str


@dataclass(frozen=True)
class Query:
    """Filters of ``mlib list``; every given filter must match (tags: all of them)."""

    type: str | None = None
    family: str | None = None
    kind: str | None = None
    tags: tuple[str, ...] = ()
    app: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class Entry:
    """One model to index: its values and the exact metadata text it was read from."""

    meta: Metadata
    overrides: Overrides
    metadata_json: str


class Index:
    """An open ``models.db``. Use :func:`open_index`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    # -- models ----------------------------------------------------------------------------------

    def rebuild(self, entries: Iterable[Entry]) -> int:
        """Replace every model row with ``entries`` in one transaction; returns the row count.

        Tables are dropped and recreated, with their indexes built after the bulk insert (faster
        than deleting and updating the b-trees row by row). The stat cache and link registry stay.
        """
        count = 0
        with self._transaction():
            # One statement at a time: executescript() would commit and break the transaction.
            for stmt in ("DROP TABLE models", "DROP TABLE model_tags", *_statements(_MODELS_DDL)):
                self.conn.execute(stmt)
            rows = []
            tags: list[tuple[str, str]] = []
            for entry in entries:
                rows.append(_row_values(entry))
                tags.extend((tag, entry.meta.id) for tag in set(entry.meta.tags))
                count += 1
            self.conn.executemany(_INSERT_MODEL, rows)
            self.conn.executemany("INSERT INTO model_tags VALUES (?, ?)", tags)
            for stmt in _statements(_MODELS_INDEXES):
                self.conn.execute(stmt)
        return count

    def upsert(self, entry: Entry) -> None:
        with self._transaction():
            self.conn.execute("DELETE FROM model_tags WHERE model_id = ?", (entry.meta.id,))
            self.conn.execute(_UPSERT_MODEL, _row_values(entry))
            self.conn.executemany(
                "INSERT INTO model_tags VALUES (?, ?)",
                [(tag, entry.meta.id) for tag in set(entry.meta.tags)],
            )

    def delete(self, model_id: str) -> None:
        with self._transaction():
            self.conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            self.conn.execute("DELETE FROM model_tags WHERE model_id = ?", (model_id,))

    def query(self, q: Query) -> list[Row]:
        """Models matching every filter, ordered by id."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("model_type", q.type), ("family", q.family), ("kind", q.kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        for tag in dict.fromkeys(q.tags):
            where.append("id IN (SELECT model_id FROM model_tags WHERE tag = ?)")
            args.append(tag)
        if q.app is not None:
            where.append("coalesce(json_extract(overrides_json, ?), 1) != 0")
            args.append(f'$."{_json_key(q.app)}".enabled')
        if q.search:
            where.append(
                "(instr(unicode_lower(official_name), ?) OR instr(cleaned_name, ?) OR instr(id, ?))"
            )
            needle = q.search.lower()
            args += [needle, needle, needle]
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_row(r) for r in self.conn.execute(sql, args)]

    def count(self) -> int:
        (n,) = self.conn.execute("SELECT count(*) FROM models").fetchone()
        return int(n)

    def ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT id FROM models")}

    def metadata_texts(self) -> dict[str, str]:
        """``id -> metadata_json`` of every row: the planner compares them with the files."""
        return dict(self.conn.execute("SELECT id, metadata_json FROM models"))

    # -- link registry ---------------------------------------------------------------------------

    def links(self) -> list[LinkRecord]:
        rows = self.conn.execute(
            "SELECT target, link_path, model_id, file, mode FROM links ORDER BY target, link_path"
        )
        return [LinkRecord(*r) for r in rows]

    def add_link(self, record: LinkRecord) -> None:
        with self._transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?, ?)",
                (record.app, record.link_path, record.model_id, record.file, record.mode),
            )

    def remove_link(self, app: str, link_path: str) -> None:
        with self._transaction():
            self.conn.execute(
                "DELETE FROM links WHERE target = ? AND link_path = ?", (app, link_path)
            )

    # -- stat cache ------------------------------------------------------------------------------

    def cache_hashes(self, path: Path, sha256: str, blake3: str) -> None:
        """Remember the hashes of ``path`` as it is now (size, mtime_ns, inode)."""
        st = os.stat(path)
        with self._transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO file_stats VALUES (?, ?, ?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, st.st_ino, sha256, blake3),
            )

    def cached_hashes(self, path: Path, st: os.stat_result) -> tuple[str, str] | None:
        """The hashes of ``path`` if it has not changed (same size, mtime_ns, inode) since."""
        row = self.conn.execute(
            "SELECT size, mtime_ns, inode, sha256, blake3 FROM file_stats WHERE path = ?",
            (str(path),),
        ).fetchone()
        if row is None or tuple(row[:3]) != (st.st_size, st.st_mtime_ns, st.st_ino):
            return None
        return row[3], row[4]

    # -- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


_SELECT = (
    "SELECT id, path, cleaned_name, official_name, model_type, family, kind, size_bytes,"
    " tags_json, hashes_json, overrides_json, updated_at FROM models"
)
_COLUMNS = (
    "id, path, cleaned_name, official_name, model_type, family, kind, size_bytes,"
    " tags_json, hashes_json, overrides_json, metadata_json, updated_at"
)
_INSERT_MODEL = f"INSERT INTO models ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"
_UPSERT_MODEL = f"INSERT OR REPLACE INTO models ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"


def _row_values(entry: Entry) -> tuple[Any, ...]:
    m = entry.meta
    hashes = m.hashes
    overrides = {
        o.target: {"enabled": o.enabled, "versions": o.versions} for o in entry.overrides.apps
    }
    return (
        m.id,
        m.id,
        m.cleaned_name,
        m.official_name,
        m.model_type.value,
        m.family,
        m.kind,
        m.size_bytes,
        json.dumps(list(m.tags)),
        json.dumps(None if hashes is None else {"sha256": hashes.sha256, "blake3": hashes.blake3}),
        json.dumps(overrides),
        entry.metadata_json,
        m.updated_at,
    )


def _row(r: Sequence[Any]) -> Row:
    hashes = json.loads(r[9])
    return Row(
        id=r[0],
        path=r[1],
        cleaned_name=r[2],
        official_name=r[3],
        model_type=r[4],
        family=r[5],
        kind=r[6],
        size_bytes=r[7],
        tags=tuple(json.loads(r[8])),
        sha256=None if hashes is None else hashes["sha256"],
        overrides=json.loads(r[10]),
        updated_at=r[11],
    )


def _json_key(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


@contextmanager
def open_index(root: Path) -> Iterator[Index]:
    """Open (creating and migrating as needed) ``<root>/models.db``."""
    path = root / DB_NAME
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise IndexDbError(f"{path}: cannot open the index: {exc} (check the folder)") from None
    index = Index(conn, path)
    try:
        _prepare(conn, path)
        yield index
    except sqlite3.DatabaseError as exc:
        raise IndexDbError(
            f"{path}: {exc} (it is derived data: delete it and run 'mlib index rebuild')"
        ) from None
    finally:
        conn.close()


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    # SQLite's lower() folds ASCII only; the search needle is lowered by Python (str.lower).
    conn.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute("SELECT json('[]')").fetchone()
    except sqlite3.OperationalError:  # pragma: no cover - every supported Python has JSON1
        raise IndexDbError(
            f"{path}: this Python's SQLite lacks JSON1 (use a Python built with SQLite >= 3.38)"
        ) from None
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise IndexDbError(
            f"{path}: written by a newer mlib (schema {version}, this one knows {SCHEMA_VERSION})"
            " (upgrade mlib, or delete models.db and run 'mlib index rebuild')"
        )
    for target in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(MIGRATIONS[target]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {target + 1}")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        log.info("migrated %s to schema %d", path, target + 1)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def json1_available() -> bool:
    """Whether this Python's SQLite has the JSON functions (for ``mlib doctor``)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT json_extract('{\"a\": 1}', '$.a')").fetchone()
        return True
    except sqlite3.OperationalError:  # pragma: no cover
        return False
    finally:
        conn.close()
