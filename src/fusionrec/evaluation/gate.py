"""Champion/challenger gate: promote a new model only if it is not worse on the same holdout.

The challenger may be worse than the champion by at most `promote_tolerance` (absolute) on
`promote_metric` and on every `guard_metrics` entry. Two metric dicts that carry a `holdout`
fingerprint must carry the same one: numbers from different test sets are not comparable, so
the gate refuses rather than guessing (re-evaluate the champion on the new holdout first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusionrec.config import EvaluateConfig
from fusionrec.io import read_json

HOLDOUT = "holdout"  # key of the holdout fingerprint in a metric dict
METRICS_FILE = "metrics.json"
RUN_FILE = "evaluation.json"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, written to promotion.json."""

    promote: bool
    reason: str
    metric: str
    challenger: float | None
    champion: float | None
    tolerance: float
    deltas: dict[str, float] = field(default_factory=dict)  # challenger - champion per checked metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(metrics: dict[str, Any], name: str, who: str) -> float:
    if name not in metrics:
        known = ", ".join(sorted(k for k in metrics if k != HOLDOUT))
        raise KeyError(f"{who} metrics have no {name!r} (known: {known}); set evaluate.promote_metric")
    return float(metrics[name])


def decide_promotion(challenger: dict[str, Any], champion: dict[str, Any] | None, cfg: EvaluateConfig) -> Decision:
    """Decide whether the challenger replaces the champion.

    Args:
        challenger: flat metrics of the new model ("ndcg@20": ..., optionally "holdout": fingerprint).
        champion: the same for the serving model, or None when nothing is serving yet.
        cfg: promote_metric, promote_tolerance and guard_metrics.
    Returns:
        Decision(promote, reason, ...); the reason is one sentence a person can act on.
    """
    metric, tol = cfg.promote_metric, cfg.promote_tolerance
    value = _value(challenger, metric, "challenger")
    if champion is None:
        return Decision(True, "no champion yet: the first model is promoted", metric, value, None, tol)
    ours, theirs = challenger.get(HOLDOUT), champion.get(HOLDOUT)
    if ours is not None and theirs is not None and ours != theirs:
        return Decision(False, f"champion was evaluated on another holdout ({theirs} != {ours}); "
                        "re-evaluate it on this holdout before comparing", metric, value, None, tol)
    names = [metric] + [m for m in cfg.guard_metrics if m != metric]
    deltas = {m: _value(challenger, m, "challenger") - _value(champion, m, "champion") for m in names}
    champ = float(champion[metric])
    worse = [m for m, d in deltas.items() if d < -tol]
    if worse:
        detail = ", ".join(f"{m} {deltas[m]:+.4f}" for m in worse)
        return Decision(False, f"challenger is worse than the champion beyond the tolerance {tol}: {detail}",
                        metric, value, champ, tol, deltas)
    verdict = "better than" if deltas[metric] > 0 else "within the tolerance of"
    return Decision(True, f"challenger {metric} {value:.4f} is {verdict} the champion's {champ:.4f}",
                    metric, value, champ, tol, deltas)


def load_champion(path: Path | str) -> dict[str, Any]:
    """Flat metrics of a previous evaluation (its output folder or its metrics.json), with its holdout.

    Raises:
        FileNotFoundError: the folder holds no metrics.json, or that file has no model section.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    metrics_path = folder / METRICS_FILE if path.is_dir() else path
    if not metrics_path.is_file():
        raise FileNotFoundError(f"champion metrics not found: {metrics_path} (point evaluate.champion at an "
                                "earlier `fusionrec evaluate` output folder)")
    data = read_json(metrics_path)
    if "model" not in data:
        raise FileNotFoundError(f"{metrics_path}: no 'model' section; it was not written by `fusionrec evaluate`")
    flat = dict(data["model"]["test"])
    run = folder / RUN_FILE
    if run.is_file():
        flat[HOLDOUT] = read_json(run).get(HOLDOUT)
    return flat
