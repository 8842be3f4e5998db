"""Serving state that every replica shares through the feedback store's database.

Two tables next to `feedback` and `served` (same URL: FUSIONREC_FEEDBACK_URL / serve.feedback_url):

- `runtime_items`: one row per item added through the service (id, item_id, title, text,
  fields as JSON, image bytes and format, precomputed vectors as JSON, added_at, origin). `id`
  only grows and rows commit in id order, so a replica that remembers the last id it applied
  reads exactly the items it has not seen yet. The content is kept, not the encoders' vectors:
  a new model re-encodes it with its own encoders, and retraining writes it into the dataset's
  items table, images and runtime_vectors.parquet (the given vectors, which no encoder makes).
  A database from before the `vectors` column gets it when the state first opens it.
- `champion`: the promotion log (id, model_version, uri, promoted_at, source). The row with the
  highest id is the champion; `uri` names a model folder every replica can read (a shared
  volume path or an fsspec URI). A rollback is one more row naming an older model.

SQLite and PostgreSQL behave alike: SQLite serialises writers (BEGIN IMMEDIATE); on PostgreSQL
an advisory lock held until commit does the same, since two concurrent inserts could otherwise
commit out of id order and a reader would skip the lower id forever.
"""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fusionrec.monitoring.store import FeedbackStore

RUNTIME_ITEMS_TABLE = "runtime_items"
CHAMPION_TABLE = "champion"
RUNTIME_ITEM_COLUMNS = ("id", "item_id", "title", "text", "fields", "image", "image_format", "vectors", "added_at",
                        "origin")
_CREATE_LOCK = zlib.crc32(b"fusionrec serving state tables")  # PostgreSQL advisory lock keys
_ITEMS_LOCK = zlib.crc32(b"fusionrec runtime_items insert")
_CHAMPION_LOCK = zlib.crc32(b"fusionrec champion insert")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's INTEGER key is 64-bit already
_metadata = sa.MetaData()
runtime_items_table = sa.Table(
    RUNTIME_ITEMS_TABLE, _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(256), nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("text", sa.Text, nullable=False, default=""),
    sa.Column("fields", sa.Text, nullable=True),  # JSON object of text columns, when the item came with them
    sa.Column("image", sa.LargeBinary, nullable=True),
    sa.Column("image_format", sa.String(16), nullable=True),  # "png", "jpeg", "webp" (the file suffix)
    sa.Column("vectors", sa.Text, nullable=True),  # JSON {"vectors:audio": [floats]}: precomputed modalities
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("origin", sa.String(256), nullable=False, default=""),  # host:pid of the replica that took it
)
champion_table = sa.Table(
    CHAMPION_TABLE, _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("model_version", sa.String(256), nullable=False),
    sa.Column("uri", sa.String(2048), nullable=False),
    sa.Column("promoted_at", sa.Float, nullable=False),
    sa.Column("source", sa.String(2048), nullable=False, default=""),  # e.g. the retraining run folder
)


class StateError(RuntimeError):
    """The shared state cannot be read or written; the message names the database."""


class ItemExists(StateError):
    """Another request (on any replica) already added an item with this id."""


@dataclass(frozen=True)
class RuntimeItem:
    """One item added through the service, as stored."""

    id: int
    item_id: str
    title: str = ""
    text: str = ""
    fields: dict[str, str] | None = None
    image: bytes | None = field(default=None, repr=False)
    image_format: str | None = None
    vectors: dict[str, list[float]] | None = None  # by feature key, as checked and normalised at serving
    added_at: float = 0.0
    origin: str = ""


@dataclass(frozen=True)
class Champion:
    """Where the current champion lives: every replica loads `uri` when `id` moves."""

    id: int
    model_version: str
    uri: str
    promoted_at: float
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model_version": self.model_version, "uri": self.uri,
                "promoted_at": self.promoted_at, "source": self.source}


def image_format(data: bytes) -> str | None:
    """The file suffix of an encoded image from its magic bytes (png, jpeg, webp, gif), else None."""
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


class ServingState:
    """Runtime items and the champion pointer, on the feedback store's database.

    Args:
        store: the FeedbackStore whose database (and connection pool) this state shares.
    """

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.engine = store.engine
        self.origin = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self._create_tables()
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(f"cannot create the serving state tables in {self._where()}: {exc}") from None

    def _where(self) -> str:
        return sa.engine.make_url(self.store.url).render_as_string(hide_password=True)

    def _write(self) -> sa.Connection:
        return self.store.write_connection()

    def _serialise(self, conn: sa.Connection, key: int) -> None:
        """Hold a PostgreSQL advisory lock until commit (SQLite writers are serial already)."""
        if self.engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def _create_tables(self) -> None:
        """Create missing tables one process at a time (replicas may start together on a new database)."""
        with self._write() as conn, conn.begin():
            self._serialise(conn, _CREATE_LOCK)
            _metadata.create_all(conn)
            columns = {c["name"] for c in sa.inspect(conn).get_columns(RUNTIME_ITEMS_TABLE)}
            if "vectors" not in columns:  # a database from before items could carry vectors
                conn.execute(sa.text(f"ALTER TABLE {RUNTIME_ITEMS_TABLE} ADD COLUMN vectors TEXT"))

    # --- runtime items -------------------------------------------------------------------
    def add_item(self, item_id: str, title: str = "", text: str = "", fields: Mapping[str, str] | None = None,
                 image: bytes | None = None, vectors: Mapping[str, Any] | None = None) -> int:
        """Store one new item; committed when this returns.

        Returns:
            The row id (the poll cursor of every replica moves past it).

        Raises:
            ItemExists: an item with this id was added before (here or on another replica).
            StateError: the database refused the write.
        """
        row = {"item_id": item_id, "title": title or "", "text": text or "",
               "fields": json.dumps(dict(fields), sort_keys=True) if fields else None,
               "image": image or None, "image_format": image_format(image) if image else None,
               "vectors": json.dumps({k: [float(x) for x in v] for k, v in vectors.items()}) if vectors else None,
               "added_at": time.time(), "origin": self.origin}
        try:
            with self._write() as conn, conn.begin():
                self._serialise(conn, _ITEMS_LOCK)
                found = conn.execute(sa.select(runtime_items_table.c.id)
                                     .where(runtime_items_table.c.item_id == item_id)).first()
                if found is not None:
                    raise ItemExists(f"item {item_id!r} was already added (runtime item {found[0]})")
                key = conn.execute(runtime_items_table.insert(), row).inserted_primary_key
                assert key is not None
                return int(key[0])
        except sa.exc.IntegrityError:  # a writer outside the lock (another version) got there first
            raise ItemExists(f"item {item_id!r} was already added") from None
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(f"item {item_id!r} not stored in {self._where()}: {exc}") from None

    def items_since(self, after_id: int = 0, limit: int | None = None) -> list[RuntimeItem]:
        """Runtime items with an id above `after_id`, oldest first (at most `limit`)."""
        query = sa.select(runtime_items_table).where(runtime_items_table.c.id > after_id) \
            .order_by(runtime_items_table.c.id)
        if limit is not None:
            query = query.limit(limit)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(f"cannot read runtime items from {self._where()}: {exc}") from None
        return [RuntimeItem(id=int(r["id"]), item_id=str(r["item_id"]), title=r["title"] or "", text=r["text"] or "",
                            fields=json.loads(r["fields"]) if r["fields"] else None,
                            image=bytes(r["image"]) if r["image"] is not None else None,
                            image_format=r["image_format"], vectors=json.loads(r["vectors"]) if r["vectors"] else None,
                            added_at=float(r["added_at"]), origin=r["origin"] or "")
                for r in rows]

    def items_frame(self) -> pd.DataFrame:
        """Every runtime item as a DataFrame with RUNTIME_ITEM_COLUMNS (retraining's merge reads it)."""
        items = self.items_since(0)
        return pd.DataFrame([[getattr(it, c) for c in RUNTIME_ITEM_COLUMNS] for it in items],
                            columns=list(RUNTIME_ITEM_COLUMNS))

    # --- the champion pointer ------------------------------------------------------------
    def champion(self) -> Champion | None:
        """The current champion (the newest promotion), or None before the first one."""
        query = sa.select(champion_table).order_by(champion_table.c.id.desc()).limit(1)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).mappings().first()
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(f"cannot read the champion from {self._where()}: {exc}") from None
        return None if row is None else Champion(int(row["id"]), row["model_version"], row["uri"],
                                                 float(row["promoted_at"]), row["source"] or "")

    def set_champion(self, model_version: str, uri: str, source: str = "") -> Champion:
        """Move the pointer: every replica loads `uri` within one poll interval.

        Args:
            model_version: the model's version, for people and /metadata.
            uri: a model folder every replica can read (see `fusionrec.monitoring.rollout`).
            source: what promoted it (a retraining run folder, "manual").
        """
        now = time.time()
        try:
            with self._write() as conn, conn.begin():
                self._serialise(conn, _CHAMPION_LOCK)
                key = conn.execute(champion_table.insert(), {"model_version": model_version, "uri": uri,
                                                             "promoted_at": now, "source": source}).inserted_primary_key
                assert key is not None
                new_id = int(key[0])
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(f"champion not moved in {self._where()}: {exc}") from None
        return Champion(new_id, model_version, uri, now, source)

    def champions(self) -> list[Champion]:
        """Every promotion, oldest first (the rollout history)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(champion_table).order_by(champion_table.c.id)).mappings().all()
        return [Champion(int(r["id"]), r["model_version"], r["uri"], float(r["promoted_at"]), r["source"] or "")
                for r in rows]


__all__ = ["CHAMPION_TABLE", "Champion", "ItemExists", "RUNTIME_ITEMS_TABLE", "RUNTIME_ITEM_COLUMNS",
           "RuntimeItem", "ServingState", "StateError", "image_format"]
