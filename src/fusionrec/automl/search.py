"""`run_search`: the search step, from the ingested, features and split folders to best.yaml."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from fusionrec.automl.outputs import (
    choose_trial,
    default_trial,
    write_importances,
    write_plots,
    write_trials_csv,
)
from fusionrec.automl.space import default_params, fit_space
from fusionrec.automl.study import TrainObjective, local_storage, open_study, run_workers
from fusionrec.config import SearchConfig, TrainConfig, dump_config
from fusionrec.io import StepResult, write_json

log = logging.getLogger(__name__)


def available_encoders(features_dir: Path) -> dict[str, list[str]]:
    """{"text": [...], "image": [...], "vectors": [...]}: the encoders a features folder holds."""
    from fusionrec.features.store import read_manifest

    out: dict[str, list[str]] = {}
    for entry in read_manifest(features_dir)["features"].values():
        out.setdefault(entry["modality"], []).append(entry["encoder"])
    return out


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {"n_trials": len(states), "n_complete": states.count(TrialState.COMPLETE),
            "n_pruned": states.count(TrialState.PRUNED), "n_failed": states.count(TrialState.FAIL),
            "n_running": states.count(TrialState.RUNNING) + states.count(TrialState.WAITING)}


def _fail_reasons(study: Any) -> list[str]:
    from optuna.trial import TrialState

    return [f"trial {t.number}: {t.user_attrs.get('error', 'unknown error')}"
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]


def run_search(ingested_dir: Path, features_dir: Path, split_dir: Path, out_dir: Path, cfg: SearchConfig,
               base: TrainConfig) -> StepResult:
    """The `search` step: add cfg.n_trials trials to the study, then summarise the whole study.

    The default config (`base`) is enqueued first, so the search can only improve on it. The
    study lives in cfg.storage (default: sqlite:///<out>/study.db) under cfg.study_name; running
    again with the same storage and name continues it.

    Writes to out_dir: best.yaml (a TrainConfig for `fusionrec train --config`), trials.csv,
    importances.json, summary.json and plots/{optimization_history,param_importances,
    parallel_coordinate[,pareto_front]}.{html,png}.

    Returns:
        StepResult with trial counts, the share pruned, best and default validation NDCG@20.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space, notes = fit_space(cfg.space, base, available_encoders(Path(features_dir)))
    for note in notes:
        log.info("search space: %s", note)
    storage = cfg.storage or local_storage(out_dir)
    max_epochs = int(space.epochs[1])
    study = open_study(cfg, storage, max_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental API; the names only label the dashboard's axes
        study.set_metric_names(["valid_ndcg@20", "latency_ms"] if cfg.multi_objective else ["valid_ndcg@20"])
    if cfg.n_trials > 0:
        study.enqueue_trial(default_params(space, base), user_attrs={"default": True}, skip_if_exists=True)
    objective = TrainObjective(Path(ingested_dir), Path(features_dir), Path(split_dir), space, base,
                               cfg.multi_objective)
    t0 = time.perf_counter()
    try:
        run_workers(cfg, storage, objective, max_epochs)
    except BaseException:  # a worker died or Ctrl+C: still leave the outputs of the trials that finished
        try:
            summarise(open_study(cfg, storage, max_epochs), cfg, out_dir, storage, time.perf_counter() - t0, notes)
        except Exception as exc:  # noqa: BLE001  (the original error matters more)
            log.warning("search outputs not written: %s", exc)
        raise
    wall = time.perf_counter() - t0
    return summarise(open_study(cfg, storage, max_epochs), cfg, out_dir, storage, wall, notes)


def summarise(study: Any, cfg: SearchConfig, out_dir: Path, storage: str, wall_seconds: float = 0.0,
              notes: list[str] | None = None) -> StepResult:
    """Write the outputs of a study (best.yaml, trials.csv, importances, plots, summary.json)."""
    counts = _counts(study)
    if counts["n_complete"] == 0 and counts["n_failed"]:
        reasons = "; ".join(_fail_reasons(study)[:3])
        raise RuntimeError(f"search: no trial completed ({counts['n_failed']} failed), e.g. {reasons}")
    outputs: dict[str, Path] = {"trials": write_trials_csv(study, out_dir / "trials.csv")}
    imps = write_importances(study, out_dir / "importances.json")
    outputs["importances"] = out_dir / "importances.json"
    write_plots(study, out_dir / "plots", imps)
    outputs["plots"] = out_dir / "plots"
    chosen, default = choose_trial(study, cfg.latency_budget_ms), default_trial(study)
    ended = counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]
    metrics: dict[str, float | int] = {**counts, "pruned_share": round(counts["n_pruned"] / max(ended, 1), 4),
                                       "wall_seconds": round(wall_seconds, 2)}
    summary: dict[str, Any] = {"study_name": study.study_name, "storage": storage, **metrics,
                               "dashboard": f"optuna-dashboard {storage}", "space_notes": notes or []}
    if default is not None:
        summary["default_trial"] = default.number
        if default.values:
            metrics["default_valid_ndcg@20"] = float(default.values[0])
    if chosen is not None:
        best = TrainConfig(**chosen.user_attrs["config"])
        dump_config(best, out_dir / "best.yaml")
        outputs["best"] = out_dir / "best.yaml"
        metrics.update({"best_trial": chosen.number, "best_valid_ndcg@20": float(chosen.values[0]),
                        "best_latency_ms": float(chosen.user_attrs.get("latency_ms", float("nan")))})
        summary.update(best_trial=chosen.number, best_params=chosen.params, best_config=best.model_dump(mode="json"))
        if len(study.directions) > 1:
            summary["pareto_front"] = [{"trial": t.number, "valid_ndcg@20": t.values[0], "latency_ms": t.values[1]}
                                       for t in study.best_trials]
    summary["metrics"] = metrics
    outputs["summary"] = write_json(out_dir / "summary.json", summary)
    log.info("search: %d trials (%d complete, %d pruned, %d failed); best trial %s; open the study with `%s`",
             counts["n_trials"], counts["n_complete"], counts["n_pruned"], counts["n_failed"],
             summary.get("best_trial"), summary["dashboard"])
    return StepResult(metrics=metrics, outputs=outputs)
