"""FeedbackStore: round trips, the served join, background writes and durability after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fusionrec.monitoring.store import FEEDBACK_COLUMNS, SERVED_COLUMNS, FeedbackStore, store_url


@pytest.fixture
def store(tmp_path: Path):
    with FeedbackStore(tmp_path / "fb" / "feedback.db") as s:
        yield s


def test_plain_path_becomes_sqlite_url(tmp_path: Path) -> None:
    assert store_url(tmp_path / "x.db").startswith("sqlite:////")
    assert store_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_sqlite_runs_in_wal_mode_with_full_sync(store: FeedbackStore) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_feedback_round_trip_joins_served_position(store: FeedbackStore) -> None:
    store.record_served("r1", "u1", ["a", "b", "c"], [0.9, 0.5, 0.1], "v1", ts=100.0)
    fid = store.append_feedback("u1", "b", "click", request_id="r1", ts=101.0)
    store.append_feedback("u2", "z", "like", ts=102.0)
    fb = store.read_feedback()
    assert list(fb.columns) == list(FEEDBACK_COLUMNS)
    assert fb["id"].tolist() == [fid, fid + 1]
    first = fb.iloc[0]
    assert (first.position, first.score, first.model_version) == (1, 0.5, "v1")
    assert fb.iloc[1].request_id is None and pd.isna(fb.iloc[1].position)
    served = store.read_served(request_id="r1")
    assert list(served.columns) == list(SERVED_COLUMNS)
    assert served["item_id"].tolist() == ["a", "b", "c"] and served["position"].tolist() == [0, 1, 2]


def test_read_feedback_filters(store: FeedbackStore) -> None:
    for i in range(5):
        store.append_feedback(f"u{i}", "a", "view", ts=float(i))
    assert store.read_feedback(since=2.0)["user_id"].tolist() == ["u2", "u3", "u4"]
    assert store.read_feedback(until=2.0)["user_id"].tolist() == ["u0", "u1"]
    first_id = int(store.read_feedback(limit=1)["id"].iloc[0])
    assert len(store.read_feedback(after_id=first_id)) == 4
    assert store.count() == 5


def test_background_served_writes_flush(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "f.db", background_served=True) as s:
        for i in range(200):
            s.record_served(f"r{i}", "u", ["a", "b"], [1.0, 0.5], "v1")
        s.flush()
        assert s.count("served") == 400
    with FeedbackStore(tmp_path / "f.db") as s:  # close() drained the queue too
        assert s.count("served") == 400


def test_concurrent_writers_lose_nothing(store: FeedbackStore) -> None:
    def write(t: int) -> None:
        for i in range(25):
            store.append_feedback(f"u{t}", f"i{i}", "click")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 100


WRITER = textwrap.dedent(
    """
    import sys
    from fusionrec.monitoring.store import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    i = 0
    while True:
        fid = store.append_feedback(f"u{i}", f"i{i}", "click", request_id=f"r{i}")
        print(fid, flush=True)  # acknowledged only after the commit returned
        i += 1
    """
)


def test_acknowledged_feedback_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(acked) < 50 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(acked) >= 50, "writer did not acknowledge 50 events in time"
    with FeedbackStore(db) as s:
        stored = set(s.read_feedback()["id"].tolist())
    assert set(acked) <= stored


@pytest.mark.integration
def test_postgresql_round_trip() -> None:
    """Same store on PostgreSQL, when FUSIONREC_TEST_PG_URL names a disposable database."""
    url = os.environ.get("FUSIONREC_TEST_PG_URL")
    if not url:
        pytest.skip("set FUSIONREC_TEST_PG_URL=postgresql+psycopg://user:pw@host/db to run")
    with FeedbackStore(url) as s:
        rid = f"pg-{time.time_ns()}"
        s.record_served(rid, "u", ["a", "b"], [1.0, 0.5], "v1")
        s.append_feedback("u", "b", "click", request_id=rid)
        fb = s.read_feedback(after_id=int(s.read_feedback()["id"].max()) - 1)
        assert fb["position"].tolist()[-1] == 1
