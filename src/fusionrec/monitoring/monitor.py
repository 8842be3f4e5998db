"""`run_monitor`: read the feedback windows, run the drift checks, write reports and decision.json.

Windows: the reference window is the first `reference_window` feedback events after the
current model was deployed (the first `served` row with its version), the current window the
last `current_window` events after it (never overlapping the reference). The training data
enters through the model: the popularity of interacted items is their training count, and new
items are compared with the training catalogue's item vectors.

`run_monitor` reads only those windows from the store (windows.py), deletes impressions past
their retention, and keeps every run in its own dated folder with a history page (history.py);
`monitor_frames` is the same judgement on whole tables held in memory (the demo loop, tests).

Explored impressions (`served.explored`: items the service showed from beyond its model's top-k) and
the feedback that answered them are left out of the feedback and score checks (`chosen_only`):
click-through, its profile by position and the served scores then measure the model's own choices,
whatever the exploration share, and a change of that share is no drift. The interest and new-item
checks keep every event: what users click is their interest wherever it was shown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fusionrec.config import MonitorConfig
from fusionrec.io import StepResult
from fusionrec.monitoring import history
from fusionrec.monitoring.decision import (
    STREAK_FILE,
    Decision,
    apply_persistence,
    decide,
    insufficient,
    write_decision,
)
from fusionrec.monitoring.drift import (
    TS,
    DriftCheck,
    embedding_drift,
    feedback_drift,
    is_positive,
    score_drift,
)
from fusionrec.monitoring.index import write_index
from fusionrec.monitoring.windows import (
    Windows,
    drop_expired_served,
    last_feedback_id,
    read_windows,
    retention_cutoff,
)
from fusionrec.schema import EVENT, ITEM_ID

if TYPE_CHECKING:
    from fusionrec.monitoring.store import FeedbackStore

logger = logging.getLogger(__name__)
REPORTS_DIR = "reports"
MIN_INTEREST_ROWS = 30


@dataclass
class ModelView:
    """What the monitor needs from a trained model: version, training popularity, item vectors."""

    version: str
    item_ids: list[str]
    popularity: np.ndarray  # (n_items,) training interaction counts
    vectors: np.ndarray  # (n_items, d) item vectors

    @property
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}


def served_version(meta: dict[str, Any], model_dir: Path) -> str:
    """The version string the service writes into `served.model_version` (fusionrec.inference's rule:
    meta version, else the folder name, plus "+trained_at" since a version alone repeats across retrains)."""
    version = str(meta.get("version") or model_dir.name)
    return f"{version}+{meta['trained_at']}" if meta.get("trained_at") else version


def load_model_view(model_dir: Path) -> ModelView:
    """Read the model folder written by `fusionrec train` (see docs/CONTRACTS.md)."""
    from fusionrec.models.recommender import Recommender

    rec = Recommender.load(model_dir)
    return ModelView(
        version=served_version(rec.meta or {}, Path(model_dir)),
        item_ids=list(rec.item_ids),
        popularity=np.asarray(rec.popularity(), dtype=np.float64),
        vectors=np.asarray(rec.item_vectors(), dtype=np.float32),
    )


def select_windows(feedback: pd.DataFrame, served: pd.DataFrame, version: str, cfg: MonitorConfig) -> Windows:
    """Split the store's rows into the reference and the current window (see the module doc)."""
    feedback = feedback.sort_values(["ts", "id"] if "id" in feedback.columns else ["ts"], kind="stable")
    deployed_at = None
    if version and len(served) and "model_version" in served.columns:
        mine = served.loc[served["model_version"].astype(str) == version, TS]
        if len(mine):
            deployed_at = float(mine.min())
    if deployed_at is not None:
        feedback = feedback[feedback[TS] >= deployed_at]
        served = served[served[TS] >= deployed_at]
    ref = feedback.iloc[: cfg.reference_window]
    rest = feedback.iloc[cfg.reference_window :]
    cur = rest.iloc[-cfg.current_window :] if len(rest) else rest
    empty = served.iloc[0:0]
    ts = served[TS] if len(served) else pd.Series(dtype=float)
    if len(ref):
        start = deployed_at if deployed_at is not None else min(float(ref[TS].min()), float(ts.min()) if len(ts) else np.inf)
        ref_served = served[(ts >= start) & (ts <= float(ref[TS].max()))]
    else:
        ref_served = empty
    if len(cur):
        # contiguous with the reference: impressions start where the reference ended
        start = float(ref[TS].max()) if len(rest) <= cfg.current_window else float(cur[TS].min())
        cur_served = served[(ts > start) & (ts <= float(cur[TS].max()))]
    else:
        cur_served = empty
    return Windows(ref, cur, ref_served, cur_served, deployed_at)


def _vectors(view: ModelView, item_ids: pd.Series) -> np.ndarray:
    idx = view.index
    rows = [idx[i] for i in item_ids.astype(str) if i in idx]
    return view.vectors[rows] if rows else np.zeros((0, view.vectors.shape[1]), dtype=np.float32)


def chosen_only(events: pd.DataFrame, served: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, served) without explored impressions and the events that answered one (same request
    and item); organic events (no request) stay. Frames without an `explored` column (a reference
    pinned before the column existed) are returned as they are."""
    if "explored" not in served.columns or not len(served):
        return events, served
    flags = served["explored"].astype(bool).to_numpy()
    if not flags.any():
        return events, served
    if "request_id" in served.columns and "request_id" in events.columns and len(events):
        explored = set(zip(served.loc[flags, "request_id"].astype(str), served.loc[flags, ITEM_ID].astype(str),
                           strict=True))
        answered = np.array([(r, i) in explored for r, i in zip(events["request_id"].astype(str),
                                                                 events[ITEM_ID].astype(str), strict=True)], dtype=bool)
        events = events[~answered]
    return events, served[~flags]


def run_checks(w: Windows, view: ModelView, cfg: MonitorConfig) -> dict[str, DriftCheck]:
    """Every drift check on the two windows (feedback, interest, new_items, scores)."""
    popularity = {item: float(p) for item, p in zip(view.item_ids, view.popularity, strict=True)}
    (ref_ev, ref_sv), (cur_ev, cur_sv) = chosen_only(w.ref_events, w.ref_served), chosen_only(w.cur_events, w.cur_served)
    checks = {"feedback": feedback_drift(ref_ev, cur_ev, ref_sv, cur_sv, popularity, cfg)}
    ref_pos = w.ref_events[is_positive(w.ref_events[EVENT])]
    cur_pos = w.cur_events[is_positive(w.cur_events[EVENT])]
    checks["interest"] = embedding_drift(
        "interest", _vectors(view, ref_pos[ITEM_ID]), _vectors(view, cur_pos[ITEM_ID]), cfg, MIN_INTEREST_ROWS
    )
    seen_now = pd.concat([w.cur_events[ITEM_ID], w.cur_served[ITEM_ID]]).astype(str).unique()
    new_ids = [i for i in seen_now if popularity.get(i, 0.0) == 0.0]
    unknown = [i for i in new_ids if i not in popularity]
    catalogue = view.vectors[view.popularity > 0]
    checks["new_items"] = embedding_drift(
        "new_items", catalogue, _vectors(view, pd.Series(new_ids, dtype=str)), cfg, cfg.min_new_items, seed=7
    )
    checks["new_items"].numbers.update({"new_items_current": len(new_ids), "unknown_to_model": len(unknown)})
    checks["scores"] = score_drift(ref_sv, cur_sv, cfg)
    return checks


def _summary(check: DriftCheck) -> str:
    n = check.numbers
    if check.name == "feedback":
        ctr = f"CTR {n['ctr_reference']} -> {n['ctr_current']}" if n.get("ctr_current") is not None else "no CTR"
        return f"{n['drifted']}/{len(n['columns'])} columns drifted; {ctr}"
    if "score" in n and n["score"] is not None:
        return f"score {n['score']:.3f} (threshold {n['threshold']}), drifted={n['drifted']}"
    return ""


def write_reports(checks: dict[str, DriftCheck], out_dir: Path) -> dict[str, dict[str, str]]:
    """Save each check's Evidently snapshot as HTML + JSON under out_dir/reports/."""
    reports: dict[str, dict[str, str]] = {}
    (out_dir / REPORTS_DIR).mkdir(parents=True, exist_ok=True)
    for name, check in checks.items():
        if not check.snapshots:
            reports[name] = {"summary": _summary(check), "skipped": check.skipped}
        for stem, snapshot in check.snapshots.items():
            html_rel, json_rel = f"{REPORTS_DIR}/{stem}.html", f"{REPORTS_DIR}/{stem}.json"
            snapshot.save_html(str(out_dir / html_rel))
            snapshot.save_json(str(out_dir / json_rel))
            reports[stem] = {"summary": _summary(check), "html": html_rel, "json": json_rel, "skipped": ""}
    return reports


def judge(
    w: Windows, view: ModelView, out_dir: Path, cfg: MonitorConfig, state_file: Path,
    numbers: dict[str, Any] | None = None,
) -> Decision:
    """Checks, reports, decision.json and index.html of one run's windows, into out_dir.

    Args:
        state_file: where the drift streak of `monitor.persistence` is kept between runs.
        numbers: more numbers for decision.json (e.g. the last feedback id, the retention).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(w.cur_events) < cfg.min_events:
        decision = insufficient(len(w.cur_events), cfg, view.version)
        reports: dict[str, dict[str, str]] = {}
    else:
        checks = run_checks(w, view, cfg)
        decision = decide(checks, cfg, view.version)
        reports = write_reports(checks, out_dir)
    decision = apply_persistence(decision, state_file, cfg)
    decision.numbers["windows"] = {
        "deployed_at": w.deployed_at,
        "reference_events": len(w.ref_events), "current_events": len(w.cur_events),
        "reference_impressions": len(w.ref_served), "current_impressions": len(w.cur_served),
    }
    for key, value in (numbers or {}).items():
        if isinstance(value, dict) and isinstance(decision.numbers.get(key), dict):
            decision.numbers[key].update(value)
        else:
            decision.numbers[key] = value
    write_decision(decision, out_dir)
    write_index(out_dir, decision, reports)
    return decision


def monitor_frames(
    feedback: pd.DataFrame, served: pd.DataFrame, view: ModelView, out_dir: Path, cfg: MonitorConfig,
    state_file: Path | None = None,
) -> Decision:
    """The monitor on whole store tables held in memory: windows, checks, reports, decision.json, index.html.

    Args:
        state_file: where the drift streak of `monitor.persistence` is kept between runs
            (default: out_dir/drift_streak.json, right when every run writes to the same out_dir).
    """
    w = select_windows(feedback, served, view.version, cfg)
    last_id = int(feedback["id"].max()) if len(feedback) and "id" in feedback.columns else None
    return judge(w, view, out_dir, cfg, state_file or out_dir / STREAK_FILE,
                 {"windows": {"last_feedback_id": last_id}})


def monitor_store(store: FeedbackStore, view: ModelView, root: Path, cfg: MonitorConfig,
                  now: float | None = None) -> tuple[Decision, Path]:
    """One monitor run on the store, reading only its windows, into root/runs/<UTC start>/.

    Then impressions older than `monitor.served_retention_days` are deleted, the run's line is
    added to root/history.jsonl and root/index.html (the trend and every run) is redrawn.

    Returns:
        (decision, the run's folder).
    """
    now = time.time() if now is None else now
    root = Path(root)
    state = root / history.STATE_DIR
    w, marks = read_windows(store.engine, view.version, cfg, state)
    cutoff = retention_cutoff(now, w, marks, cfg)
    dropped = drop_expired_served(store.engine, cutoff) if cutoff is not None else 0
    run_dir = history.run_folder(root, now)
    numbers = {"windows": {"last_feedback_id": last_feedback_id(store.engine)},
               "retention": {"served_dropped": dropped, "served_cutoff": cutoff}}
    decision = judge(w, view, run_dir, cfg, state / STREAK_FILE, numbers)
    history.append(root, history.entry(root, run_dir, decision, now))
    history.prune_html(root, now, cfg.report_html_days)
    history.write_page(root)
    return decision, run_dir


def run_monitor(store_url: str, model_dir: Path, out_dir: Path, cfg: MonitorConfig) -> StepResult:
    """The `monitor` step: compare the feedback windows of the store, decide whether to retrain.

    Args:
        store_url: the feedback store (SQLAlchemy URL or an SQLite file path).
        model_dir: the model the service runs (training popularity, item vectors, version).
        out_dir: the reports folder: this run goes to out_dir/runs/<UTC start>/ (decision.json,
            index.html, reports/*.html|json); out_dir/index.html shows every run (history.py).

    Returns:
        StepResult with metrics (retrain 0/1, ctr_reference, ctr_current, drift scores) and outputs
        (decision, run: the run's folder, report: its page, index: the history page).
    """
    from fusionrec.monitoring.store import FeedbackStore

    view = load_model_view(Path(model_dir))
    with FeedbackStore(store_url) as store:
        decision, run_dir = monitor_store(store, view, Path(out_dir), cfg)
    metrics: dict[str, float | int] = {"retrain": int(decision.retrain), "n_reasons": len(decision.reasons)}
    fb = decision.numbers.get("feedback", {})
    for key in ("ctr_reference", "ctr_current", "share"):
        if fb.get(key) is not None:
            metrics["feedback_drift_share" if key == "share" else key] = float(fb[key])
    for name in ("interest", "new_items", "scores"):
        score = decision.numbers.get(name, {}).get("score")
        if score is not None:
            metrics[f"{name}_drift_score"] = float(score)
    metrics["served_dropped"] = int(decision.numbers["retention"]["served_dropped"])
    logger.info("monitor: retrain=%s reasons=%s", decision.retrain, decision.reasons)
    return StepResult(metrics=metrics, outputs={"decision": run_dir / "decision.json", "run": run_dir,
                                                "report": run_dir / "index.html", "index": Path(out_dir) / "index.html"})
