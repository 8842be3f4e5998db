"""The retrain decision: drift checks in, `decision.json` out (retrain true/false, reasons, numbers).

Each reason is one named signal compared with its threshold from `MonitorConfig`; only the
signals listed in `cfg.retrain_on` can trigger retraining (the others are still reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusionrec.config import MonitorConfig
from fusionrec.io import read_json, write_json
from fusionrec.monitoring.drift import DriftCheck

DECISION_FILE = "decision.json"
STREAK_FILE = "drift_streak.json"  # consecutive runs that flagged retraining, per model version
REASONS = ("feedback_drift", "ctr_drop", "interest_drift", "new_item_drift", "score_drift")


@dataclass
class Decision:
    """What the monitor concluded: retrain or not, why, and the numbers behind it."""

    retrain: bool
    reasons: list[str] = field(default_factory=list)  # signals that fired and may trigger retraining
    signals: dict[str, bool] = field(default_factory=dict)  # every signal, fired or not
    status: str = "ok"  # "ok" | "insufficient_data"
    detail: dict[str, str] = field(default_factory=dict)  # one sentence per fired signal
    numbers: dict[str, Any] = field(default_factory=dict)
    model_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def insufficient(n_current: int, cfg: MonitorConfig, model_version: str = "") -> Decision:
    """The decision when the current window is too small to judge (never retrain on noise)."""
    return Decision(
        retrain=False,
        status="insufficient_data",
        detail={"insufficient_data": f"{n_current} current-window events < min_events={cfg.min_events}"},
        numbers={"events_current": n_current, "min_events": cfg.min_events},
        model_version=model_version,
    )


def decide(checks: dict[str, DriftCheck], cfg: MonitorConfig, model_version: str = "") -> Decision:
    """Turn drift checks into a decision.

    Args:
        checks: by name; "feedback" (feedback_drift / ctr_drop), "interest", "new_items", "scores".
        cfg: thresholds and the signals allowed to trigger retraining (`retrain_on`).

    Returns:
        Decision with retrain = any fired signal that is in `cfg.retrain_on`.
    """
    signals: dict[str, bool] = {}
    detail: dict[str, str] = {}
    fb = checks.get("feedback")
    if fb is not None and not fb.skipped:
        n = fb.numbers
        signals["feedback_drift"] = n["share"] >= cfg.drift_share and n["drifted"] > 0
        if signals["feedback_drift"]:
            cols = [c for c, v in n["columns"].items() if v["drifted"]]
            detail["feedback_drift"] = f"{n['share']:.2f} of feedback columns drifted (>= {cfg.drift_share}): {', '.join(cols)}"
        change = n.get("ctr_change")
        signals["ctr_drop"] = change is not None and change <= -cfg.ctr_drop
        if signals["ctr_drop"]:
            detail["ctr_drop"] = (
                f"click-through fell from {n['ctr_reference']:.4f} to {n['ctr_current']:.4f} "
                f"({change:+.1%}, limit -{cfg.ctr_drop:.0%})"
            )
    for name, signal in (("interest", "interest_drift"), ("new_items", "new_item_drift")):
        check = checks.get(name)
        if check is not None and not check.skipped:
            signals[signal] = bool(check.numbers["drifted"])
            if signals[signal]:
                detail[signal] = (
                    f"{name} embeddings drifted: ROC AUC {check.numbers['score']:.3f} > {cfg.embedding_drift_threshold}"
                )
    scores = checks.get("scores")
    if scores is not None and not scores.skipped:
        signals["score_drift"] = bool(scores.numbers["drifted"])
        if signals["score_drift"]:
            detail["score_drift"] = (
                f"served scores drifted ({scores.numbers['method']} {scores.numbers['score']:.3f}, "
                f"threshold {scores.numbers['threshold']})"
            )
    reasons = [s for s in REASONS if signals.get(s) and s in cfg.retrain_on]
    numbers = {name: c.numbers for name, c in checks.items()}
    numbers["skipped"] = {name: c.skipped for name, c in checks.items() if c.skipped}
    return Decision(
        retrain=bool(reasons), reasons=reasons, signals=signals, detail=detail, numbers=numbers,
        model_version=model_version,
    )


def apply_persistence(decision: Decision, state_file: Path, cfg: MonitorConfig) -> Decision:
    """Retrain only once drift has been flagged in `cfg.persistence` consecutive runs.

    A one-off blip is not a trend, and a challenger needs feedback from the new regime to learn
    it: retraining on the first sign of drift trains on little of it. The streak lives in
    `state_file`, counts runs on the same model version, resets on a run without drift and on a
    new model; a run with too little data leaves it as it was.
    """
    state = read_json(state_file) if state_file.is_file() else {}
    streak = int(state.get("streak", 0)) if state.get("model_version") == decision.model_version else 0
    if decision.status == "ok":
        streak = streak + 1 if decision.reasons else 0
    write_json(state_file, {"model_version": decision.model_version, "streak": streak})
    decision.numbers["persistence"] = {"streak": streak, "needed": cfg.persistence}
    if decision.retrain and streak < cfg.persistence:
        decision.retrain = False
        decision.detail["persistence"] = (f"drift flagged in {streak} consecutive run(s); retraining waits for "
                                          f"{cfg.persistence} (monitor.persistence)")
    return decision


def write_decision(decision: Decision, out_dir: Path) -> Path:
    """Write `decision.json` into out_dir (atomically)."""
    return write_json(out_dir / DECISION_FILE, decision.to_dict())
