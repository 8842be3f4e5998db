"""Timestamps as users have them: unix s/ms, ISO-8601 (zone or none), datetime columns, or none at all."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec import schema
from fusionrec.config import IngestConfig, SplitConfig
from fusionrec.data.ingest import run_ingest
from fusionrec.data.loading import SplitError, load_ingested
from fusionrec.data.splits import run_split, split_frames
from fusionrec.data.timestamps import parse_timestamps

T0 = 1_714_571_100  # 2024-05-01T13:45:00Z
CFG = IngestConfig(text_columns=["title"], context_columns=[])


def _dataset(root: Path, stamps: object = None, users: int = 4, per_user: int = 6, fmt: str = "csv") -> Path:
    """items 0..9 with a title; user u interacts with items u..u+per_user-1; timestamps as given per row."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": [str(i) for i in range(10)], "title": [f"t{i}" for i in range(10)]}).to_csv(
        root / "items.csv", index=False)
    rows = [(f"u{u}", str(u + j)) for u in range(users) for j in range(per_user)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    if stamps is not None:
        inter["timestamp"] = stamps(len(inter)) if callable(stamps) else stamps
    if fmt == "csv":
        inter.to_csv(root / "interactions.csv", index=False)
    else:
        inter.to_parquet(root / "interactions.parquet", index=False)
    return root


def _ingested_times(out: Path) -> list[int]:
    return pd.read_parquet(out / schema.INGESTED_INTERACTIONS)[schema.TIMESTAMP].tolist()


def test_unix_seconds_and_milliseconds_are_told_apart_by_magnitude(tmp_path: Path) -> None:
    n = 24
    stamps = [str(T0 + i) if i % 2 else str((T0 + i) * 1000 + 999) for i in range(n)]  # a mixed column
    root = _dataset(tmp_path / "data", stamps)
    run_ingest(root, tmp_path / "out", CFG)
    assert _ingested_times(tmp_path / "out") == [T0 + i for i in range(n)]  # ms floored to the second
    report = json.loads((tmp_path / "out" / schema.REPORT).read_text())
    assert report["timestamp"] == {"present": True, "forms": {"unix_ms": 12, "unix_s": 12}}


def test_iso8601_with_and_without_zone_naive_is_utc(tmp_path: Path) -> None:
    forms = ["2024-05-01T13:45:{:02d}Z", "2024-05-01T15:45:{:02d}+02:00", "2024-05-01 13:45:{:02d}",
             "2024-05-01T09:45:{:02d}-04:00"]
    stamps = [forms[i % 4].format(i) for i in range(24)]
    root = _dataset(tmp_path / "data", stamps)
    run_ingest(root, tmp_path / "out", CFG)
    assert _ingested_times(tmp_path / "out") == [T0 + i for i in range(24)]
    seconds, form = parse_timestamps(pd.Series(["2024-05-01", "2024-05-01T13:45:00.750Z"]))
    assert seconds.tolist() == [T0 - 13 * 3600 - 45 * 60, T0 + 0.75] and set(form) == {"iso8601"}


@pytest.mark.parametrize("zone", [None, "Europe/Paris"])
def test_parquet_datetime_columns_naive_or_tz_aware(tmp_path: Path, zone: str | None) -> None:
    def stamps(n: int) -> pd.Series:
        utc = pd.to_datetime([T0 + i for i in range(n)], unit="s", utc=True)
        return pd.Series(utc.tz_localize(None) if zone is None else utc.tz_convert(zone))

    root = _dataset(tmp_path / "data", stamps, fmt="parquet")
    kind = pd.read_parquet(root / "interactions.parquet")["timestamp"].dtype
    assert pd.api.types.is_datetime64_any_dtype(kind) and (getattr(kind, "tz", None) is None) == (zone is None)
    run_ingest(root, tmp_path / "out", CFG)
    assert _ingested_times(tmp_path / "out") == [T0 + i for i in range(24)]  # naive read as UTC


def test_cells_of_every_form_and_the_units_past_milliseconds() -> None:
    values = pd.Series([T0, T0 * 10**3, T0 * 10**6, T0 * 10**9, "2024-05-01T13:45:00Z",
                        dt.datetime(2024, 5, 1, 15, 45, tzinfo=dt.timezone(dt.timedelta(hours=2))), -86400],
                       dtype=object)
    seconds, form = parse_timestamps(values)
    assert seconds.tolist() == [T0] * 6 + [-86400]  # a negative number is before 1970, in seconds
    assert form.tolist() == ["unix_s", "unix_ms", "unix_us", "unix_ns", "iso8601", "datetime", "unix_s"]


def test_every_unparseable_value_is_rejected_with_its_reason(tmp_path: Path) -> None:
    bad = {3: "yesterday", 5: "", 8: "31/12/2024", 13: "inf", 17: "nan", 20: "2024-13-45T00:00:00"}
    stamps = [bad.get(i, str(T0 + i)) for i in range(24)]
    root = _dataset(tmp_path / "data", stamps)
    run_ingest(root, tmp_path / "out", CFG.with_overrides(max_rejected_share=0.3))  # type: ignore[arg-type]
    rejected = pd.read_parquet(tmp_path / "out" / schema.REJECTED)
    assert dict(zip(rejected[schema.REJ_ROW], rejected[schema.REJ_REASON], strict=True)) == {
        r: "unparseable_value" for r in bad}
    for row, value in bad.items():
        detail = rejected.set_index(schema.REJ_ROW).loc[row, schema.REJ_DETAIL]
        assert detail.startswith(f"timestamp {value!r} is not a time") and "ISO-8601" in detail, detail
    assert _ingested_times(tmp_path / "out") == [T0 + i for i in range(24) if i not in bad]


def test_no_timestamp_column_random_split_works_temporal_refuses(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", None)
    with (root / "interactions.csv").open("a") as fh:
        fh.write("u0,0\n")  # a repeat: with no time, "last" is the later row of the file
    run_ingest(root, tmp_path / "out", CFG)
    ingested = load_ingested(tmp_path / "out")
    assert schema.TIMESTAMP not in ingested.interactions.columns  # no time is made up
    report = json.loads((tmp_path / "out" / schema.REPORT).read_text())
    assert report["timestamp"]["present"] is False and "random-811" in report["timestamp"]["note"]
    rejected = pd.read_parquet(tmp_path / "out" / schema.REJECTED)
    assert rejected[schema.REJ_ROW].tolist() == [0] and rejected[schema.REJ_REASON].tolist() == [
        "duplicate_interaction"]
    for protocol in ("random-811", "cold-items"):
        run_split(tmp_path / "out", tmp_path / protocol, SplitConfig(protocol=protocol, test_share=0.2))  # type: ignore[arg-type]
        parts = [pd.read_parquet(tmp_path / protocol / f"{p}.parquet") for p in schema.SPLIT_PARTS]
        assert sum(len(p) for p in parts) == len(ingested.interactions) and len(parts[2]) > 0
    for protocol in ("temporal-loo", "global-time"):
        with pytest.raises(SplitError, match=rf"'{protocol}' orders interactions by time, but "
                           r".*interactions\.parquet has no 'timestamp' column.*Add a 'timestamp' column.*"
                           r"random-811 or cold-items"):
            split_frames(ingested, SplitConfig(protocol=protocol))  # type: ignore[arg-type]


def test_temporal_split_orders_iso_times_by_instant_not_text(tmp_path: Path) -> None:
    """'10:00+02:00' is earlier than '09:30Z' although its text sorts later: the split sees instants."""
    def stamps(n: int) -> list[str]:
        out = [f"2024-05-01T0{j % 6}:00:00Z" for j in range(n)]
        out[5] = "2024-05-01T10:00:00+02:00"  # user u0's last row in the file: 08:00 UTC, not the latest
        out[4] = "2024-05-01T09:30:00Z"  # u0's latest instant
        return out

    root = _dataset(tmp_path / "data", stamps)
    run_ingest(root, tmp_path / "out", CFG)
    split = split_frames(load_ingested(tmp_path / "out"), SplitConfig(protocol="temporal-loo"))
    test_u0 = split.test[split.test[schema.USER_ID] == "u0"]
    assert test_u0[schema.ITEM_ID].tolist() == ["4"] and np.all(split.test[schema.TIMESTAMP] > 0)
