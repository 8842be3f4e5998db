"""Champion/challenger gate: promote a new model only if it is not worse on the same holdout.

The challenger may be worse than the champion by at most `promote_tolerance` (absolute) on
`promote_metric` and on every `guard_metrics` entry. Two metric dicts that carry a `holdout`
fingerprint must carry the same one: numbers from different test sets are not comparable, so
the gate refuses rather than guessing (re-evaluate the champion on the new holdout first).

`run_evaluate` writes the verdict to promotion.json; `load_decision` reads it back for the
`package` step, which refuses a rejected model (fusionrec.packaging.check_promotion).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fusionrec.config import EvaluateConfig
from fusionrec.io import read_json

HOLDOUT = "holdout"  # key of the holdout fingerprint in a metric dict
METRICS_FILE = "metrics.json"
RUN_FILE = "evaluation.json"
PROMOTION_FILE = "promotion.json"  # the verdict, next to metrics.json


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

    def summary(self) -> str:
        """The verdict in one line with its numbers: challenger vs champion, tolerance, deltas, reason."""
        chal = "n/a" if self.challenger is None else f"{self.challenger:.4f}"
        champ = "none" if self.champion is None else f"{self.champion:.4f}"
        deltas = ", ".join(f"{m} {d:+.4f}" for m, d in self.deltas.items())
        return (f"challenger {self.metric} {chal} vs champion {champ}, tolerance {self.tolerance}"
                + (f" (challenger - champion: {deltas})" if deltas else "") + f"; {self.reason}")


def load_decision(path: Path | str) -> Decision:
    """The gate's verdict that `run_evaluate` wrote to promotion.json.

    Raises:
        FileNotFoundError: there is no such file (evaluate writes it only when it scored a model).
        ValueError: the file is not a verdict (not JSON, or without promote/metric/tolerance...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `fusionrec evaluate` writes the promotion gate's verdict "
                                "there when it evaluates a model; run it first")
    try:
        data = read_json(path)
    except ValueError as exc:  # json.JSONDecodeError
        raise ValueError(f"{path}: not JSON ({exc}); it is written by `fusionrec evaluate`") from None
    required = [f.name for f in fields(Decision) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if not isinstance(data, dict) or name not in data]
    if missing or not isinstance(data.get("promote"), bool):
        raise ValueError(f"{path}: not a promotion verdict (missing or invalid: {missing or ['promote']}); "
                         "it is written by `fusionrec evaluate`")
    known = {f.name for f in fields(Decision)}
    return Decision(**{k: v for k, v in data.items() if k in known})


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
