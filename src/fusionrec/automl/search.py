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
from fusionrec.automl.space import SpaceError, fit_space
from fusionrec.automl.study import TrainObjective, finished, local_storage, open_study, run_workers
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


def budget_report(cfg: SearchConfig, allowed: int, ran: int, wall_seconds: float) -> dict[str, Any]:
    """How many of the requested trials ran and why the run stopped, with what to change.

    Args:
        allowed: the trials this run was allowed after the max_study_trials cap (`run_workers`).
        ran: the trials that finished (complete, pruned or failed) during this run.
    """
    requested = cfg.n_trials
    out: dict[str, Any] = {"requested": requested, "allowed": allowed, "ran": ran,
                           "wall_seconds": round(wall_seconds, 2)}
    if ran >= requested:
        return out | {"stopped_by": "done", "message": f"all {requested} requested trials ran "
                                                       f"in {wall_seconds:.0f} s"}
    if allowed < requested and ran >= allowed:
        return out | {"stopped_by": "max_study_trials", "message": (
            f"{ran} of {requested} requested trials ran: the study holds search.max_study_trials="
            f"{cfg.max_study_trials} finished trials; raise it to run more")}
    if cfg.timeout is not None and wall_seconds >= cfg.timeout:
        per = wall_seconds / max(ran, 1)
        need = per * allowed * 1.1
        return out | {"stopped_by": "timeout", "message": (
            f"{ran} of {requested} requested trials ran: the time budget search.timeout={cfg.timeout:.0f} s ran "
            f"out after {wall_seconds:.0f} s (about {per:.0f} s a trial; a trial starts only while time is "
            f"left). To run all {requested}, give about --timeout {need:.0f} (search.timeout), or lower "
            "search.space.epochs")}
    return out | {"stopped_by": "interrupted", "message": f"{ran} of {requested} requested trials ran before "
                                                          "the search was interrupted"}


def run_search(ingested_dir: Path, features_dir: Path, split_dir: Path, out_dir: Path, cfg: SearchConfig,
               base: TrainConfig) -> StepResult:
    """The `search` step: add cfg.n_trials trials to the study, then summarise the whole study.

    The space is fitted to the features folder first (`fit_space`: only the encoders and
    vectors: features it holds), and the default config (`base`, fitted the same way) is
    enqueued first, so the search can only improve on it. The study lives in cfg.storage
    (default: sqlite:///<out>/study.db) under cfg.study_name; running again with the same
    storage and name continues it.

    Writes to out_dir: best.yaml (a TrainConfig for `fusionrec train --config`), trials.csv,
    importances.json, summary.json (with "budget": how many of the requested trials ran and why
    it stopped) and plots/{optimization_history,param_importances,parallel_coordinate[,pareto_front]}.{html,png}.

    Returns:
        StepResult with trial counts (n_requested, n_ran this run), the share pruned, best and default
        validation NDCG@20.

    Raises:
        RuntimeError: no trial completed, or a trial asked for a feature the folder lacks (a bug of
            the space: the search stops rather than counting it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fitted = fit_space(cfg.space, base, available_encoders(Path(features_dir)))
    notes = list(fitted.notes)
    for note in notes:
        log.info("search space: %s", note)
    storage = cfg.storage or local_storage(out_dir)
    max_epochs = int(fitted.space.epochs[1])
    study = open_study(cfg, storage, max_epochs)
    ended_before = finished(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental API; the names only label the dashboard's axes
        study.set_metric_names(["valid_ndcg@20", "latency_ms"] if cfg.multi_objective else ["valid_ndcg@20"])
    if cfg.n_trials > 0:
        study.enqueue_trial(fitted.default_params(), user_attrs={"default": True}, skip_if_exists=True)
    objective = TrainObjective(Path(ingested_dir), Path(features_dir), Path(split_dir), fitted, cfg.multi_objective)
    t0 = time.perf_counter()
    allowed = cfg.n_trials
    try:
        allowed = run_workers(cfg, storage, objective, max_epochs)
    except BaseException as exc:  # a worker died, a space bug or Ctrl+C: still leave the finished trials' outputs
        wall = time.perf_counter() - t0
        try:
            after = open_study(cfg, storage, max_epochs)
            budget = budget_report(cfg, allowed, finished(after) - ended_before, wall)
            summarise(after, cfg, out_dir, storage, wall, notes, budget)
        except Exception as inner:  # noqa: BLE001  (the original error matters more)
            log.warning("search outputs not written: %s", inner)
        if isinstance(exc, SpaceError):
            raise RuntimeError(f"search stopped: {exc}. This is a bug of the search space, not of the data; "
                               f"the space was {fitted.space.model_dump()} with vectors {list(fitted.vectors)}"
                               ) from exc
        raise
    wall = time.perf_counter() - t0
    study = open_study(cfg, storage, max_epochs)
    budget = budget_report(cfg, allowed, finished(study) - ended_before, wall)
    (log.info if budget["stopped_by"] == "done" else log.warning)("search: %s", budget["message"])
    return summarise(study, cfg, out_dir, storage, wall, notes, budget)


def summarise(study: Any, cfg: SearchConfig, out_dir: Path, storage: str, wall_seconds: float = 0.0,
              notes: list[str] | None = None, budget: dict[str, Any] | None = None) -> StepResult:
    """Write the outputs of a study (best.yaml, trials.csv, importances, plots, summary.json).

    budget (`budget_report`) is this run's: requested and finished trials and why it stopped.
    """
    counts = _counts(study)
    if counts["n_complete"] == 0 and counts["n_failed"]:
        reasons = "; ".join(_fail_reasons(study)[:3])
        stop = f"; {budget['message']}" if budget else ""
        raise RuntimeError(f"search: no trial completed ({counts['n_failed']} failed), e.g. {reasons}{stop}")
    outputs: dict[str, Path] = {"trials": write_trials_csv(study, out_dir / "trials.csv")}
    imps = write_importances(study, out_dir / "importances.json")
    outputs["importances"] = out_dir / "importances.json"
    write_plots(study, out_dir / "plots", imps)
    outputs["plots"] = out_dir / "plots"
    chosen, default = choose_trial(study, cfg.latency_budget_ms), default_trial(study)
    ended = counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]
    metrics: dict[str, float | int] = {**counts, "pruned_share": round(counts["n_pruned"] / max(ended, 1), 4),
                                       "wall_seconds": round(wall_seconds, 2)}
    if budget is not None:
        metrics.update(n_requested=budget["requested"], n_ran=budget["ran"])
    summary: dict[str, Any] = {"study_name": study.study_name, "storage": storage, **metrics,
                               "dashboard": f"optuna-dashboard {storage}", "space_notes": notes or [],
                               "budget": budget}
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
