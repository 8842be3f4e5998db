"""The feedback store: what the service served and what users did with it.

Two tables (see docs/CONTRACTS.md): `served` (one row per recommended item: request_id,
user_id, item_id, position, score, model_version, ts, explored) and `feedback` (id, request_id,
user_id, item_id, event, ts, position, score, model_version). `position` is the 0-based
rank in the response; `ts` is unix seconds (float). `explored` is true for an item the
service showed from beyond its model's top-k (fusionrec.inference.explore), false for the model's own
choice; a database written before the column existed gets it (false) when a store opens it. SQLite in WAL mode with
`synchronous=FULL` is the embedded default, so an acknowledged feedback event survives a
killed process; any SQLAlchemy URL (PostgreSQL: `postgresql+psycopg://...`) works the same.
The service writes through it, the monitoring step reads through it; nobody else opens the
database directly.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fusionrec.schema import FEEDBACK_TABLE, SERVED_TABLE

SERVED_COLUMNS = ("request_id", "user_id", "item_id", "position", "score", "model_version", "ts", "explored")
SERVED_BATCH_S = 0.05  # the served-row writer commits at most this often (it was once per request under load)
SERVED_ROWS_PER_STATEMENT = 500  # 4,000 parameters: under SQLite's 32,766 and PostgreSQL's 65,535
FEEDBACK_COLUMNS = ("id", "request_id", "user_id", "item_id", "event", "ts", "position", "score", "model_version")
_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_CREATE_LOCK = zlib.crc32(b"fusionrec feedback store tables")  # PostgreSQL advisory lock key
logger = logging.getLogger(__name__)

# 64-bit ids: `served` grows by k rows per request, which passes 2**31 within weeks at a few hundred
# requests per second. SQLite keeps INTEGER, its only autoincrementing (rowid) key type, 64-bit anyway.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_metadata = sa.MetaData()
served_table = sa.Table(
    SERVED_TABLE, _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("explored", sa.Boolean, nullable=False, server_default=sa.false()),
)
feedback_table = sa.Table(
    FEEDBACK_TABLE, _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=True, index=True),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("model_version", sa.String(128), nullable=True),
)


# Columns added after the first release: (table, column, DDL type and default). A store that opens a
# database without one adds it, so an old database keeps working and its old rows read the default.
_ADDED_COLUMNS = ((SERVED_TABLE, "explored", {"sqlite": "BOOLEAN NOT NULL DEFAULT 0",
                                              "default": "BOOLEAN NOT NULL DEFAULT FALSE"}),)


def _add_missing_columns(conn: sa.Connection) -> None:
    """ALTER TABLE ... ADD COLUMN for each of _ADDED_COLUMNS the database lacks (inside the caller's
    transaction, which holds the creation lock)."""
    inspector = sa.inspect(conn)
    for table, column, ddl in _ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            kind = ddl.get(conn.dialect.name, ddl["default"])
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _set_wal(cur: Any, attempts: int = 100) -> None:
    """`PRAGMA journal_mode=WAL`, retried: on a new database file, connections opening at once (replicas
    starting together) can get "database is locked" from it without SQLite's busy handler waiting."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class FeedbackStoreError(RuntimeError):
    """The store cannot be opened or written; the message names the URL."""


def store_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (a path means SQLite)."""
    text = str(url_or_path)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def _ts(value: float | datetime | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.timestamp()


class FeedbackStore:
    """Durable append-only log of served recommendations and user feedback.

    Args:
        url: SQLAlchemy URL or a file path (SQLite). The SQLite file's folder is created.
        synchronous: SQLite `PRAGMA synchronous` (FULL: a commit is on disk when it returns).
        background_served: write `served` rows from a background thread in batches, so the
            recommend path does not wait for a disk sync; `flush()` waits for them.
    """

    def __init__(self, url: str | Path, synchronous: str = "FULL", background_served: bool = False) -> None:
        self.url = store_url(url)
        if synchronous.upper() not in _SYNC_MODES:
            raise FeedbackStoreError(f"synchronous={synchronous!r}: expected one of {_SYNC_MODES}")
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine(synchronous.upper())
        try:
            self._create_tables()
        except sa.exc.SQLAlchemyError as exc:
            raise FeedbackStoreError(f"cannot open feedback store {self._safe_url()}: {exc}") from None
        self._queue: queue.Queue[list[tuple[Any, ...]] | None] | None = None
        self._writer: threading.Thread | None = None
        if background_served:
            self._queue = queue.Queue(maxsize=10_000)
            self._writer = threading.Thread(target=self._write_loop, name="served-writer", daemon=True)
            self._writer.start()

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def _make_engine(self, synchronous: str) -> sa.Engine:
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True)
        db = sa.engine.make_url(self.url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _set_wal(cur)
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # A write takes the lock up front: a deferred transaction that reads and then
            # writes can fail with SQLITE_BUSY instead of waiting when another process wrote.
            immediate = conn.get_execution_options().get("fusionrec_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def write_connection(self) -> sa.Connection:
        """A connection for a write transaction: on SQLite it begins IMMEDIATE (takes the write lock up
        front). Tables kept next to the store's, like the serving state's, write through it too."""
        return self.engine.connect().execution_options(fusionrec_write=True)

    def _create_tables(self) -> None:
        """Create missing tables, one process at a time: replicas that start together on a new
        database would otherwise all see no table and all try to create it."""
        if self.is_sqlite:
            with self.write_connection() as conn, conn.begin():  # BEGIN IMMEDIATE takes the write lock
                _metadata.create_all(conn)
                _add_missing_columns(conn)
        elif self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:  # DDL is transactional: the lock is held until commit
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
                _metadata.create_all(conn)
                _add_missing_columns(conn)
        else:
            _metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                _add_missing_columns(conn)

    # --- writes --------------------------------------------------------------------
    def record_served(
        self, request_id: str, user_id: str, item_ids: Sequence[str], scores: Sequence[float],
        model_version: str, ts: float | None = None, explored: Sequence[bool] | None = None,
    ) -> None:
        """Log one response: a row per item with its 0-based position, score and whether it was explored.

        Args:
            explored: per item, true where it came from beyond the model's top-k; None = none was.
        """
        now = time.time() if ts is None else ts
        flags = [False] * len(item_ids) if explored is None else [bool(e) for e in explored]
        rows = [(request_id, user_id, item, pos, float(score), model_version, now, flag)  # SERVED_COLUMNS order
                for pos, (item, score, flag) in enumerate(zip(item_ids, scores, flags, strict=True))]
        if not rows:
            return
        if self._queue is not None:
            try:
                self._queue.put_nowait(rows)
                return
            except queue.Full:
                pass  # back-pressure: write synchronously rather than drop
        self._insert_served(rows)

    def _insert_served(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows (tuples in SERVED_COLUMNS order) straight through the driver, many rows per
        statement: the driver then runs (and releases the interpreter lock around) one statement per
        SERVED_ROWS_PER_STATEMENT rows, not one per row, so this background thread hands the lock
        back and forth with the request thread a few times per batch instead of k times per request."""
        mark = "?" if self.is_sqlite else "%s"
        one = f"({', '.join([mark] * len(SERVED_COLUMNS))})"
        head = f"INSERT INTO {SERVED_TABLE} ({', '.join(SERVED_COLUMNS)}) VALUES "
        with self.write_connection() as conn, conn.begin():
            for start in range(0, len(rows), SERVED_ROWS_PER_STATEMENT):
                chunk = rows[start : start + SERVED_ROWS_PER_STATEMENT]
                conn.exec_driver_sql(head + ", ".join([one] * len(chunk)), tuple(v for row in chunk for v in row))

    def _write_loop(self) -> None:
        assert self._queue is not None
        done = False
        while not done:
            got = [self._queue.get()]  # blocks until there is work
            if got[-1] is not None:
                time.sleep(SERVED_BATCH_S)  # let a batch gather: one transaction per interval, not per request
            while got[-1] is not None and len(got) < 500:
                try:
                    got.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = got[-1] is None
            batch = [row for rows in got if rows is not None for row in rows]
            try:
                if batch:
                    self._insert_served(batch)
            except sa.exc.SQLAlchemyError:  # keep serving; monitoring sees the gap in `served`
                logger.exception("dropped %d served rows (feedback store %s)", len(batch), self._safe_url())
            finally:
                for _ in got:  # only now: flush() returns once these rows are committed
                    self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued `served` row is committed."""
        if self._queue is not None:
            self._queue.join()

    def append_feedback(
        self, user_id: str, item_id: str, event: str, request_id: str | None = None,
        ts: float | None = None, position: int | None = None, score: float | None = None,
        model_version: str | None = None,
    ) -> int:
        """Append one feedback event; it is committed (durable) when this returns.

        Where `request_id` is given and position/score are not, they are joined from the
        `served` row of that request and item (None when the item was not served there); rows
        still queued by this store's background writer are written first.

        Returns:
            The event's id in the feedback table.
        """
        if request_id is not None and position is None:
            found = self.lookup_served(request_id, item_id)
            if found is None and self._queue is not None:  # the response may still wait in our queue
                self.flush()
                found = self.lookup_served(request_id, item_id)
            if found is not None:
                position, score, model_version = found[0], found[1], model_version or found[2]
        row = {"request_id": request_id, "user_id": user_id, "item_id": item_id, "event": event,
               "ts": time.time() if ts is None else ts, "position": position, "score": score,
               "model_version": model_version}
        try:
            with self.write_connection() as conn, conn.begin():
                key = conn.execute(feedback_table.insert(), row).inserted_primary_key
                assert key is not None  # an INSERT always has one
                return int(key[0])
        except sa.exc.SQLAlchemyError as exc:
            raise FeedbackStoreError(f"feedback not stored in {self._safe_url()}: {exc}") from None

    def lookup_served(self, request_id: str, item_id: str) -> tuple[int, float, str] | None:
        """(position, score, model_version) of an item in a served response, or None."""
        query = (sa.select(served_table.c.position, served_table.c.score, served_table.c.model_version)
                 .where(served_table.c.request_id == request_id, served_table.c.item_id == item_id).limit(1))
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return None if found is None else (int(found[0]), float(found[1]), str(found[2]))

    # --- reads ---------------------------------------------------------------------
    def _read(self, table: sa.Table, columns: Sequence[str], where: list[Any], limit: int | None) -> pd.DataFrame:
        query = sa.select(*[table.c[c] for c in columns]).where(*where).order_by(table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))

    def read_feedback(
        self, since: float | datetime | None = None, until: float | datetime | None = None,
        after_id: int | None = None, limit: int | None = None,
    ) -> pd.DataFrame:
        """Feedback events in insertion order as a DataFrame with FEEDBACK_COLUMNS.

        Args:
            since / until: unix seconds or datetimes bounding `ts` (since inclusive, until exclusive).
            after_id: only events with a larger id (incremental reads).
            limit: at most this many rows (the oldest first).
        """
        c, where = feedback_table.c, []
        if since is not None:
            where.append(c.ts >= _ts(since))
        if until is not None:
            where.append(c.ts < _ts(until))
        if after_id is not None:
            where.append(c.id > after_id)
        return self._read(feedback_table, FEEDBACK_COLUMNS, where, limit)

    def read_served(
        self, since: float | datetime | None = None, request_id: str | None = None, limit: int | None = None,
    ) -> pd.DataFrame:
        """Served rows in insertion order as a DataFrame with SERVED_COLUMNS."""
        self.flush()
        c, where = served_table.c, []
        if since is not None:
            where.append(c.ts >= _ts(since))
        if request_id is not None:
            where.append(c.request_id == request_id)
        return self._read(served_table, SERVED_COLUMNS, where, limit)

    def count(self, table: str = FEEDBACK_TABLE) -> int:
        """Number of rows in `feedback` or `served`."""
        tbl = {FEEDBACK_TABLE: feedback_table, SERVED_TABLE: served_table}[table]
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(tbl)).scalar_one())

    def close(self) -> None:
        """Drain background writes and release connections."""
        if self._queue is not None and self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._queue = None
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


__all__ = ["FEEDBACK_COLUMNS", "SERVED_COLUMNS", "FeedbackStore", "FeedbackStoreError", "store_url"]
