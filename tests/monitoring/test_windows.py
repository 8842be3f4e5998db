"""Bounded reads: the SQL windows equal the in-memory ones, every query is bounded, retention
deletes only what no window needs, and the merge reads only what follows the dataset's watermarks.

Run on SQLite and on the suite's PostgreSQL (`db_url`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from monitoring_synth import store_frames

from fusionrec.config import MonitorConfig
from fusionrec.io import write_json
from fusionrec.monitoring.merge import WATERMARK
from fusionrec.monitoring.monitor import select_windows
from fusionrec.monitoring.store import FeedbackStore, feedback_table, served_table
from fusionrec.monitoring.windows import (
    Marks,
    Windows,
    drop_expired_served,
    read_windows,
    retention_cutoff,
    retrain_rows,
)

T0 = 1_000_000.0  # store_frames' first request is at T0 + 1
DAY = 86400.0


def fill(store: FeedbackStore, feedback: pd.DataFrame, served: pd.DataFrame) -> None:
    """Bulk-insert the frames (ids in frame order, as the service would have written them)."""
    with store.engine.begin() as conn:
        conn.execute(served_table.insert(), served.to_dict("records"))
        conn.execute(feedback_table.insert(), feedback.drop(columns="id").to_dict("records"))


@pytest.fixture()
def store(db_url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore(db_url) as s:
        yield s


@pytest.fixture()
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    fb, sv, _ = store_frames(300, 300, shift=False)
    sv.loc[sv["ts"] < T0 + 40, "model_version"] = "v0"  # an older model served the first 39 requests
    return fb, sv


def same(sql: Windows, mem: Windows) -> None:
    assert sql.deployed_at == mem.deployed_at
    for name in ("ref_events", "cur_events"):
        assert getattr(sql, name)["id"].tolist() == getattr(mem, name)["id"].tolist(), name
    for name in ("ref_served", "cur_served"):
        got = getattr(sql, name)[["ts", "position", "item_id"]].astype({"position": int}).reset_index(drop=True)
        want = getattr(mem, name)[["ts", "position", "item_id"]].astype({"position": int}).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=name)


@pytest.mark.parametrize("windows", [(400, 200), (400, 1000)], ids=["older-events-between", "contiguous"])
def test_sql_windows_are_the_in_memory_windows(store: FeedbackStore, frames: tuple[pd.DataFrame, pd.DataFrame],
                                               tmp_path: Path, windows: tuple[int, int]) -> None:
    fb, sv = frames
    fill(store, fb, sv)
    cfg = MonitorConfig(reference_window=windows[0], current_window=windows[1])
    mem = select_windows(fb, sv, "v1", cfg)
    assert mem.deployed_at == T0 + 40 and len(mem.ref_events) == 400 and len(mem.cur_events) > 0
    sql, marks = read_windows(store.engine, "v1", cfg, tmp_path)
    same(sql, mem)
    assert marks.pinned and marks.deployed_at == T0 + 40 and marks.served_until == float(sv["ts"].max())
    # pinned: the reference survives the deletion of its impressions, and reads the same again
    cutoff = retention_cutoff(T0 + 30 * DAY, sql, marks, cfg.with_overrides(served_retention_days=1))
    assert cutoff is not None and drop_expired_served(store.engine, cutoff) > 0
    again, _ = read_windows(store.engine, "v1", cfg, tmp_path)
    same(again, mem)


def test_a_small_store_has_no_current_window(store: FeedbackStore, tmp_path: Path) -> None:
    fb, sv, _ = store_frames(40, 0, shift=False)
    fill(store, fb, sv)
    cfg = MonitorConfig(reference_window=1000, current_window=1000)
    sql, marks = read_windows(store.engine, "v1", cfg, tmp_path)
    same(sql, select_windows(fb, sv, "v1", cfg))
    assert len(sql.cur_events) == 0 and not marks.pinned  # a reference still filling up is not pinned


def test_every_query_is_bounded(store: FeedbackStore, frames: tuple[pd.DataFrame, pd.DataFrame],
                                tmp_path: Path) -> None:
    """No statement reads a table without a WHERE or an aggregate (what read_feedback()/read_served() did)."""
    fill(store, *frames)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(" ".join(statement.split())))
    cfg = MonitorConfig(reference_window=400, current_window=200)
    for _ in range(2):  # the second run reads the pinned reference from the state folder
        read_windows(store.engine, "v1", cfg, tmp_path)
    selects = [s for s in statements if s.upper().startswith("SELECT")]
    assert selects
    for s in selects:
        bounded = " WHERE " in s.upper() or re.match(r"SELECT (max|min)\(", s, re.I)
        assert bounded, f"unbounded read: {s}"
    per_run = [s for s in selects if "FROM feedback" in s and "LIMIT" in s.upper()]
    assert len(per_run) == 3, per_run  # reference (first run only), then the current window in each run
    found = [s for s in selects if re.match(r"SELECT min\(served.ts\)", s, re.I)]
    assert len(found) == 1, "the deployment is looked up once, then kept in the marks"


def test_a_new_model_is_looked_up_after_the_watermark(store: FeedbackStore, tmp_path: Path) -> None:
    fb, sv, _ = store_frames(100, 100, shift=False)
    fill(store, fb, sv)
    Marks(model_version="v0", deployed_at=T0, served_until=T0 + 5000.0).save(tmp_path)
    with store.engine.begin() as conn:  # a version v2 served once long before (a rollback's target) and now
        conn.execute(served_table.insert(), [
            {"request_id": "old", "user_id": "u", "item_id": "i1", "position": 0, "score": 0.1,
             "model_version": "v2", "ts": T0 - 10 * DAY},
            {"request_id": "new", "user_id": "u", "item_id": "i1", "position": 0, "score": 0.1,
             "model_version": "v2", "ts": T0 + 6000.0}])
    w, marks = read_windows(store.engine, "v2", MonitorConfig(), tmp_path)
    assert w.deployed_at == T0 + 6000.0 == marks.deployed_at  # its deployment now, not the old rows
    assert marks.model_version == "v2" and not marks.pinned


def test_retention_deletes_in_batches_only_what_no_window_needs(store: FeedbackStore, tmp_path: Path) -> None:
    fb, sv, _ = store_frames(300, 300, shift=False)
    fill(store, fb, sv)
    cfg = MonitorConfig(reference_window=400, current_window=200, served_retention_days=1)
    w, marks = read_windows(store.engine, "v1", cfg, tmp_path)
    late = T0 + 30 * DAY  # a month later every impression is past its retention
    assert retention_cutoff(late, w, marks, cfg.with_overrides(served_retention_days=0)) is None
    cutoff = retention_cutoff(late, w, marks, cfg)
    assert cutoff == min(w.cur_events["ts"].min(), w.cur_served["ts"].min()), "the current window keeps its own"
    unpinned = Marks(model_version="v1", deployed_at=w.deployed_at, pinned=False)
    assert retention_cutoff(late, w, unpinned, cfg) == w.deployed_at, "an unpinned reference keeps its own"
    assert retention_cutoff(T0 + 600, w, marks, cfg.with_overrides(served_retention_days=10)) == T0 + 600 - 10 * DAY
    before = store.count("served")
    expected = int((sv["ts"] < cutoff).sum())
    assert drop_expired_served(store.engine, cutoff, batch=997) == expected > 997
    assert store.count("served") == before - expected
    assert store.read_served()["ts"].min() >= cutoff


def test_retrain_reads_after_the_datasets_watermarks(store: FeedbackStore, tmp_path: Path) -> None:
    fb, sv, _ = store_frames(100, 100, shift=False)
    fb["ts"], sv["ts"] = T0 + (fb["ts"] - T0) * 100, T0 + (sv["ts"] - T0) * 100  # a request every 100 s
    fill(store, fb, sv)
    data = tmp_path / "data"
    data.mkdir()
    feedback, served = retrain_rows(store.engine, data)  # never merged: everything
    assert len(feedback) == len(fb) and len(served) == len(sv)
    mark_id, mark_ts = int(fb["id"].iloc[len(fb) // 2]), float(sv["ts"].iloc[len(sv) // 2])
    write_json(data / WATERMARK, {"last_feedback_id": mark_id, "last_served_ts": mark_ts})
    feedback, served = retrain_rows(store.engine, data)
    assert (served["ts"] > mark_ts).all() and len(served) == int((sv["ts"] > mark_ts).sum())
    expected = fb[(fb["id"] > mark_id) | (fb["ts"] > mark_ts - 3600)]  # what may answer a later impression
    assert sorted(feedback["id"]) == sorted(expected["id"]) and len(expected) < len(fb)
