"""Drift checks on the feedback a service receives, written as Evidently (0.7 API) reports.

Three families, each a pure function of DataFrames / arrays that returns its numbers and
an Evidently snapshot (saved as HTML + JSON by `monitor.py`):

- feedback drift: per-event columns (event type, served position of the event, training
  popularity of the interacted item, the user's activity in the window, served score)
  compared between the reference and the current window with `DataDriftPreset`;
  click-through overall and by served position from the served log;
- embedding drift: vectors of the items users interact with (interest drift) and of new
  items against the training catalogue, scored with Evidently's model-based embedding drift
  method (a classifier's ROC AUC at telling the two sets apart) and shown in the report as a
  column drift over their principal components (Evidently's t-SNE view costs minutes on 2 cores);
- served-score drift: the scores the model served, reference against current.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import MonitorConfig
from fusionrec.schema import EVENT, ITEM_ID, NEGATIVE_EVENTS, USER_ID

TS = "ts"  # timestamp column of the feedback store tables (unix seconds)

EVENT_COLUMNS_CAT = ["event"]
EVENT_COLUMNS_NUM = ["position", "item_popularity"]
USER_COLUMNS_NUM = ["activity", "positive_share", "novelty"]


@dataclass
class DriftCheck:
    """One drift check: its numbers (JSON-ready) and the Evidently snapshot, if one was run."""

    name: str
    numbers: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)  # report name -> evidently Snapshot
    skipped: str = ""  # why the check did not run ("" when it ran)


def is_positive(events: pd.Series) -> pd.Series:
    """True for events that count as a click / interaction (everything but the negative ones)."""
    return ~events.astype(str).str.lower().isin(NEGATIVE_EVENTS)


def feedback_frame(events: pd.DataFrame, popularity: dict[str, float]) -> pd.DataFrame:
    """Turn feedback events into the per-event columns that the feedback drift report compares.

    Args:
        events: feedback rows (user_id, item_id, event, position, score).
        popularity: training interaction count per item id (absent = 0, a new item).

    Returns:
        One row per event: event, position (served rank, NaN when unknown), item_popularity
        (log1p of the training count).
    """
    pop = events[ITEM_ID].astype(str).map(popularity).fillna(0.0).astype(float)
    return pd.DataFrame(
        {
            "event": events[EVENT].astype(str).values,
            "position": pd.to_numeric(events["position"], errors="coerce").astype(float).values,
            "item_popularity": np.log1p(pop.values),
        }
    )


def user_frame(events: pd.DataFrame) -> pd.DataFrame:
    """User activity in one window, one row per user (events of one user are not independent,
    so they are compared per user). Counts are relative to the window, so windows of different
    lengths compare: activity (the user's share of the window's events x active users; mean 1),
    positive_share, novelty (distinct items / events)."""
    grouped = events.assign(_pos=is_positive(events[EVENT])).groupby(USER_ID)
    size = grouped.size().astype(float)
    return pd.DataFrame(
        {
            "activity": size / max(len(events), 1) * len(size),
            "positive_share": grouped["_pos"].mean().astype(float),
            "novelty": grouped[ITEM_ID].nunique().astype(float) / size,
        }
    ).reset_index(drop=True)


def ctr_by_position(events: pd.DataFrame, served: pd.DataFrame) -> pd.DataFrame:
    """Click-through per served position: positive events at a position / impressions there.

    Args:
        events: feedback rows of one window (with `position`; rows without one are ignored).
        served: served rows of the same window (one row per impression, with `position`).

    Returns:
        position, impressions, clicks, ctr (sorted by position).
    """
    imps = served.groupby("position").size().rename("impressions")
    pos = events[is_positive(events[EVENT])].dropna(subset=["position"])
    clicks = pos.groupby(pos["position"].astype(int)).size().rename("clicks")
    table = pd.concat([imps, clicks], axis=1).fillna(0).astype(int)
    table["ctr"] = table["clicks"] / table["impressions"].where(table["impressions"] > 0)
    return table.rename_axis("position").reset_index().sort_values("position")


def click_through(events: pd.DataFrame, served: pd.DataFrame) -> float | None:
    """Positive events per impression in one window; None without impressions."""
    if len(served) == 0:
        return None
    return float(is_positive(events[EVENT]).sum()) / float(len(served))


def _drift_tests(snapshot: Any) -> dict[str, dict[str, Any]]:
    """Per-column {score, method, threshold, drifted} read from an Evidently snapshot."""
    data = snapshot.dict()
    values = {m["id"]: m.get("value") for m in data["metrics"]}
    out: dict[str, dict[str, Any]] = {}
    for test in data.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift"):
            out[params["column"]] = {
                "score": values.get(test["metric_config"]["metric_id"]),
                "method": params.get("method"),
                "threshold": params.get("threshold"),
                "drifted": test.get("status") == "FAIL",
            }
    return out


def column_drift(
    reference: pd.DataFrame, current: pd.DataFrame, cat: list[str], num: list[str], cfg: MonitorConfig
) -> tuple[Any, dict[str, Any]]:
    """Evidently `DataDriftPreset` over the given columns; columns empty on either side are left out.

    Returns:
        (snapshot, numbers) with numbers = {"columns": {name: {score, method, threshold, drifted}},
        "drifted": count, "share": drifted share, "drift_share_threshold"}.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    usable = [c for c in cat + num if reference[c].notna().any() and current[c].notna().any()]
    cat_cols = [c for c in cat if c in usable]
    num_cols = [c for c in num if c in usable]
    definition = DataDefinition(categorical_columns=cat_cols, numerical_columns=num_cols)
    preset = DataDriftPreset(
        columns=usable,
        drift_share=cfg.drift_share,
        method=cfg.stattest or None,
        threshold=cfg.stattest_threshold,
    )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's chi-square on a category absent on one side
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[usable].reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference[usable].reset_index(drop=True), data_definition=definition),
        )
    columns = _drift_tests(snapshot)
    drifted = sum(1 for c in columns.values() if c["drifted"])
    return snapshot, {
        "columns": columns,
        "drifted": drifted,
        "share": drifted / len(columns) if columns else 0.0,
        "drift_share_threshold": cfg.drift_share,
    }


def feedback_drift(
    ref_events: pd.DataFrame,
    cur_events: pd.DataFrame,
    ref_served: pd.DataFrame,
    cur_served: pd.DataFrame,
    popularity: dict[str, float],
    cfg: MonitorConfig,
) -> DriftCheck:
    """Feedback drift: per event (event mix, served position, training popularity of the item),
    per user (activity), and click-through overall and by served position.

    The drifted share counts event and user columns together; two reports: "events", "users".
    """
    ref, cur = feedback_frame(ref_events, popularity), feedback_frame(cur_events, popularity)
    ev_snap, ev_numbers = column_drift(ref, cur, EVENT_COLUMNS_CAT, EVENT_COLUMNS_NUM, cfg)
    us_snap, us_numbers = column_drift(user_frame(ref_events), user_frame(cur_events), [], USER_COLUMNS_NUM, cfg)
    columns = {**ev_numbers["columns"], **{f"user_{k}": v for k, v in us_numbers["columns"].items()}}
    drifted = sum(1 for c in columns.values() if c["drifted"])
    numbers: dict[str, Any] = {
        "columns": columns,
        "drifted": drifted,
        "share": drifted / len(columns) if columns else 0.0,
        "drift_share_threshold": cfg.drift_share,
    }
    ctr_ref, ctr_cur = click_through(ref_events, ref_served), click_through(cur_events, cur_served)
    numbers["ctr_reference"], numbers["ctr_current"] = ctr_ref, ctr_cur
    numbers["ctr_change"] = (ctr_cur - ctr_ref) / ctr_ref if ctr_ref and ctr_cur is not None else None
    numbers["event_mix_reference"] = ref["event"].value_counts(normalize=True).round(4).to_dict()
    numbers["event_mix_current"] = cur["event"].value_counts(normalize=True).round(4).to_dict()
    for name, ev, sv in (("reference", ref_events, ref_served), ("current", cur_events, cur_served)):
        table = ctr_by_position(ev, sv) if len(sv) else pd.DataFrame(columns=["position", "ctr"])
        numbers[f"ctr_by_position_{name}"] = {
            int(p): (None if pd.isna(c) else round(float(c), 5))
            for p, c in zip(table["position"], table["ctr"], strict=True)
        }
    numbers["events_reference"], numbers["events_current"] = len(ref_events), len(cur_events)
    return DriftCheck("feedback", numbers, {"feedback_events": ev_snap, "feedback_users": us_snap})


def _sample(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(vectors) <= n:
        return vectors
    return vectors[np.random.default_rng(seed).choice(len(vectors), n, replace=False)]


def embedding_drift(
    name: str, reference: np.ndarray, current: np.ndarray, cfg: MonitorConfig, min_rows: int, seed: int = 0
) -> DriftCheck:
    """Embedding drift of `current` vectors against `reference` vectors.

    The score is Evidently's `ModelDriftMethod` (ROC AUC of a classifier telling the two sets
    apart; 0.5 = indistinguishable), drifted above `cfg.embedding_drift_threshold`. The report
    shows the drift of the first principal components, column by column.

    Args:
        name: check name, e.g. "interest" or "new_items".
        reference, current: (n, d) float arrays.
        min_rows: fewer rows on either side skips the check (with the reason).
    """
    from evidently.metrics.embeddings import ModelDriftMethod

    if len(reference) < min_rows or len(current) < min_rows:
        return DriftCheck(name, {"reference_rows": len(reference), "current_rows": len(current)},
                          skipped=f"fewer than {min_rows} vectors on one side")
    ref = _sample(np.asarray(reference, dtype=np.float64), cfg.embedding_sample, seed)
    cur = _sample(np.asarray(current, dtype=np.float64), cfg.embedding_sample, seed + 1)
    cols = [f"e{i}" for i in range(ref.shape[1])]
    method = ModelDriftMethod(threshold=cfg.embedding_drift_threshold)
    score, drifted, _ = method(pd.DataFrame(cur, columns=cols), pd.DataFrame(ref, columns=cols))
    # principal components of the reference, for a per-component view in the report
    n_comp = int(min(8, ref.shape[1], len(ref) - 1))
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    pcs = [f"pc{i + 1}" for i in range(n_comp)]
    ref_pc = pd.DataFrame((ref - mean) @ vt[:n_comp].T, columns=pcs)  # (n, d) x (d, c) -> (n, c)
    cur_pc = pd.DataFrame((cur - mean) @ vt[:n_comp].T, columns=pcs)
    snapshot, pc_numbers = column_drift(ref_pc, cur_pc, [], pcs, cfg)
    numbers = {
        "method": "evidently ModelDriftMethod (ROC AUC)",
        "score": float(score),
        "threshold": cfg.embedding_drift_threshold,
        "drifted": bool(drifted),
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "centroid_cosine_distance": _cosine_distance(ref.mean(axis=0), cur.mean(axis=0)),
        "principal_components": pc_numbers,
    }
    return DriftCheck(name, numbers, {name: snapshot})


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(1.0 - a @ b / denom) if denom > 0 else 0.0


def score_drift(ref_served: pd.DataFrame, cur_served: pd.DataFrame, cfg: MonitorConfig) -> DriftCheck:
    """Drift of the scores the service served (reference window against current)."""
    ref = pd.DataFrame({"score": pd.to_numeric(ref_served["score"], errors="coerce")})
    cur = pd.DataFrame({"score": pd.to_numeric(cur_served["score"], errors="coerce")})
    if ref["score"].notna().sum() < 2 or cur["score"].notna().sum() < 2:
        return DriftCheck("scores", {"reference_rows": len(ref), "current_rows": len(cur)},
                          skipped="no served scores in one window")
    snapshot, numbers = column_drift(ref, cur, [], ["score"], cfg)
    col = numbers["columns"].get("score", {})
    return DriftCheck("scores", {
        "score": col.get("score"), "method": col.get("method"), "threshold": col.get("threshold"),
        "drifted": bool(col.get("drifted", False)),
        "mean_reference": float(ref["score"].mean()), "mean_current": float(cur["score"].mean()),
    }, {"scores": snapshot})


def window_bounds(events: pd.DataFrame) -> tuple[float, float]:
    """(first, last) timestamp of a window's events."""
    ts = pd.to_numeric(events[TS])
    return float(ts.min()), float(ts.max())
