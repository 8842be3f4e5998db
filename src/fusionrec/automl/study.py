"""The optuna study: storage, sampler, pruner, the training objective and the worker processes.

One study lives in one storage under one name. SQLite in the output folder is the default;
any SQLAlchemy URL (PostgreSQL) lets processes on several machines share the study. Running
the same search again with the same storage and name continues the study: finished trials
stay, numbering goes on, and a trial whose worker was killed is failed after two missed
heartbeats and queued again once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fusionrec.automl.space import FittedSpace, SpaceError
from fusionrec.config import SearchConfig
from fusionrec.cpus import set_share, usable_cpus

if TYPE_CHECKING:
    import optuna

    from fusionrec.models.recommender import Recommender
    from fusionrec.training import TrainData

log = logging.getLogger(__name__)
Objective = Callable[["optuna.Trial"], "float | tuple[float, float]"]
STUDY_DB_ENV = "FUSIONREC_STUDY_DB"  # a shared study's database URL (from a Secret on a cluster)
METRIC = "ndcg@20"  # the objective (validation) and the pruning signal (per epoch)
CAUGHT = (ValueError, RuntimeError, ArithmeticError)  # a trial raising these fails; the search goes on (SpaceError stops it)


def optuna_stderr(enable: bool) -> bool:
    """Switch optuna's own stderr handler (a progress display shows its trial lines instead); returns
    whether it was on. Nothing to switch while optuna is not imported yet."""
    import sys

    if "optuna" not in sys.modules:
        return False
    import optuna

    handler = getattr(optuna.logging, "_default_handler", None)
    was_on = handler is not None and handler in logging.getLogger("optuna").handlers
    if enable and not was_on:
        optuna.logging.enable_default_handler()
    elif not enable and was_on:
        optuna.logging.disable_default_handler()
    return was_on


def local_storage(out_dir: Path) -> str:
    """The default storage: a SQLite file in the output folder."""
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def study_database() -> str:
    """The shared study's database URL from $FUSIONREC_STUDY_DB (set from a Secret on a cluster).

    Raises:
        RuntimeError: when it is unset: workers that do not share a database lose each other's trials.
    """
    url = os.environ.get(STUDY_DB_ENV, "").strip()
    if not url:
        raise RuntimeError(
            f"${STUDY_DB_ENV} is empty: the search workers of this pipeline share one study only through a "
            "database. Create the Kubernetes Secret named by params.yaml `pipeline.study_secret` (key "
            "`pipeline.study_secret_key`) holding a PostgreSQL URL, or compile the pipeline without "
            "`pipeline.study_secret` to run the search in one pod")
    return url


def make_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats, so the trial of a killed worker is failed and retried once.

    A database server's connections are checked before use: one that the server, a proxy or a NAT
    dropped while a trial trained (restart, idle timeout) is replaced instead of failing the worker.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=max(1, heartbeat_s),
                          grace_period=2 * max(1, heartbeat_s),
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (multivariate), random or CMA-ES (numeric params; categorical ones sampled by TPE)."""
    import optuna

    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(1, cfg.prune_startup_trials))
    if cfg.sampler == "tpe":
        return tpe
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise ValueError("search.sampler 'cmaes' needs the `cmaes` package (pip install cmaes); "
                         "or set search.sampler to 'tpe' or 'random'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=tpe, warn_independent_sampling=False)


def make_pruner(cfg: SearchConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """Median or Hyperband pruning on per-epoch validation NDCG@20 (none for multi-objective)."""
    import optuna

    if cfg.pruner == "none" or cfg.multi_objective:
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, cfg.prune_warmup_epochs),
                                              max_resource=max(2, max_epochs), reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_startup_trials,
                                       n_warmup_steps=cfg.prune_warmup_epochs)


def open_study(cfg: SearchConfig, storage_url: str, max_epochs: int, seed: int | None = None) -> optuna.Study:
    """Create the study, or load it when the storage already holds one of that name."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    directions: list[Literal["minimize", "maximize"]] = ["maximize", "minimize"] if cfg.multi_objective else ["maximize"]
    for attempt in range(5):  # workers starting together on an empty database race to create its tables
        try:
            study = optuna.create_study(storage=make_storage(storage_url, cfg.heartbeat_s),
                                        study_name=cfg.study_name, sampler=make_sampler(cfg, cfg.seed if seed is None else seed),
                                        pruner=make_pruner(cfg, max_epochs), directions=directions, load_if_exists=True)
            break
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random() * 2**attempt)
    wanted = [d.name for d in study.directions]
    if len(wanted) != len(directions):
        raise ValueError(f"study {cfg.study_name!r} in {storage_url} has {len(wanted)} objective(s) but "
                         f"search.multi_objective is {cfg.multi_objective}; use another study_name or storage")
    return study


def scoring_latency_ms(rec: Recommender, n_users: int, repeats: int = 20, k: int = 20) -> float:
    """Median milliseconds to score one user against every item and take the top k (a serving request)."""
    users = np.random.default_rng(0).integers(0, max(n_users, 1), size=repeats)
    times = []
    for u in users:
        t0 = time.perf_counter()
        scores = rec.score_users(np.array([u]))  # (1, n_items)
        np.argpartition(-scores[0], min(k, scores.shape[1] - 1))[:k]
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


class TrainObjective:
    """The search objective: train a trial's config on data loaded once per process.

    Picklable (the data is not pickled), so spawned workers each load the folders once and
    every trial in that process shares the arrays: no re-encoding, no re-reading.
    """

    def __init__(self, ingested_dir: Path, features_dir: Path, split_dir: Path, space: FittedSpace,
                 multi_objective: bool = False) -> None:
        self.dirs = (Path(ingested_dir), Path(features_dir), Path(split_dir))
        self.space, self.multi_objective = space, multi_objective
        self._data: TrainData | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def data(self) -> TrainData:
        """The training data of this process, read on first use."""
        if self._data is None:
            from fusionrec.training import TrainData

            self._data = TrainData.from_dirs(*self.dirs)
        return self._data

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        import optuna

        from fusionrec.training import select_features, train

        cfg = self.space.config(trial)
        trial.set_user_attr("config", cfg.model_dump(mode="json"))
        data = self.data()
        try:
            select_features(data, cfg)
        except ValueError as exc:  # the space offered a feature the folder lacks: stop, do not count it
            trial.set_user_attr("error", f"SpaceError: {exc}"[:500])
            raise SpaceError(f"trial {trial.number} of the fitted search space asks for a feature the features "
                             f"folder {self.dirs[1]} does not hold: {exc}") from None

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if self.multi_objective:  # optuna cannot prune multi-objective trials
                return
            trial.report(float(metrics[METRIC]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: valid {METRIC} {metrics[METRIC]:.4f} below the median")

        try:
            result = train(data, cfg, report)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # optuna logs it but keeps no reason: store one for the summary
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise
        latency = scoring_latency_ms(result.recommender, data.n_users)
        trial.set_user_attr("latency_ms", latency)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("ease_blend", float(result.recommender.ease_blend))
        trial.set_user_attr("train_seconds", round(result.seconds, 2))
        for key, value in result.valid_metrics.items():
            trial.set_user_attr(f"valid_{key}", float(value))
        value = float(result.valid_metrics[METRIC])
        return (value, latency) if self.multi_objective else value


def finished(study: optuna.Study) -> int:
    """Trials that ended (complete, pruned or failed)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


ENQUEUED_WAIT_S = 60.0  # how long a second worker waits for the first to take the enqueued trials


def _wait_for_enqueued(study: optuna.Study, timeout: float = ENQUEUED_WAIT_S) -> None:
    """Return once no trial of the study is waiting (enqueued), or after `timeout` seconds.

    SQLite has no row locks: two workers starting together can both take the same enqueued
    trial (the default config) and the second fails when it reports it. So only the first
    worker takes enqueued trials; the others start sampling after it has.
    """
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) and time.monotonic() < deadline:
        time.sleep(0.2)


def _optimize(cfg: SearchConfig, storage_url: str, objective: Objective, n_trials: int, max_epochs: int,
              worker: int, threads: int | None) -> None:
    """One worker: open the study and run up to n_trials trials (spawned processes start here)."""
    from optuna.study import MaxTrialsCallback

    if threads:
        import torch

        set_share(threads)  # automatic training threads stay within this worker's share
        torch.set_num_threads(threads)
    # A different seed per worker and per resume: seeded samplers would otherwise repeat their proposals.
    probe = open_study(cfg, storage_url, max_epochs)
    if worker > 0:
        _wait_for_enqueued(probe)
    seed = cfg.seed + 1009 * worker + 7919 * len(probe.trials)
    study = open_study(cfg, storage_url, max_epochs, seed=seed)
    callbacks = []
    if cfg.max_study_trials is not None:
        callbacks.append(MaxTrialsCallback(cfg.max_study_trials, states=None))
    study.optimize(objective, n_trials=n_trials, timeout=cfg.timeout, catch=CAUGHT,
                   callbacks=callbacks, gc_after_trial=True)


def run_workers(cfg: SearchConfig, storage_url: str, objective: Objective, max_epochs: int) -> int:
    """Run this search's share of trials on the study: in-process, or in cfg.workers spawned processes.

    Returns:
        the number of trials this run was allowed (after the max_study_trials cap).
    """
    import multiprocessing as mp

    n_trials = cfg.n_trials
    study = open_study(cfg, storage_url, max_epochs)  # creates the tables before any worker starts
    if cfg.max_study_trials is not None:
        done = finished(study)
        n_trials = max(0, min(n_trials, cfg.max_study_trials - done))
        if n_trials < cfg.n_trials:
            log.info("study has %d finished trials of max_study_trials=%d: running %d", done,
                     cfg.max_study_trials, n_trials)
    if n_trials <= 0:
        return 0
    workers = max(1, min(cfg.workers, n_trials))
    if workers == 1:
        _optimize(cfg, storage_url, objective, n_trials, max_epochs, 0, None)
        return n_trials
    shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    threads = max(1, math.floor(usable_cpus() / workers))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_optimize, args=(cfg, storage_url, objective, share, max_epochs, i, threads),
                         name=f"fusionrec-search-{i}") for i, share in enumerate(shares)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"search workers {failed} exited with an error (see their log above); "
                           "run again with the same storage and study_name to continue the study")
    return n_trials
