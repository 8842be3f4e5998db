"""Load an ingested folder and a split folder into memory (the readers every step uses).

`load_split` accepts both the parquet parts written by `fusionrec split` and an external
split (train/valid/test as CSV or Parquet in ORIGINAL ids, e.g. another tool's files):
ids are always mapped through the ingested id maps, so a split made from another
ingest fails loudly instead of silently pointing at the wrong rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.data.tables import ROW, as_float, as_id_strings, as_text, read_raw
from fusionrec.data.timestamps import parse_timestamps
from fusionrec.io import find_table, read_json

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = ["Ingested", "Split", "SplitError", "load_ingested", "load_split"]


class SplitError(ValueError):
    """A split folder that does not fit the ingested data; the message names the file and row."""


@dataclass(frozen=True, eq=False)
class Ingested:
    """The ingested dataset: interactions, the item catalogue (row = item_idx) and the users."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    path: Path | None = None

    @property
    def n_users(self) -> int:
        """Users with at least one ingested interaction (rows of users.parquet)."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Items of the catalogue, with or without interactions (rows of items.parquet)."""
        return len(self.items)

    def item_index(self) -> pd.Series:
        """item_id (str) -> item_idx (int)."""
        return pd.Series(self.items[schema.ITEM_IDX].to_numpy(), index=self.items[schema.ITEM_ID].to_numpy())

    def user_index(self) -> pd.Series:
        """user_id (str) -> user_idx (int)."""
        return pd.Series(self.users[schema.USER_IDX].to_numpy(), index=self.users[schema.USER_ID].to_numpy())


def load_ingested(path: Path | str) -> Ingested:
    """Read the folder written by `fusionrec ingest` (interactions, items, users parquet)."""
    path = Path(path)
    files = (schema.INGESTED_INTERACTIONS, schema.INGESTED_ITEMS, schema.INGESTED_USERS)
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: not an ingested folder, missing {', '.join(missing)} (run `fusionrec ingest`)")
    inter, items, users = (pd.read_parquet(path / f) for f in files)
    return Ingested(interactions=inter, items=items, users=users, path=path)


@dataclass(frozen=True, eq=False)
class Split:
    """train/valid/test interactions (ingested columns) and the held-out cold items (item_idx)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold_items: np.ndarray
    n_users: int = 0
    n_items: int = 0

    def part(self, name: str) -> pd.DataFrame:
        """One of "train", "valid", "test" by name."""
        if name not in schema.SPLIT_PARTS:
            raise KeyError(f"unknown split part {name!r}; parts are {', '.join(schema.SPLIT_PARTS)}")
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def matrix(self, part: str = "train") -> csr_matrix:
        """The part's positive interactions as a binary user x item matrix (n_users x n_items, float32).

        Rows whose event is negative (schema.NEGATIVE_EVENTS, e.g. a "dislike" merged from
        feedback) are not positives: they stay in the frame but never enter the matrix.
        """
        from scipy.sparse import csr_matrix

        frame = self.part(part)
        frame = frame[~schema.is_negative(frame)]
        rows = frame[schema.USER_IDX].to_numpy(dtype=np.int64)
        cols = frame[schema.ITEM_IDX].to_numpy(dtype=np.int64)
        mat = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        mat.data[:] = 1.0
        return mat


def _map_ids(values: pd.Series, index: pd.Series, rows: pd.Series, path: Path, column: str) -> np.ndarray:
    """Map original ids to dense indices; unknown ids are an error naming the file and rows."""
    mapped = index.reindex(values.to_numpy())
    unknown = mapped.isna().to_numpy()
    if unknown.any():
        shown = ", ".join(f"row {r}: {v!r}" for r, v in zip(rows[unknown][:5], values[unknown][:5], strict=True))
        raise SplitError(
            f"{path}: {int(unknown.sum())} row(s) with a {column} unknown to the ingested data ({shown}); "
            "the split must come from the same dataset as the ingest"
        )
    return mapped.to_numpy().astype(np.int32)


def _seconds(values: pd.Series) -> pd.Series:
    """A part's own timestamps read as ingest reads them (unix s/ms, ISO-8601, datetimes)."""
    return parse_timestamps(values)[0]


def _read_part(path: Path, ingested: Ingested) -> pd.DataFrame:
    """One part with the ingested interaction columns, its ids mapped through the ingested maps."""
    raw = read_raw(path)
    for col in (schema.USER_ID, schema.ITEM_ID):
        if col not in raw.columns:
            raise SplitError(f"{path}: missing required column {col!r} (a split part holds original ids)")
        raw[col] = as_id_strings(raw[col])
    keys = pd.DataFrame({
        schema.USER_IDX: _map_ids(raw[schema.USER_ID], ingested.user_index(), raw[ROW], path, schema.USER_ID),
        schema.ITEM_IDX: _map_ids(raw[schema.ITEM_ID], ingested.item_index(), raw[ROW], path, schema.ITEM_ID),
    })
    inter = ingested.interactions
    frame = keys.merge(inter, on=[schema.USER_IDX, schema.ITEM_IDX], how="left", sort=False)
    unmatched = frame[schema.USER_ID].isna().to_numpy()
    if unmatched.any():  # a pair ingest does not hold: keep it with the file's own values
        frame.loc[unmatched, schema.USER_ID] = raw[schema.USER_ID].to_numpy()[unmatched]
        frame.loc[unmatched, schema.ITEM_ID] = raw[schema.ITEM_ID].to_numpy()[unmatched]
        for col, parse, default in ((schema.TIMESTAMP, _seconds, 0.0), (schema.RATING, as_float, np.nan),
                                    (schema.EVENT, as_text, "")):
            if col not in frame.columns:  # ingested without timestamps: the part has none either
                continue
            values = parse(raw[col]).to_numpy()[unmatched] if col in raw.columns else default
            if parse is not as_text:
                frame[col] = frame[col].astype("float64")
            frame.loc[unmatched, col] = values
        if schema.TIMESTAMP in frame.columns:
            frame[schema.TIMESTAMP] = np.floor(frame[schema.TIMESTAMP].fillna(0)).astype("int64")
    return frame[list(inter.columns)].reset_index(drop=True)


def _cold_items(split_dir: Path, ingested: Ingested) -> np.ndarray:
    path = split_dir / schema.COLD_ITEMS
    if not path.is_file():
        return np.zeros(0, dtype=np.int64)
    ids = pd.Series([str(i) for i in read_json(path)], dtype=object)
    rows = pd.Series(np.arange(len(ids)))
    return np.sort(_map_ids(ids, ingested.item_index(), rows, path, schema.ITEM_ID).astype(np.int64))


def load_split(split_dir: Path | str, ingested: Ingested | Path | str) -> Split:
    """Read a split folder: `{part}.parquet` from `fusionrec split` or external `{part}.csv|parquet`.

    Args:
        split_dir: folder holding train, valid and test (and optionally cold_items.json).
        ingested: the ingested data (or its folder) whose id maps the parts are mapped through.

    Raises:
        SplitError: a part is missing, lacks id columns, or holds ids unknown to the ingest.
    """
    split_dir = Path(split_dir)
    if not isinstance(ingested, Ingested):
        ingested = load_ingested(ingested)
    parts: dict[str, pd.DataFrame] = {}
    for part in schema.SPLIT_PARTS:
        path = find_table(split_dir, part)
        if path is None:
            raise SplitError(f"{split_dir}: no {part}.parquet or {part}.csv (parts: {', '.join(schema.SPLIT_PARTS)})")
        parts[part] = _read_part(path, ingested)
    return Split(
        **parts, cold_items=_cold_items(split_dir, ingested), n_users=ingested.n_users, n_items=ingested.n_items
    )
