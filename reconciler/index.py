"""``models.db``: the derived SQLite index (the only module that imports sqlite3).

Tables (DESIGN section 3.4):

- ``models``: one row per model, the seed's "Option A" (JSON columns queried with JSON1), plus plain
  ``family``/``kind``/``size_bytes`` columns for filters;
- ``model_tags``: ``(tag, model_id)``, an indexed side table: a tag filter on 100k models takes
  ~2 ms through it against ~90 ms through ``json_each(tags_json)``;
- ``file_stats``: the stat cache, ``(path, size, mtime_ns, inode) -> sha256, blake3``;
- ``links``: the link registry, every link mlib made, so it only ever removes its own.

The schema version lives in ``PRAGMA user_version`` and is migrated forward on open. A rebuild
writes a new file and renames it over the old one (:meth:`Index.rebuild`); a negative version
marks an old file so replaced, for the readers that still had it open (:func:`_prepare`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from reconciler.durable import fsync_dir
from reconciler.errors import IndexDbError
from reconciler.facts import LinkRecord
from reconciler.model import FileEntry, Metadata, ModelType, Overrides

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
        #: Why the file at ``path`` could not be opened, when ``open_index(rebuild=True)`` gave
        #: an empty in-memory index in its place; :meth:`rebuild` then replaces the file.
        self._corrupt: sqlite3.DatabaseError | None = None
        self._told_full = False  # cache_hashes warned of a full disk once

    # -- models ----------------------------------------------------------------------------------

    def rebuild(self, entries: Iterable[Entry]) -> int:
        """Replace every model row with ``entries``, atomically; returns the row count.

        The rows go into a new file beside models.db (``models.db.rebuild-<pid>``), written
        without a journal (nothing to roll back: on failure the file is deleted); the link
        registry and the stat cache are carried over from the old file, which the new one then
        replaces by a rename. A reader sees the
        old index or the new one, never a mix (see :meth:`_swap_in`). A corrupt old file (see
        ``open_index(..., rebuild=True)``) is kept beside as ``models.db.corrupt-<UTC time>``.
        """
        real = Path(os.path.realpath(self.path))  # a link to it stays a link, to the new file
        fresh = real.with_name(f"{real.name}{_FRESH}{os.getpid()}")
        _remove_leftovers(real)
        (page_size,) = self.conn.execute("PRAGMA page_size").fetchone()
        try:
            count = _build(fresh, entries, page_size)
            self._swap_in(fresh, real)
        except BaseException:
            _remove_db(fresh)
            raise
        return count

    def _swap_in(self, fresh: Path, real: Path) -> None:
        """Put the finished database ``fresh`` (its models and tags; no links, no stats) in the
        place of this index, the file ``real``, and reconnect to it.

        SQLite finds a WAL file by the database's *name*, so renaming a file over one that is
        still in use in WAL mode would leave its readers (and their -wal/-shm) on the old file
        while new readers take the same -wal/-shm for the new one. So the rename happens only
        under an exclusive lock on the old file, which SQLite grants only once no other
        connection has it open (each holds a shared lock while open): then the old file leaves
        WAL mode (checkpointed, -wal gone; the stale -shm is removed), is marked superseded
        (a negative ``user_version``: a reader blocked on it meanwhile sees the mark once it gets
        in, and reopens the path, see :func:`_prepare`), and ``fresh`` is renamed over it.
        When other connections stay open past :data:`_SWAP_WAIT_MS` (``mlib verify`` keeps one
        for its whole run), the new content is copied into the old file instead, in one write
        transaction of the SQLite backup API: slower (every page goes through the WAL), but as
        atomic for those readers.
        """
        if self._corrupt:
            self._replace_corrupt(fresh, real)
            return
        old = self.conn
        try:
            alone = _lock_exclusively(old)
            _carry_over(old, fresh)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            old.close()
            self._corrupt = exc
            self._replace_corrupt(fresh, real)
            return
        if not alone:
            log.info("%s is in use: copying the rebuilt index into it", self.path)
            _copy_into(fresh, old)
            _remove_db(fresh)
            return
        _finish(fresh, real)
        try:
            old.execute("PRAGMA journal_mode=OFF")  # leaves WAL: checkpoints, deletes the -wal
            old.execute(f"PRAGMA user_version = {-1 - SCHEMA_VERSION}")
            for suffix in ("-wal", "-shm"):
                _unlink(real.with_name(real.name + suffix))
            os.replace(fresh, real)
        except BaseException:
            with suppress(sqlite3.Error):  # else the next opener undoes the mark, see _prepare
                old.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                old.execute("PRAGMA journal_mode=WAL")
            raise
        finally:
            old.close()  # releases the lock: readers blocked on the old file see the mark
        fsync_dir(real.parent)
        self.conn = _connect(self.path)

    def _replace_corrupt(self, fresh: Path, real: Path) -> None:
        kept = _keep_corrupt(real)
        log.warning(
            "%s was unreadable (%s): rebuilt from scratch, %s"
            " (its link registry and stat cache are lost: 'mlib plan' lists the links again)",
            self.path,
            self._corrupt,
            "the old file is gone" if kept is None else f"the old file is kept as {kept}",
        )
        _finish(fresh, kept or real)
        os.replace(fresh, real)
        fsync_dir(real.parent)
        self.conn.close()
        self.conn = _connect(self.path)
        self._corrupt = None

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
        """Remember the hashes of ``path`` as it is now (size, mtime_ns, inode). On a full disk
        it remembers nothing (the hashes are computed again next time), so that ``verify`` can
        still check a library whose disk filled up."""
        st = os.stat(path)
        try:
            with self._transaction():
                self.conn.execute(
                    "INSERT OR REPLACE INTO file_stats VALUES (?, ?, ?, ?, ?, ?)",
                    (str(path), st.st_size, st.st_mtime_ns, st.st_ino, sha256, blake3),
                )
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_FULL":
                raise
            if self.conn.in_transaction:
                self.conn.rollback()
            if not self._told_full:
                log.warning("%s: hashes not cached (%s)", self.path, exc)
                self._told_full = True

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
    """The ``models`` row of ``entry`` (in ``_COLUMNS`` order).

    ``json.dumps`` only where it is needed: a rebuild calls this 100k times, and three dumps a row
    cost ~1 s there. The texts are the ones ``json.dumps`` gives (the tests compare them)."""
    m = entry.meta
    files = m.files
    if len(files) == 1:
        primary: FileEntry | None = files[0]
        size = files[0].size
    else:
        primary = m.primary
        size = m.size_bytes
    if primary is None:
        hashes = "null"
    elif _is_hex(primary.sha256) and _is_hex(primary.blake3):  # nothing to escape
        hashes = f'{{"sha256": "{primary.sha256}", "blake3": "{primary.blake3}"}}'
    else:
        hashes = json.dumps({"sha256": primary.sha256, "blake3": primary.blake3})
    apps = entry.overrides.apps
    overrides = (
        json.dumps({o.target: {"enabled": o.enabled, "versions": o.versions} for o in apps})
        if apps
        else "{}"
    )
    return (
        m.id,
        m.id,
        m.cleaned_name,
        m.official_name,
        _TYPE_TEXT[m.model_type],
        m.family,
        m.kind,
        size,
        "[" + ", ".join(map(encode_basestring_ascii, m.tags)) + "]",  # json.dumps(list(m.tags))
        hashes,
        overrides,
        entry.metadata_json,
        m.updated_at,
    )


_TYPE_TEXT = {t: t.value for t in ModelType}
_HEX = "0123456789abcdef"


def _is_hex(value: str) -> bool:
    return not value.strip(_HEX)


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
def open_index(root: Path, *, rebuild: bool = False) -> Iterator[Index]:
    """Open (creating and migrating as needed) ``<root>/models.db``.

    With ``rebuild``, for :meth:`Index.rebuild` only: a file that is not a readable SQLite
    database does not stop it; the index starts empty (in memory) and the rebuild replaces the
    file, keeping a copy of it. A database of a newer mlib is still refused.
    """
    path = root / DB_NAME
    try:
        conn = _connect(path)
    except sqlite3.DatabaseError as exc:
        if not (rebuild and _is_corrupt(exc)):
            raise _db_error(path, exc) from None
        conn = _connect(Path(":memory:"))
        index = Index(conn, path)
        index._corrupt = exc
    else:
        index = Index(conn, path)
    try:
        yield index
    except sqlite3.DatabaseError as exc:
        raise _db_error(path, exc) from None
    finally:
        index.conn.close()


def _db_error(path: Path, exc: sqlite3.DatabaseError) -> IndexDbError:
    """The error to show for ``exc``, with the fix that fits: a full disk is not a broken file
    (deleting the index would not help, and rebuilding it would fail the same way)."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return IndexDbError(f"{path}: {exc} (free some space, then apply again)")
    return IndexDbError(
        f"{path}: {exc} (it is derived data: delete it and run 'mlib index rebuild')"
    )


#: Times to reopen a file marked superseded before deciding its rebuild died (see _prepare).
_REOPEN = 5


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to ``path``, prepared (see :func:`_prepare`); raises sqlite3 errors."""
    for _ in range(_REOPEN):
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise IndexDbError(f"{path}: cannot open the index: {exc} (check the folder)") from None
        try:
            if _prepare(conn, path):
                return conn
        except BaseException:
            conn.close()
            raise
        conn.close()  # the file was replaced by a rebuild while we waited: open the new one
        time.sleep(0.01)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        _prepare(conn, path, recover=True)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, *, recover: bool = False) -> bool:
    """Check and migrate a new connection; ``False`` if its file was superseded by a rebuild.

    The version is read before anything is written, so a database of a newer mlib is left
    exactly as it is. A negative version marks a file that a rebuild replaced (see
    ``Index._swap_in``): the connection opened it before the rename, and must open the path
    again. With ``recover`` (the mark is still there after reopening: the rebuild died between
    marking and renaming, the content is intact) the mark is undone.
    """
    # SQLite's lower() folds ASCII only; the search needle is lowered by Python (str.lower).
    conn.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version < 0:
        if not recover:
            return False
        version = -1 - version
        log.warning("%s: undoing the mark of a rebuild that did not finish", path)
        conn.execute(f"PRAGMA user_version = {version}")
    if version > SCHEMA_VERSION:
        raise IndexDbError(
            f"{path}: written by a newer mlib (schema {version}, this one knows {SCHEMA_VERSION})"
            " (upgrade mlib, or delete models.db and run 'mlib index rebuild')"
        )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute("SELECT json('[]')").fetchone()
    except sqlite3.OperationalError:  # pragma: no cover - every supported Python has JSON1
        raise IndexDbError(
            f"{path}: this Python's SQLite lacks JSON1 (use a Python built with SQLite >= 3.38)"
        ) from None
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
    return True


# -- rebuilding into a new file -------------------------------------------------------------------

_FRESH = ".rebuild-"
#: How long a rebuild waits for other connections to the old file to close before it copies
#: the new index into the old file instead of renaming it over (see Index._swap_in).
_SWAP_WAIT_MS = 1000
#: The tag rows of the models after rowid ``?``, from their tags_json column, as a set per model
#: (OR IGNORE: a tag twice in a model is one row): SQLite does that in ~0.6 s for 500k tags,
#: faster than inserting Python tuples; in key order, as the b-tree likes it; batch by batch, as
#: the models come, so that little is left to do once the last has come.
_FILL_TAGS = (
    "INSERT OR IGNORE INTO model_tags SELECT t.value, m.id"
    " FROM models AS m, json_each(m.tags_json) AS t WHERE m.rowid > ? ORDER BY 1, 2"
)


def _build(fresh: Path, entries: Iterable[Entry], page_size: int) -> int:
    """Write a complete index of ``entries`` (no links, no stats) to the new file ``fresh``,
    in pages of the size of the file it replaces (the backup API, see Index._swap_in, copies
    into a WAL database only pages of its size)."""
    _remove_db(fresh)
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
        # No journal and no fsync while writing: a failed build is deleted, and _finish fsyncs
        # the finished file once.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        # The indexes too, before the rows: built as the rows come, they cost ~0.1 s more on
        # 100k models than built afterwards, but that is done while workers read, not after.
        for migration in MIGRATIONS:
            for stmt in _statements(migration):
                conn.execute(stmt)
        count = 0
        if isinstance(entries, _Converting):  # e.g. read by worker processes
            batches = entries.converted(_row_values)
        else:
            batches = _batches(map(_row_values, entries))
        with closing(batches):
            for batch in batches:
                conn.executemany(_INSERT_MODEL, batch)
                conn.execute(_FILL_TAGS, (count,))  # rowids are 1, 2, 3... in a new table
                count += len(batch)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return count


@runtime_checkable
class _Converting(Protocol):
    """Entries that hand out their rows themselves, in batches (``library.LibraryModels`` reads
    and converts in several processes); ``convert`` gives the row of one entry."""

    def converted(
        self, convert: Callable[[Entry], tuple[Any, ...]]
    ) -> Generator[list[tuple[Any, ...]], None, None]: ...


def _batches(
    rows: Iterable[tuple[Any, ...]], size: int = 4096
) -> Generator[list[tuple[Any, ...]], None, None]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish(fresh: Path, like: Path) -> None:
    """Turn the built file to WAL mode, as every models.db is, give it the permissions of the
    file ``like`` (the one it replaces), and make it durable."""
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    with suppress(FileNotFoundError):
        os.chmod(fresh, stat.S_IMODE(os.stat(like).st_mode))
    fd = os.open(fresh, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_exclusively(conn: sqlite3.Connection) -> bool:
    """Hold an exclusive lock on ``conn``'s database until it closes; ``False`` (and no lock)
    when other connections keep it open longer than :data:`_SWAP_WAIT_MS`."""
    (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout = {_SWAP_WAIT_MS}")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")  # the lock stays: the locking mode keeps it until close
        return True
    except sqlite3.OperationalError as exc:
        if not exc.sqlite_errorname.startswith("SQLITE_BUSY"):
            raise
        conn.execute("PRAGMA locking_mode=NORMAL")
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {timeout}")


def _carry_over(old: sqlite3.Connection, fresh: Path) -> None:
    """Copy the tables that are mlib's own state (links, file_stats) from ``old`` to ``fresh``."""
    old.execute("ATTACH DATABASE ? AS fresh", (str(fresh),))
    try:
        old.execute("PRAGMA fresh.journal_mode=OFF")
        old.execute("BEGIN")
        for table in ("links", "file_stats"):
            old.execute(f"INSERT INTO fresh.{table} SELECT * FROM main.{table}")
        old.execute("COMMIT")
    finally:
        if old.in_transaction:
            old.execute("ROLLBACK")
        old.execute("DETACH DATABASE fresh")


def _copy_into(fresh: Path, old: sqlite3.Connection) -> None:
    """Replace the content of ``old`` with that of ``fresh`` in one transaction."""
    src = sqlite3.connect(fresh, isolation_level=None)
    try:
        src.backup(old)
    finally:
        src.close()


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is not a (sound) SQLite database."""
    name = getattr(exc, "sqlite_errorname", "")
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


def _keep_corrupt(path: Path) -> Path | None:
    """Keep ``path`` under a new name beside it, and return that name (``None``: no file).

    Its -wal goes along (it must not meet the new file, which would take its pages for its own);
    its -shm is only a cache."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    with suppress(FileNotFoundError):
        os.replace(path.with_name(path.name + "-wal"), kept.with_name(kept.name + "-wal"))
    _unlink(path.with_name(path.name + "-shm"))
    try:
        os.link(path, kept)  # the data stays where it is; only a second name
    except FileNotFoundError:
        return None
    except OSError:  # a filesystem without hard links
        shutil.copy2(path, kept)
    return kept


def _remove_leftovers(path: Path) -> None:
    """Delete the new files of rebuilds whose process died before swapping them in."""
    prefix = path.name + _FRESH
    for found in path.parent.glob(glob.escape(prefix) + "*"):
        pid = found.name[len(prefix) :].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        _unlink(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. a process of another user
        return True
    return True


def _remove_db(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        _unlink(path.with_name(path.name + suffix))


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


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
