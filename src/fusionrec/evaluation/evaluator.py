"""The evaluate step: the trained model and every baseline, ranked the same way on one holdout.

Layers (STYLE.md): `Holdout` + `evaluate_scorer` + `fit_baselines` are in-memory; `run_evaluate`
reads the folders and writes metrics.json (DVC metrics), comparison.md, plots/*.png,
evaluation.json (run facts: holdout fingerprint, timings) and promotion.json (the gate).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp

from fusionrec.config import EvaluateConfig
from fusionrec.evaluation.gate import HOLDOUT, METRICS_FILE, RUN_FILE, decide_promotion, load_champion
from fusionrec.evaluation.metrics import evaluate_scores
from fusionrec.io import StepResult, write_json

if TYPE_CHECKING:
    from fusionrec.features.store import FeatureMatrix
    from fusionrec.models.baselines import Baseline

log = logging.getLogger(__name__)
MODEL = "model"  # name of the trained model in reports and plots


class Scorer(Protocol):
    """Anything the evaluator ranks: the Recommender and every baseline."""

    def score_users(self, user_idx: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Holdout:
    """What a model is trained on (train), what is never recommended (train + valid) and the test set."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    cold_items: np.ndarray  # item_idx held out of training (cold-items split), else empty

    def fingerprint(self) -> str:
        """A short hash of the test and excluded sets: equal fingerprints mean comparable numbers."""
        h = hashlib.sha256()
        for m in (self.train, self.valid, self.test):
            h.update(np.asarray(m.shape, np.int64).tobytes())
            h.update(m.indptr.astype(np.int64).tobytes())
            h.update(m.indices.astype(np.int64).tobytes())
        h.update(np.asarray(self.cold_items, np.int64).tobytes())
        return h.hexdigest()[:16]


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the activity buckets cut at edges, e.g. [20, 50] -> ["<20", "20-49", "50+"]."""
    edges = sorted(edges)
    if not edges:
        return ["all"]
    labels = [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return labels + [f"{edges[-1]}+"]


def _bucket_metrics(result: dict[str, Any], train: sp.csr_matrix, edges: Sequence[int]) -> dict[str, dict]:
    """Mean per-user metrics within each bucket of users' train-interaction counts."""
    users, per_user = result["users"], result["per_user"]
    activity = np.diff(train.indptr)[users]
    which = np.searchsorted(np.asarray(sorted(edges)), activity, side="right")  # bucket index per user
    out: dict[str, dict] = {}
    for b, label in enumerate(bucket_labels(edges)):
        sel = which == b
        out[label] = {name: float(v[sel].mean()) if sel.any() else 0.0 for name, v in per_user.items()}
        out[label]["n_users"] = int(sel.sum())
    return out


def evaluate_scorer(scorer: Scorer, holdout: Holdout, cfg: EvaluateConfig,
                    ks: Sequence[int] | None = None) -> dict[str, Any]:
    """All metrics of one scorer on a holdout.

    Returns:
        {"test": {metric: value}, "buckets": {label: {...}}, "cold": {...} (cold-items split only)}.
        Test: full ranking over all items minus the user's train and valid items. Cold: ranking
        only among the cold items, against the test interactions with cold items.
    """
    ks = list(ks or cfg.ks)
    full = evaluate_scores(scorer.score_users, holdout.train, holdout.test, ks=ks, exclude=[holdout.valid],
                           batch_size=cfg.batch_size, per_user=True)
    out: dict[str, Any] = {"test": {k: v for k, v in full.items() if k not in ("users", "per_user")}}
    out["buckets"] = _bucket_metrics(full, holdout.train, cfg.activity_buckets)
    if len(holdout.cold_items):
        out["cold"] = evaluate_scores(scorer.score_users, holdout.train, holdout.test, ks=ks,
                                      exclude=[holdout.valid], batch_size=cfg.batch_size,
                                      candidates=holdout.cold_items)
    return out


def fit_baselines(cfg: EvaluateConfig, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None
                  ) -> tuple[dict[str, Baseline], dict[str, float]]:
    """Fit every configured baseline; a content baseline without features, or one whose dense n x n
    matrix does not fit a catalogue this large (Baseline.max_items), is skipped with a warning.
    A trained baseline stops past evaluate.baseline_budget_s (its own `budget_s` in
    baseline_params wins), with a warning and its `epochs_run` (see `baseline_training`).

    Returns:
        ({name: fitted baseline}, {name: fit seconds}).
    """
    from fusionrec.models.baselines import make_baseline

    fitted: dict[str, Baseline] = {}
    seconds: dict[str, float] = {}
    for name in cfg.baselines:
        model = make_baseline(name, **cfg.baseline_params.get(name, {}))
        if model.needs_features and not features:
            log.warning("baseline %s skipped: it needs item features and none were given", name)
            continue
        if model.max_items is not None and train.shape[1] > model.max_items:
            log.warning("baseline %s skipped: %d items is more than its dense item x item matrix allows (%d); "
                        "remove it from evaluate.baselines", name, train.shape[1], model.max_items)
            continue
        if hasattr(model, "budget_s") and "budget_s" not in cfg.baseline_params.get(name, {}):
            model.budget_s = cfg.baseline_budget_s
        start = time.perf_counter()
        fitted[name] = model.fit(train, features)
        seconds[name] = time.perf_counter() - start
        log.info("baseline %s fitted in %.1fs", name, seconds[name])
        row = baseline_training({name: fitted[name]}).get(name)
        if row and row["cut"]:
            log.warning("baseline %s stopped by its %.0f s budget after %.2f of %d epochs: its metrics are those "
                        "of an under-trained model (evaluate.baseline_budget_s)", name, row["budget_s"],
                        row["epochs_run"], row["epochs"])
    return fitted, seconds


def baseline_training(fitted: Mapping[str, Baseline]) -> dict[str, dict[str, Any]]:
    """For each trained baseline: epochs asked, epochs run (a fraction when the budget cut it), cut."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in fitted.items():
        run = getattr(model, "epochs_run", None)
        if run is not None:
            epochs = int(getattr(model, "epochs", 0))
            out[name] = {"epochs": epochs, "epochs_run": round(float(run), 3), "cut": float(run) < epochs,
                         "budget_s": float(getattr(model, "budget_s", 0.0))}
    return out


def evaluate_all(scorers: Mapping[str, Scorer], holdout: Holdout, cfg: EvaluateConfig
                 ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Evaluate every scorer at cfg.ks, and its NDCG/recall curve at cfg.plot_ks (for the plots)."""
    ks = sorted(set(cfg.ks) | set(cfg.plot_ks))
    results, curves = {}, {}
    for name, scorer in scorers.items():
        res = evaluate_scorer(scorer, holdout, cfg, ks=ks)
        curves[name] = {k: v for k, v in res["test"].items() if "@" in k}
        results[name] = _keep_ks(res, cfg.ks)
    return results, curves


def _keep_ks(res: dict[str, Any], ks: Sequence[int]) -> dict[str, Any]:
    """Drop the plot-only cut-offs from a nested result."""
    wanted = {str(k) for k in ks}

    def keep(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if "@" not in k or k.split("@")[1] in wanted}

    return {part: ({b: keep(v) for b, v in val.items()} if part == "buckets" else keep(val))
            for part, val in res.items()}


def load_holdout(ingested_dir: Path, split_dir: Path) -> Holdout:
    """Read the ingested folder and a split folder (ours or external) into sparse matrices."""
    from fusionrec.data.loading import load_ingested, load_split

    split = load_split(split_dir, load_ingested(ingested_dir))
    return Holdout(split.matrix("train"), split.matrix("valid"), split.matrix("test"), split.cold_items)


def load_model(model_dir: Path, n_users: int, n_items: int) -> Scorer:
    """Load the trained Recommender and check it scores the ingested catalogue and users."""
    from fusionrec.models.recommender import Recommender

    model = Recommender.load(model_dir)
    if model.n_items < n_items or model.n_users < n_users:
        raise ValueError(f"{model_dir}: the model knows {model.n_users} users x {model.n_items} items, the "
                         f"ingested data has {n_users} x {n_items}; train it on this ingested folder")
    if model.n_items > n_items:  # items added after training: rank only the catalogue's items
        return _Truncated(model, n_items)
    return model


class _Truncated:
    """A scorer restricted to the first n_items columns."""

    def __init__(self, scorer: Scorer, n_items: int) -> None:
        self.scorer, self.n_items = scorer, n_items

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.scorer.score_users(user_idx)[:, : self.n_items]


def run_evaluate(ingested_dir: Path, features_dir: Path | None, split_dir: Path, model_dir: Path | None,
                 out_dir: Path, cfg: EvaluateConfig, champion_metrics: dict[str, Any] | None = None) -> StepResult:
    """Evaluate the trained model (if any) and the baselines on the split's test set; write the reports.

    Args:
        champion_metrics: the serving model's flat test metrics with their holdout fingerprint
            (e.g. a kfp run parameter); when absent, `cfg.champion` (an earlier evaluate folder) is
            the champion, or there is none. The verdict goes to promotion.json.
    Returns:
        StepResult whose metrics are the model's test metrics (or the best baseline's when no model).
    """
    from fusionrec.evaluation.report import write_reports

    holdout = load_holdout(Path(ingested_dir), Path(split_dir))
    features = _load_features(features_dir)
    baselines, fit_seconds = fit_baselines(cfg, holdout.train, features)
    scorers: dict[str, Scorer] = {}
    if model_dir is not None:
        scorers[MODEL] = load_model(Path(model_dir), *holdout.train.shape)
    scorers.update(baselines)
    if not scorers:
        raise ValueError("nothing to evaluate: give a model folder (--model) or at least one baseline")
    results, curves = evaluate_all(scorers, holdout, cfg)
    training = baseline_training(baselines)
    for name, row in training.items():
        results[name]["training"] = row
    out_dir = Path(out_dir)
    metrics: dict[str, Any] = {"baselines": {n: r for n, r in results.items() if n != MODEL}}
    if MODEL in results:
        metrics = {MODEL: results[MODEL], **metrics}
    outputs = {"metrics": write_json(out_dir / METRICS_FILE, metrics)}
    fp = holdout.fingerprint()
    write_json(out_dir / RUN_FILE, {HOLDOUT: fp, "fit_seconds": fit_seconds, "baseline_training": training,
                                    "n_users": holdout.test.shape[0],
                                    "n_items": holdout.test.shape[1], "cold_items": len(holdout.cold_items)})
    outputs.update(write_reports(results, curves, out_dir, cfg))
    step = results.get(MODEL) or max(results.values(), key=lambda r: r["test"].get(cfg.promote_metric, 0.0))
    if MODEL in results:
        champion = champion_metrics or (load_champion(cfg.champion) if cfg.champion else None)
        decision = decide_promotion({**results[MODEL]["test"], HOLDOUT: fp}, champion, cfg)
        outputs["promotion"] = write_json(out_dir / "promotion.json", decision.to_dict())
    flat = {k: v for k, v in step["test"].items() if isinstance(v, int | float)}
    return StepResult(metrics=flat, outputs=outputs)


def _load_features(features_dir: Path | None) -> dict[str, FeatureMatrix] | None:
    if features_dir is None:
        return None
    from fusionrec.features.store import load_features

    return load_features(Path(features_dir))
