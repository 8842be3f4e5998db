"""Bounded reads of the feedback store: the monitor's windows, never whole tables.

`served` grows by one row per recommended item and `feedback` by one per event, so a monitor
that read both tables on every run would get slower and hungrier every hour. Each query here
has a WHERE on an indexed column (`ts`, the `id` key) and most have a LIMIT:

- the deployment of the current model (the first `served` row with its version) is looked up
  once, among the rows after the previous run's watermark (a first run ever scans the table),
  and then kept in the state folder;
- the reference window is the first `reference_window` events after the deployment
  (`ts >= deployed_at ORDER BY ts, id LIMIT n`); once it is full it is pinned: its events and
  impressions are saved in the state folder and never queried again, so expired impressions can
  be deleted without changing the reference;
- the current window is the last `current_window` events after the reference
  (`ORDER BY ts DESC, id DESC LIMIT n + 1`), and its impressions the `served` rows of its time
  span;
- `drop_expired_served` deletes impressions older than `monitor.served_retention_days` in
  batches (the service keeps writing meanwhile), never those a window still reads from the store
  (`retention_cutoff`);
- `retrain_rows` reads what a merge needs: feedback after the dataset's watermark and the
  impressions served since the last merge.

The windows are the same as `monitor.select_windows` computes from whole in-memory tables
(tests/monitoring/test_windows.py checks this on SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fusionrec.config import MonitorConfig
from fusionrec.io import read_json, write_json
from fusionrec.monitoring.merge import _watermarks as merge_watermarks
from fusionrec.monitoring.store import FEEDBACK_COLUMNS, SERVED_COLUMNS, feedback_table, served_table

MARKS_FILE = "windows.json"
REFERENCE_EVENTS = "reference_events.parquet"
REFERENCE_SERVED = "reference_served.parquet"
WINDOW_SERVED_COLUMNS = ("request_id", "item_id", "position", "score", "ts", "explored")  # what the checks read
DEPLOY_MARGIN_S = 3600.0  # replicas' clocks and the background writer may put a row this far before the mark
PIN_AFTER_S = 60.0  # pin a full reference once the newest impression is this much later than its last event
DELETE_BATCH = 50_000  # rows per DELETE: the service's writes wait for one batch at most
ANSWER_MARGIN_S = 3600.0  # feedback this long before the served watermark may answer impressions after it


@dataclass
class Windows:
    """Reference and current windows of feedback events and of served impressions."""

    ref_events: pd.DataFrame
    cur_events: pd.DataFrame
    ref_served: pd.DataFrame
    cur_served: pd.DataFrame
    deployed_at: float | None


@dataclass
class Marks:
    """What a monitor run leaves for the next one (state/windows.json).

    model_version: the model the marks belong to (a new one starts afresh).
    deployed_at: ts of that model's first served row (None: not seen in `served` yet).
    served_until: the newest served ts the run saw (where the next run looks for a new model).
    pinned: the reference window is saved in the state folder.
    """

    model_version: str = ""
    deployed_at: float | None = None
    served_until: float | None = None
    pinned: bool = False

    @classmethod
    def load(cls, state_dir: Path) -> Marks:
        path = Path(state_dir) / MARKS_FILE
        if not path.is_file():
            return cls()
        data = read_json(path)
        return cls(**{k: data[k] for k in ("model_version", "deployed_at", "served_until", "pinned") if k in data})

    def save(self, state_dir: Path) -> Path:
        return write_json(Path(state_dir) / MARKS_FILE, asdict(self))


def _frame(rows: Any, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def newest_served_ts(engine: sa.Engine) -> float | None:
    """max(ts) of `served` (an index lookup)."""
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(served_table.c.ts))).scalar()
    return None if value is None else float(value)


def last_feedback_id(engine: sa.Engine) -> int | None:
    """max(id) of `feedback` (the primary key)."""
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(feedback_table.c.id))).scalar()
    return None if value is None else int(value)


def deployment_start(engine: sa.Engine, version: str, since: float | None) -> float | None:
    """ts of the first `served` row of `version` at or after `since` (None: all rows; the caller
    passes the previous run's watermark, so only the rows served since then are searched)."""
    if not version:
        return None
    c = served_table.c
    query = sa.select(sa.func.min(c.ts)).where(c.model_version == version)
    if since is not None:
        query = query.where(c.ts >= since)
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else float(value)


def reference_events(engine: sa.Engine, deployed_at: float | None, n: int) -> pd.DataFrame:
    """The first n feedback events at or after the deployment, in (ts, id) order."""
    c = feedback_table.c
    query = sa.select(*[c[k] for k in FEEDBACK_COLUMNS]).order_by(c.ts, c.id).limit(n)
    if deployed_at is not None:
        query = query.where(c.ts >= deployed_at)
    with engine.connect() as conn:
        return _frame(conn.execute(query), FEEDBACK_COLUMNS)


def current_events(engine: sa.Engine, after: tuple[float, int], n: int) -> tuple[pd.DataFrame, bool]:
    """The last n events after `after` = (ts, id) of the reference's last event, in (ts, id) order.

    Returns:
        (events, more): more is True when older events lie between the reference and these.
    """
    c = feedback_table.c
    ts, last_id = after
    query = (sa.select(*[c[k] for k in FEEDBACK_COLUMNS])
             .where(sa.or_(c.ts > ts, sa.and_(c.ts == ts, c.id > last_id)))
             .order_by(c.ts.desc(), c.id.desc()).limit(n + 1))
    with engine.connect() as conn:
        rows = _frame(conn.execute(query), FEEDBACK_COLUMNS)
    more = len(rows) > n
    return rows.iloc[:n].iloc[::-1].reset_index(drop=True), more


def served_between(engine: sa.Engine, low: float | None, high: float, include_low: bool = True) -> pd.DataFrame:
    """Impressions with low <= ts <= high (low < ts with include_low=False; no lower bound for None)."""
    c = served_table.c
    query = sa.select(*[c[k] for k in WINDOW_SERVED_COLUMNS]).where(c.ts <= high).order_by(c.id)
    if low is not None:
        query = query.where(c.ts >= low if include_low else c.ts > low)
    with engine.connect() as conn:
        return _frame(conn.execute(query), WINDOW_SERVED_COLUMNS)


def _empty_served() -> pd.DataFrame:
    return pd.DataFrame(columns=list(WINDOW_SERVED_COLUMNS))


def _reference(engine: sa.Engine, deployed_at: float | None, cfg: MonitorConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = reference_events(engine, deployed_at, cfg.reference_window)
    if not len(ref):
        return ref, _empty_served()
    return ref, served_between(engine, deployed_at, float(ref["ts"].max()))


def read_windows(engine: sa.Engine, version: str, cfg: MonitorConfig, state_dir: Path) -> tuple[Windows, Marks]:
    """The monitor's windows from the store, with the reference pinned in `state_dir` once full.

    Args:
        engine: the feedback store's engine (`FeedbackStore(url).engine`).
        version: the serving model's version as the service writes it into `served.model_version`.
        state_dir: where the marks and the pinned reference live between runs.

    Returns:
        (windows, marks): the marks are saved; retention reads them (`retention_cutoff`).
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    old = Marks.load(state_dir)
    same = old.model_version == version
    if same and old.deployed_at is not None:
        deployed_at: float | None = old.deployed_at
    else:  # a new model, or one not served at the last run: its first row is after that run's watermark
        since = None if old.served_until is None else old.served_until - DEPLOY_MARGIN_S
        deployed_at = deployment_start(engine, version, since)
    newest = newest_served_ts(engine)
    pinned = same and old.pinned
    if pinned:
        ref = pd.read_parquet(state_dir / REFERENCE_EVENTS)
        ref_served = pd.read_parquet(state_dir / REFERENCE_SERVED)
    else:
        ref, ref_served = _reference(engine, deployed_at, cfg)
        full = len(ref) >= cfg.reference_window > 0
        if full and newest is not None and newest - float(ref["ts"].max()) >= PIN_AFTER_S:
            ref.to_parquet(state_dir / REFERENCE_EVENTS, index=False)
            ref_served.to_parquet(state_dir / REFERENCE_SERVED, index=False)
            pinned = True
    cur, cur_served = ref.iloc[0:0], _empty_served()
    if len(ref) and len(ref) >= cfg.reference_window and cfg.current_window > 0:
        last = ref.iloc[-1]
        cur, more = current_events(engine, (float(last["ts"]), int(last["id"])), cfg.current_window)
        if len(cur):
            # contiguous with the reference unless older events lie between them (as select_windows)
            start = float(cur["ts"].min()) if more else float(ref["ts"].max())
            cur_served = served_between(engine, start, float(cur["ts"].max()), include_low=False)
    marks = Marks(model_version=version, deployed_at=deployed_at,
                  served_until=newest if newest is not None else old.served_until, pinned=pinned)
    marks.save(state_dir)
    return Windows(ref, cur, ref_served, cur_served, deployed_at), marks


def drop_expired_served(engine: sa.Engine, before: float, batch: int = DELETE_BATCH) -> int:
    """Delete impressions with ts < before, `batch` rows per transaction; returns how many."""
    c = served_table.c
    doomed = sa.select(c.id).where(c.ts < before).limit(batch).scalar_subquery()
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(served_table.delete().where(c.id.in_(doomed))).rowcount
        total += max(int(deleted), 0)
        if deleted < batch:
            return total


def retention_cutoff(now: float, w: Windows, marks: Marks, cfg: MonitorConfig) -> float | None:
    """Impressions older than this may go (None: keep all).

    Never those the windows still read from the store: the current window's, and the reference's
    until it is pinned (a quiet service's windows can reach further back than the retention).
    """
    if cfg.served_retention_days <= 0:
        return None
    cutoff = now - cfg.served_retention_days * 86400.0
    for frame in (w.cur_events, w.cur_served):
        if len(frame):
            cutoff = min(cutoff, float(frame["ts"].min()))
    if not marks.pinned:
        starts = [w.deployed_at] if w.deployed_at is not None else []
        starts += [float(w.ref_events["ts"].min())] if len(w.ref_events) else []
        cutoff = min([cutoff, *starts])
    return cutoff


def retrain_rows(engine: sa.Engine, data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What merging the store into `data_dir` needs, read after the dataset's watermarks.

    Feedback: the events after the last merged id, plus those of the last hour before the served
    watermark (they may answer impressions after it: an answered impression is no skip).
    Served: the impressions after the served watermark, so an item counts as shown
    `monitor.skip_after` times among the showings since the last merge.

    Returns:
        (feedback with FEEDBACK_COLUMNS, served with SERVED_COLUMNS).
    """
    last_id, served_mark = merge_watermarks(Path(data_dir))
    f, s = feedback_table.c, served_table.c
    fb_query = sa.select(*[f[k] for k in FEEDBACK_COLUMNS]).order_by(f.id)
    if last_id or served_mark:
        fb_query = fb_query.where(sa.or_(f.id > last_id, f.ts > served_mark - ANSWER_MARGIN_S))
    sv_query = sa.select(*[s[k] for k in SERVED_COLUMNS]).where(s.ts > served_mark).order_by(s.id)
    with engine.connect() as conn:
        feedback = _frame(conn.execute(fb_query), FEEDBACK_COLUMNS)
        served = _frame(conn.execute(sv_query), SERVED_COLUMNS)
    return feedback, served
