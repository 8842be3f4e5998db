"""The retrain decision: drift checks in, `decision.json` out (retrain true/false, reasons, numbers).

Each reason is one named signal compared with its threshold from `MonitorConfig`; only the
signals listed in `cfg.retrain_on` can trigger retraining (the others are still reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusionrec.config import MonitorConfig
from fusionrec.io import write_json
from fusionrec.monitoring.drift import DriftCheck

DECISION_FILE = "decision.json"
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


def write_decision(decision: Decision, out_dir: Path) -> Path:
    """Write `decision.json` into out_dir (atomically)."""
    return write_json(out_dir / DECISION_FILE, decision.to_dict())
