"""Monitor benchmark: one monitor run on a feedback store of 10 million served impressions.

    python -m benchmarks.monitor [--served 10000000] [--days 40] [--no-before] [--db NEW_FILE] [--out-dir DIR]

Builds an SQLite store (WAL, as the service's default; PostgreSQL reads the same queries) with
`--served` impressions over `--days` days (10 per request, about 5% answered with a click or a
like; a new model deployed 7 days ago), then measures, each in a fresh process (time and peak
resident memory):

- before: the monitor as it was, reading both whole tables (`read_feedback()`, `read_served()`)
  and judging them in memory (`monitor_frames`); and the read alone;
- after: `monitor_store`, which reads only its windows (windows.py), on its first run (which
  also deletes impressions past `monitor.served_retention_days`, 30) and on the next run (the
  reference pinned, nothing to delete); and the window read alone.

The drift checks (Evidently, the same 2,000-event windows) cost the same in both. Writes
benchmarks/reports/monitor.{json,md}. Minutes: building the store takes most of it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write_report
from fusionrec.config import MonitorConfig, load_params
from fusionrec.monitoring.monitor import ModelView

REPO = Path(__file__).resolve().parents[1]
DAY = 86400.0
K = 10  # impressions per request
N_ITEMS, N_USERS, DIM = 5000, 50_000, 32
CHUNK = 500_000  # impressions generated and inserted at a time
SEED = 3


def model_view() -> ModelView:
    """A synthetic served model ("v2"): random unit item vectors and training popularity."""
    rng = np.random.default_rng(SEED)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ModelView("v2", [f"i{j}" for j in range(N_ITEMS)], rng.integers(1, 500, N_ITEMS).astype(np.float64), vectors)


def build_store(path: Path, served: int, days: float, now: float) -> dict[str, Any]:
    """Write `served` impressions (and their feedback) over `days` days before `now` into an SQLite store."""
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(path):  # the schema and its indexes, as the service creates them
        pass
    rng = np.random.default_rng(SEED)
    requests = served // K
    step = days * DAY / requests
    deployed = now - 7 * DAY
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    t0, n_feedback = time.perf_counter(), 0
    for first in range(0, requests, CHUNK // K):
        req = np.arange(first, min(first + CHUNK // K, requests))
        ts = now - days * DAY + req * step  # (r,)
        users = rng.integers(N_USERS, size=len(req))
        items = rng.integers(N_ITEMS, size=(len(req), K))  # (r, K)
        scores = -np.sort(-rng.normal(size=(len(req), K)), axis=1)  # the model's ranking: best first
        version = np.where(ts >= deployed, "v2", "v1")
        pos = np.tile(np.arange(K), len(req))  # (r*K,)
        rid = np.repeat([f"r{r:09d}" for r in req], K)
        uid = np.repeat([f"u{u}" for u in users], K)
        iid = np.array([f"i{j}" for j in items.ravel()])
        sc, ts_k, ver_k = scores.ravel(), np.repeat(ts, K), np.repeat(version, K)
        conn.executemany(
            "INSERT INTO served (request_id, user_id, item_id, position, score, model_version, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            zip(rid.tolist(), uid.tolist(), iid.tolist(), pos.tolist(), sc.tolist(), ver_k.tolist(), ts_k.tolist(),
                strict=True))
        clicked = rng.random(len(pos)) < 0.08 / (1 + 0.15 * pos)
        event = np.where(rng.random(len(pos)) < 0.2, "like", "click")
        conn.executemany(
            "INSERT INTO feedback (request_id, user_id, item_id, event, ts, position, score, model_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            zip(rid[clicked].tolist(), uid[clicked].tolist(), iid[clicked].tolist(), event[clicked].tolist(),
                (ts_k[clicked] + 2.0).tolist(), pos[clicked].tolist(), sc[clicked].tolist(), ver_k[clicked].tolist(),
                strict=True))
        conn.commit()
        n_feedback += int(clicked.sum())
    conn.close()
    return {"served": requests * K, "feedback": n_feedback, "days": days, "build_s": round(time.perf_counter() - t0, 1),
            "db_mb": round(path.stat().st_size / 2**20, 1)}


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def child(variant: str, db: Path, out: Path, now: float) -> dict[str, Any]:
    """One measurement in this (fresh) process; what the parent prints and records."""
    from fusionrec.monitoring.monitor import monitor_frames, monitor_store
    from fusionrec.monitoring.store import FeedbackStore
    from fusionrec.monitoring.windows import read_windows

    cfg = load_params(REPO / "params.yaml").monitor
    view = model_view()
    import evidently.presets  # noqa: F401  (imported before the clock starts, like any CLI run's imports)

    base = _peak_mb()
    t0 = time.perf_counter()
    with FeedbackStore(db) as store:
        if variant == "before-read":
            feedback, served = store.read_feedback(), store.read_served()
            rows = {"feedback": len(feedback), "served": len(served)}
        elif variant == "before":
            feedback, served = store.read_feedback(), store.read_served()
            rows = {"feedback": len(feedback), "served": len(served)}
            monitor_frames(feedback, served, view, out, cfg)
        elif variant == "after-read":
            w, _ = read_windows(store.engine, view.version, cfg, out / "state")
            rows = {"feedback": len(w.ref_events) + len(w.cur_events), "served": len(w.ref_served) + len(w.cur_served)}
        else:  # after: the monitor run as the CronJob makes it
            decision, _ = monitor_store(store, view, out, cfg, now=now)
            win = decision.numbers["windows"]
            rows = {"feedback": win["reference_events"] + win["current_events"],
                    "served": win["reference_impressions"] + win["current_impressions"],
                    "served_dropped": decision.numbers["retention"]["served_dropped"]}
    return {"variant": variant, "wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": _peak_mb(),
            "rss_after_imports_mb": base, "rows_read": rows}


def measure(variant: str, db: Path, out: Path, now: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.monitor", "--child", variant, "--db", str(db),
                           "--state", str(out), "--now", repr(now)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{variant:>12}: {result['wall_s']:8.2f} s, peak {result['peak_rss_mb']:8.1f} MB, read {result['rows_read']}")
    return dict(result)


def cronjob_memory_limit() -> str:
    """The monitor container's memory limit in k8s/base/monitor/cronjob.yaml."""
    import yaml

    doc = yaml.safe_load((REPO / "k8s" / "base" / "monitor" / "cronjob.yaml").read_text())
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return str(container["resources"]["limits"]["memory"])


def markdown(store: dict[str, Any], runs: list[dict[str, Any]], cfg: MonitorConfig) -> str:
    names = {
        "before-read": "before: read both whole tables",
        "before": "before: whole tables + drift checks (one run)",
        "after-read": "after: read the windows",
        "after-first": f"after: monitor run, first (deletes impressions older than {cfg.served_retention_days:g} days)",
        "after-next": "after: monitor run, next hour (reference pinned)",
    }
    lines = [
        f"# Monitor benchmark\n\nOne monitor run on an SQLite feedback store (WAL) of {store['served']:,} served "
        f"impressions and {store['feedback']:,} feedback events over {store['days']:g} days ({store['db_mb']:,} MB); "
        f"windows of {cfg.reference_window:,} + {cfg.current_window:,} events. Each row is a fresh process; peak "
        "memory is the process's peak resident set, imports included (the imports alone: "
        f"{runs[0]['rss_after_imports_mb']:,.0f} MB).\n",
        "| run | wall time | peak memory | feedback rows read | served rows read |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        rows = r["rows_read"]
        lines.append(f"| {names[r['variant']]} | {r['wall_s']:.1f} s | {r['peak_rss_mb']:,.0f} MB | "
                     f"{rows['feedback']:,} | {rows['served']:,} |")
    by = {r["variant"]: r for r in runs}
    if "before" in by:
        lines.append(f"\nReading the whole tables peaks at {by['before']['peak_rss_mb'] / 1024:.1f} GB, over the "
                     f"monitor CronJob's memory limit ({cronjob_memory_limit()}): on the cluster the old monitor "
                     "would be OOM-killed at this size.")
    if "after-first" in by:
        lines.append(f"\nThe first run deleted {by['after-first']['rows_read']['served_dropped']:,} expired "
                     "impressions (50,000 rows per transaction, so the service's writes wait for one batch at "
                     "most) and, having no watermark yet, scanned `served` once for the model's first "
                     "impression; later runs look for a new model only after the previous run's watermark.")
    lines.append("\nSQLite stands in for PostgreSQL here: the queries are the same (WHERE on the indexed `ts` and "
                 "the `id` key, LIMIT on the windows), tests/monitoring/test_windows.py runs them on both.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--served", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=40.0)
    parser.add_argument("--no-before", action="store_true", help="skip the whole-table runs (they need GBs)")
    parser.add_argument("--db", type=Path, default=None, help="build the store here (a new file; default: a temp dir)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--now", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.db, args.state, args.now)))
        return 0
    cfg = load_params(REPO / "params.yaml").monitor
    with tempfile.TemporaryDirectory(prefix="fusionrec-bench-monitor-") as tmp:
        work = Path(tmp)
        db = args.db or work / "feedback.db"
        if db.exists():
            parser.error(f"{db} exists: the benchmark builds a new store (the runs delete rows from it)")
        now = time.time()
        store = build_store(db, args.served, args.days, now)
        print(f"store: {store}")
        runs = []
        variants = ([] if args.no_before else ["before-read", "before"]) + ["after-read"]
        for variant in variants:
            runs.append(measure(variant, db, work / variant, now))
        for variant, at in (("after-first", now), ("after-next", now + 3600)):
            runs.append({**measure("after", db, work / "after", at), "variant": variant})
        data = {"store": store, "runs": runs, "monitor": cfg.model_dump(mode="json")}
        paths = write_report("monitor", data, markdown(store, runs, cfg), args.out_dir)
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
