"""Raw table reading and id helpers used by ingest and by external splits.

Ids are strings on the way in: a CSV is read with every column as text (so "007"
stays "007"), and a Parquet column of integers becomes their decimal strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec import schema

ROW = "_row"  # private column: 0-based data row of the source file


class IngestError(ValueError):
    """A dataset that cannot be ingested; the message names the file, column or row."""


def read_raw(path: Path) -> pd.DataFrame:
    """Read a CSV (every column as text, empty cells as "") or Parquet table, with a `_row` column."""
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except Exception as exc:  # noqa: BLE001  (any parser error becomes a message naming the file)
        raise IngestError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame[ROW] = np.arange(len(frame), dtype=np.int64)
    return frame


def as_id_strings(values: pd.Series) -> pd.Series:
    """Ids as stripped strings; integral floats lose their ".0"; missing values become ""."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            values = values.astype("Int64")
    return as_text(values)


def as_text(values: pd.Series) -> pd.Series:
    """A column as stripped strings, missing values as "" (via Arrow: 100k rows in milliseconds)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values.to_numpy(dtype=object)
    missing = pd.isna(arr)
    if missing.any():
        arr = arr.copy()
        arr[missing] = ""
    try:
        strings = pa.array(arr, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # non-str cells (ints in parquet, ...)
        strings = pa.array([str(v) for v in arr], type=pa.string())
    stripped = pc.utf8_trim_whitespace(strings).to_numpy(zero_copy_only=False)
    return pd.Series(stripped, index=values.index, dtype=object)


def as_float(values: pd.Series) -> pd.Series:
    """Numbers from a column (text cells parsed); empty or unparseable cells become NaN."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    text = as_text(values)
    try:  # the common case, every cell a number: numpy parses it 20x faster than to_numeric
        return pd.Series(text.to_numpy().astype(np.float64), index=values.index)
    except ValueError:
        return pd.to_numeric(text, errors="coerce").astype("float64")


def sorted_ids(ids: Iterable[str]) -> list[str]:
    """Unique ids in natural order: numerically when every id is an integer, else as text.

    MovieLens ids 1..n therefore get indices 0..n-1, so row r of a per-item array is id r+1.
    """
    unique = sorted(set(ids))
    if unique and all(s.isdigit() for s in unique):
        return sorted(unique, key=int)
    return unique


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path, what: str) -> None:
    """Fail the step naming the file and the missing column(s)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(c for c in frame.columns if c != ROW) or "(none)"
        raise IngestError(
            f"{path}: missing required {what} column(s) {', '.join(map(repr, missing))} (found: {found})"
        )


@dataclass
class Rejects:
    """Collects rejected rows; every dropped or masked row lands here with its reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, source: str, row: int, reason: str, detail: str, item_id: str = "", user_id: str = "") -> None:
        """Record one rejected row of `source` (0-based data row) with a reason from schema.REASONS."""
        assert reason in schema.REASONS, reason
        self.rows.append(
            {
                schema.REJ_SOURCE: source,
                schema.REJ_ROW: int(row),
                schema.ITEM_ID: item_id,
                schema.USER_ID: user_id,
                schema.REJ_REASON: reason,
                schema.REJ_DETAIL: detail,
            }
        )

    def add_frame(self, frame: pd.DataFrame, source: str, reason: str, details: Iterable[str]) -> None:
        """Reject every row of frame (which has `_row` and maybe id columns) with one reason."""
        items = frame[schema.ITEM_ID] if schema.ITEM_ID in frame else [""] * len(frame)
        users = frame[schema.USER_ID] if schema.USER_ID in frame else [""] * len(frame)
        for row, item, user, detail in zip(frame[ROW], items, users, details, strict=True):
            self.add(source, row, reason, detail, str(item), str(user))

    def frame(self) -> pd.DataFrame:
        """The rejected rows as rejected.parquet holds them (columns even when there are none)."""
        columns = [schema.REJ_SOURCE, schema.REJ_ROW, schema.ITEM_ID, schema.USER_ID]
        columns += [schema.REJ_REASON, schema.REJ_DETAIL]
        out = pd.DataFrame(self.rows, columns=columns)
        return out.astype({schema.REJ_ROW: "int64"})

    def counts(self) -> dict[str, int]:
        """Rejected rows per reason, sorted by reason."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r[schema.REJ_REASON]] = out.get(r[schema.REJ_REASON], 0) + 1
        return dict(sorted(out.items()))
