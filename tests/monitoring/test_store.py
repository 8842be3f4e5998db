"""FeedbackStore on SQLite and PostgreSQL: round trips, the served join, background writes, concurrent
writers and processes, and durability of acknowledged events after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from tests.postgres import LocalPostgres, start_in_session

from fusionrec.monitoring.store import (
    FEEDBACK_COLUMNS,
    SERVED_COLUMNS,
    FeedbackStore,
    FeedbackStoreError,
    store_url,
)


@pytest.fixture
def store(db_url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore(db_url) as s:
        yield s


def test_plain_path_becomes_sqlite_url(tmp_path: Path) -> None:
    assert store_url(tmp_path / "x.db").startswith("sqlite:////")
    assert store_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb" / "feedback.db") as store, store.engine.connect() as conn:
        assert (tmp_path / "fb").is_dir()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_ids_are_64_bit_on_postgresql(postgres: LocalPostgres) -> None:
    """`served` takes k rows per request: a 32-bit id would run out within weeks at production rates."""
    with FeedbackStore(postgres.new_database("ids")) as store, store.engine.connect() as conn:
        types = conn.exec_driver_sql(
            "SELECT table_name, data_type FROM information_schema.columns WHERE column_name = 'id'").all()
    assert sorted(types) == [("feedback", "bigint"), ("served", "bigint")]


def test_feedback_round_trip_joins_served_position(store: FeedbackStore) -> None:
    ts = 1_767_225_600.123456  # unix seconds with microseconds: a double on both backends
    store.record_served("r1", "u1", ["a", "b", "c"], [0.9, 0.5, 0.1], "v1", ts=ts)
    fid = store.append_feedback("u1", "b", "click", request_id="r1", ts=ts + 1)
    store.append_feedback("u2", "z", "like", ts=ts + 2)
    fb = store.read_feedback()
    assert list(fb.columns) == list(FEEDBACK_COLUMNS)
    assert fb["id"].tolist() == [fid, fid + 1]
    first = fb.iloc[0]
    assert (first.position, first.score, first.model_version, first.ts) == (1, 0.5, "v1", ts + 1)
    assert fb.iloc[1].request_id is None and pd.isna(fb.iloc[1].position)
    served = store.read_served(request_id="r1")
    assert list(served.columns) == list(SERVED_COLUMNS)
    assert served["item_id"].tolist() == ["a", "b", "c"] and served["position"].tolist() == [0, 1, 2]
    assert served["ts"].tolist() == [ts] * 3
    assert store.lookup_served("r1", "c") == (2, 0.1, "v1") and store.lookup_served("r1", "z") is None


def test_read_feedback_filters(store: FeedbackStore) -> None:
    for i in range(5):
        store.append_feedback(f"u{i}", "a", "view", ts=float(i))
    assert store.read_feedback(since=2.0)["user_id"].tolist() == ["u2", "u3", "u4"]
    assert store.read_feedback(until=2.0)["user_id"].tolist() == ["u0", "u1"]
    first_id = int(store.read_feedback(limit=1)["id"].iloc[0])
    assert len(store.read_feedback(after_id=first_id)) == 4
    assert store.count() == 5


def test_background_served_writes_flush(db_url: str) -> None:
    with FeedbackStore(db_url, background_served=True) as s:
        for i in range(200):
            s.record_served(f"r{i}", "u", ["a", "b"], [1.0, 0.5], "v1")
        s.flush()
        assert s.count("served") == 400
        for i in range(50):
            s.record_served(f"late{i}", "u", ["a"], [1.0], "v1")
    with FeedbackStore(db_url) as s:  # close() drained the queue too
        assert s.count("served") == 450


def test_concurrent_threads_lose_nothing(store: FeedbackStore) -> None:
    def write(t: int) -> None:
        for i in range(25):
            store.append_feedback(f"u{t}", f"i{i}", "click")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 100
    assert store.read_feedback()["id"].is_unique


# Opens the store when told to (so that all processes create the tables at once), then writes.
PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fusionrec.monitoring.store import FeedbackStore
    url, ready, go, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    with FeedbackStore(url, background_served=True) as store:
        for i in range(n):
            store.record_served(f"{ready.name}-{i}", "u", ["a", "b"], [1.0, 0.5], "v1")
            print(store.append_feedback("u", "b", "click", request_id=f"{ready.name}-{i}"), flush=True)
    """
)


def test_processes_starting_together_on_an_empty_database_all_write(db_url: str, tmp_path: Path) -> None:
    """Service replicas that start at once create the tables together, then write side by side."""
    go, n, procs = tmp_path / "go", 10, []
    for k in range(3):
        procs.append(subprocess.Popen([sys.executable, "-c", PROCESS, db_url, str(tmp_path / f"w{k}"), str(go), str(n)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"w{k}").exists() for k in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    acked = [int(line) for out, _ in outputs for line in out.split()]
    with FeedbackStore(db_url) as s:
        fb = s.read_feedback()
        assert s.count("served") == 3 * n * 2
    assert sorted(fb["id"]) == sorted(acked) and len(set(acked)) == 3 * n
    assert (fb["position"] == 1).all()  # every event joined its own served row


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


def start_writer(url: str, n: int) -> tuple[subprocess.Popen[str], list[int]]:
    """A process appending feedback forever, and the ids of its first n acknowledged events."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(acked) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    return proc, acked


def kill_writer(proc: subprocess.Popen[str], acked: list[int]) -> list[int]:
    """SIGKILL the writer; every id it printed in full (before the kill too) was acknowledged."""
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    return acked + [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]


def test_acknowledged_feedback_survives_sigkill_of_the_sqlite_writer(tmp_path: Path) -> None:
    """SQLite's engine lives in the writer process: killing it is the crash."""
    db = tmp_path / "kill.db"
    proc, acked = start_writer(str(db), 50)
    acked = kill_writer(proc, acked)
    assert len(acked) >= 50, "writer did not acknowledge 50 events in time"
    with FeedbackStore(db) as s:
        stored = set(s.read_feedback()["id"].tolist())
    assert set(acked) <= stored


def test_acknowledged_feedback_survives_sigkill_of_the_postgresql_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """PostgreSQL's engine is the server: kill -9 of the writer's backend makes it drop its shared memory
    and recover from the WAL. A server of its own, so the crash disturbs no other test."""
    server = start_in_session(tmp_path_factory, "pg-crash")
    try:
        url = server.new_database("crash")
        proc, acked = start_writer(url, 50)
        admin = sa.create_engine(server.admin_url, poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            backends = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db"),
                                    {"db": sa.engine.make_url(url).database}).scalars().all()
        assert backends, "the writer has no backend"
        for pid in backends:
            os.kill(pid, signal.SIGKILL)
        acked = kill_writer(proc, acked)
        assert len(acked) >= 50, "writer did not acknowledge 50 events in time"
        deadline = time.monotonic() + 60
        while True:  # connections are refused while the server recovers
            try:
                with FeedbackStore(url) as s:
                    stored = set(s.read_feedback()["id"].tolist())
                break
            except (FeedbackStoreError, sa.exc.OperationalError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert set(acked) <= stored
        assert "automatic recovery in progress" in server.log.read_text()
    finally:
        server.stop()
