"""Interaction timestamps as users have them, read into unix seconds.

Accepted forms, cell by cell (one column may mix them, e.g. a log in milliseconds to which
feedback in seconds was appended):

- numbers (or numeric text): a unix epoch time whose unit is decided by magnitude:
  |v| < 1e11 seconds (up to the year 5138), < 1e14 milliseconds, < 1e17 microseconds,
  otherwise nanoseconds. A millisecond time before 1973-03-03 (< 1e11 ms) is therefore read
  as seconds: write such old times as ISO-8601 instead;
- ISO-8601 text, with or without a zone: "2024-05-01T13:45:00Z", "2024-05-01 13:45:00+02:00",
  "2024-05-01T13:45", "2024-05-01". A time without a zone is UTC;
- datetime columns (Parquet timestamps, pandas datetime64), tz-aware or naive (naive = UTC),
  and cells holding Python datetimes.

Fractions of a second are floored. Anything else (an empty cell, "yesterday", NaN, inf,
31/12/2024) is unparseable: ingest rejects that row with the value and the accepted forms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusionrec.data.tables import as_float, as_text

__all__ = ["ACCEPTED", "FORMS", "parse_timestamps"]

ACCEPTED = ("unix seconds or milliseconds, ISO-8601 (e.g. 2024-05-01T13:45:00Z; no zone = UTC), "
            "or a datetime column")
# per-cell form counted in the ingest report
FORMS = ("unix_s", "unix_ms", "unix_us", "unix_ns", "iso8601", "datetime")
# epoch magnitude bounds: below 1e11 seconds, then ms, us, ns (each unit x1000)
_UNITS = ((1e11, 1.0, "unix_s"), (1e14, 1e-3, "unix_ms"), (1e17, 1e-6, "unix_us"), (np.inf, 1e-9, "unix_ns"))
_EPOCH = pd.Timestamp(0, tz="UTC")
_ZONE = r"[T ]\d{1,2}(?::\d{2}.*)?(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"  # a time part ending in Z or an offset


def _datetimes_to_seconds(values: pd.Series) -> pd.Series:
    """A datetime64 column (naive = UTC, or tz-aware) as float unix seconds; NaT -> NaN."""
    utc = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    ns = (utc - _EPOCH).to_numpy("timedelta64[ns]")
    whole = ns.astype("int64")
    out = (whole // 10**9) + (whole % 10**9) / 1e9  # ns / 1e9 would round the seconds (> 2^53 ns)
    out[np.isnat(ns)] = np.nan
    return pd.Series(out, index=values.index, dtype="float64")


def _epoch_to_seconds(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, form index into _UNITS) of finite epoch numbers, unit by magnitude."""
    size = np.abs(numbers)
    unit = np.searchsorted(np.array([b for b, _, _ in _UNITS[:-1]]), size, side="right")
    scale = np.array([s for _, s, _ in _UNITS])[unit]
    return numbers * scale, unit


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Unix seconds (float, NaN where unparseable) and the form of each cell ("" where unparseable).

    Args:
        values: the raw timestamp column (CSV text, Parquet numbers, datetimes, or a mix).

    Returns:
        (seconds, form), both indexed like values; form is one of FORMS.
    """
    index = values.index
    values = values.reset_index(drop=True)  # positions from here on
    seconds = np.full(len(values), np.nan)
    form = np.full(len(values), "", dtype=object)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        seconds[:] = _datetimes_to_seconds(values).to_numpy()
        form[~np.isnan(seconds)] = "datetime"
        return pd.Series(seconds, index=index), pd.Series(form, index=index)
    if pd.api.types.is_bool_dtype(values):  # True/False is no time
        return pd.Series(seconds, index=index), pd.Series(form, index=index)
    rest = np.ones(len(values), bool)  # cells not read yet
    if pd.api.types.infer_dtype(values, skipna=True) in ("datetime", "datetime64", "date", "mixed", "mixed-integer"):
        # an object column holding Python datetimes (alone or among text and numbers)
        is_dt = values.map(lambda v: isinstance(v, pd.Timestamp | np.datetime64) or hasattr(v, "tzinfo")).to_numpy(bool)
        if is_dt.any():
            stamps = pd.Series(pd.to_datetime(values[is_dt], utc=True, errors="coerce"))
            seconds[is_dt] = _datetimes_to_seconds(stamps).to_numpy()
            form[is_dt & ~np.isnan(seconds)] = "datetime"
            rest &= ~is_dt
    numbers = as_float(values[rest]).to_numpy()
    where = np.flatnonzero(rest)
    finite = np.isfinite(numbers)
    if finite.any():
        secs, unit = _epoch_to_seconds(numbers[finite])
        seconds[where[finite]] = secs
        form[where[finite]] = np.array([name for _, _, name in _UNITS], dtype=object)[unit]
    if not pd.api.types.is_numeric_dtype(values) and not finite.all():
        # numeric text that is not finite ("nan", "inf") is no time; everything else may be ISO-8601
        text = as_text(values[rest]).to_numpy()
        maybe = ~finite & (text != "") & np.isnan(numbers)
        if maybe.any():
            parsed = _iso_to_seconds(pd.Series(text[maybe])).to_numpy()
            ok = ~np.isnan(parsed)
            seconds[where[maybe][ok]] = parsed[ok]
            form[where[maybe][ok]] = "iso8601"
    return pd.Series(seconds, index=index), pd.Series(form, index=index)


def _iso_to_seconds(text: pd.Series) -> pd.Series:
    """ISO-8601 text as unix seconds (NaN where it is none); a time without a zone is UTC.

    Zoned and naive values are parsed apart: pandas reads a naive value in a column that also
    holds offsets with a neighbour's offset, not as UTC.
    """
    zoned = text.str.contains(_ZONE, regex=True).to_numpy(bool)
    out = np.full(len(text), np.nan)
    for part, utc in ((zoned, True), (~zoned, False)):
        if part.any():
            cells = text[part].str.upper() if utc else text[part]  # "z" is "Z"
            stamps = pd.Series(pd.to_datetime(cells, utc=utc, format="ISO8601", errors="coerce"))
            out[part] = _datetimes_to_seconds(stamps).to_numpy()
    return pd.Series(out, index=text.index)
