"""AutoML: the search space, a tiny real search, and the study on SQLite and PostgreSQL: resume after a
kill, workers racing to open a new database, dropped connections, two workers on one study."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from tests.data.latent_catalogue import PreparedDirs, ingest_split_featurize, write_vectors_catalogue
from tests.postgres import LocalPostgres

from fusionrec.automl import (
    FittedSpace,
    SpaceError,
    budget_report,
    config_from_params,
    fit_space,
    run_search,
    suggest_config,
)
from fusionrec.automl.outputs import choose_trial
from fusionrec.automl.space import EASE_MODE
from fusionrec.automl.study import (
    CAUGHT,
    STUDY_DB_ENV,
    TrainObjective,
    local_storage,
    open_study,
    run_workers,
    study_database,
)
from fusionrec.config import (
    SPACE_CHOICES,
    SPACE_LOG,
    SPACE_RANGES,
    SearchConfig,
    SearchSpace,
    TrainConfig,
    load_config_file,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
BASE = TrainConfig(text_encoder="tfidf", image_encoder="color")


# --- the space -------------------------------------------------------------------------


def _sample(space: SearchSpace, n: int) -> list[tuple[optuna.trial.FrozenTrial, TrainConfig]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = suggest_config(trial, space, BASE)
        out.append((study.tell(trial, 0.0), cfg))
    return out


def test_suggest_config_covers_every_choice_and_respects_bounds() -> None:
    space = SearchSpace()
    samples = _sample(space, 200)
    frozen, configs = samples[0][0], [c for _, c in samples]
    assert set(frozen.params) == {*SPACE_CHOICES, *SPACE_RANGES, EASE_MODE}  # every item of the space is searched
    for name in SPACE_CHOICES:
        assert {getattr(c, name) for c in configs} == set(getattr(space, name)), name
    for name in SPACE_RANGES:
        low, high = getattr(space, name)
        values = [t.params[name] for t, _ in samples]
        assert all(low <= v <= high for v in values), name
        assert frozen.distributions[name].log == (name in SPACE_LOG), name
    for name in ("n_layers", "epochs"):  # integers, both ends reached
        low, high = getattr(space, name)
        values = {getattr(c, name) for c in configs}
        assert values <= set(range(low, high + 1)) and {low, high} <= values, name
    blends = [c.ease_blend for c in configs]
    assert None in blends and any(b is not None for b in blends)  # validation-chosen and fixed EASE blends
    fixed = [(t.params["ease_blend"], c.ease_blend) for t, c in samples if t.params[EASE_MODE] == "fixed"]
    assert all(p == b for p, b in fixed)
    assert all(c.seed == BASE.seed and c.batch_size == BASE.batch_size for c in configs)  # rest from base


def test_space_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="lr: log-scale"):
        SearchSpace(lr=[0.0, 0.1])
    with pytest.raises(ValueError, match="epochs: expected"):
        SearchSpace(epochs=[10])
    with pytest.raises(ValueError, match="fusion: unknown choices"):
        SearchSpace(fusion=["sum"])


def test_fit_space_drops_missing_encoders_and_contains_the_default() -> None:
    base = BASE.with_overrides(dim=48, lr=0.05, ease_blend=None)
    assert isinstance(base, TrainConfig)
    fitted = fit_space(SearchSpace(ease_blend_auto=False), base, {"text": ["tfidf"], "image": ["color"]})
    space = fitted.space
    assert space.text_encoder == ["tfidf", "none"] and space.image_encoder == ["color", "none"]
    assert 48 in space.dim and space.lr[1] == 0.05 and space.ease_blend_auto and fitted.vectors == ()
    assert any("minilm" in n for n in fitted.notes) and fitted.base == base
    assert config_from_params(fitted.default_params(), space, base) == base  # the enqueued trial is the default


def _wanted(cfg: TrainConfig) -> set[str]:
    keys = {f"text:{cfg.text_encoder}", f"image:{cfg.image_encoder}"} - {"text:none", "image:none"}
    return keys | set(cfg.extra_modalities)


@pytest.mark.parametrize("available", [
    {"vectors": ["audio", "image"]},
    {"text": ["tfidf"], "vectors": ["clip"]},
    {"image": ["color"]},
])
def test_fitted_space_never_proposes_a_missing_feature(available: dict[str, list[str]]) -> None:
    """Not the default trial either: the train section's absent encoders are replaced, not added back."""
    base = TrainConfig(extra_modalities=["audio", "video"])  # minilm / effnet-lite0, audio, video
    fitted = fit_space(SearchSpace(), base, available)
    present = {f"{m}:{n}" for m, names in available.items() for n in names}
    assert fitted.vectors == tuple(sorted(f"vectors:{n}" for n in available.get("vectors", [])))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(fitted.default_params())
    configs = []
    for _ in range(60):
        trial = study.ask()
        configs.append(fitted.config(trial))
        study.tell(trial, 0.0)
    assert configs[0] == fitted.base  # the default trial
    assert all(_wanted(c) <= present for c in configs), [sorted(_wanted(c) - present) for c in configs]
    for key in fitted.vectors:  # each vectors: feature is searched in and out
        assert {key in c.extra_modalities for c in configs} == {True, False}
    expected_text = "tfidf" if "text" in available else "none"
    assert fitted.base.text_encoder == expected_text and fitted.base.image_encoder == (
        "color" if "image" in available else "none")
    assert any(f"it uses {expected_text!r}" in n for n in fitted.notes)
    assert not any("added the default" in n and "encoder" in n for n in fitted.notes)
    assert fitted.base.extra_modalities == (["vectors:audio"] if "audio" in available.get("vectors", []) else [])


def test_a_trial_asking_for_a_missing_feature_stops_the_search(
    ingested_dir: Path, features_dir: Path, split_dir: Path
) -> None:
    """A space that offers a feature the folder lacks is a bug: the search stops at once, it does not count it."""
    wrong = FittedSpace(TINY_SPACE.with_overrides(text_encoder=["minilm"]), TINY_BASE)  # type: ignore[arg-type]
    objective = TrainObjective(ingested_dir, features_dir, split_dir, wrong)
    study = optuna.create_study()
    with pytest.raises(SpaceError, match=r"trial 0 .*text:minilm.*features folder has"):
        study.optimize(objective, n_trials=5, catch=CAUGHT)
    assert len(study.trials) == 1 and "SpaceError" in study.trials[0].user_attrs["error"]


def test_budget_message_says_how_many_trials_ran_and_why() -> None:
    cfg = SearchConfig(n_trials=12, timeout=150.0)
    done = budget_report(cfg, 12, 12, 80.0)
    assert done["stopped_by"] == "done" and done["message"].startswith("all 12 requested trials ran")
    late = budget_report(cfg, 12, 7, 152.0)
    assert late["stopped_by"] == "timeout" and late["ran"] == 7
    assert re.match(r"7 of 12 requested trials ran: the time budget search.timeout=150 s ran out after 152 s "
                    r"\(about 22 s a trial.*--timeout 287", late["message"]), late["message"]
    capped = budget_report(cfg.with_overrides(max_study_trials=20), 3, 3, 10.0)  # type: ignore[arg-type]
    assert capped["stopped_by"] == "max_study_trials" and "3 of 12" in capped["message"]


def test_a_shared_study_needs_its_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STUDY_DB_ENV, "postgresql+psycopg://u:p@db/optuna")
    assert study_database() == "postgresql+psycopg://u:p@db/optuna"
    monkeypatch.setenv(STUDY_DB_ENV, " ")
    with pytest.raises(RuntimeError, match="pipeline.study_secret"):
        study_database()


def test_multi_objective_chooses_best_quality_within_the_latency_budget(db_url: str) -> None:
    study = open_study(SearchConfig(multi_objective=True), db_url, 10)
    for ndcg, ms in [(0.30, 9.0), (0.25, 4.0), (0.20, 1.0), (0.10, 3.0)]:
        study.add_trial(optuna.trial.create_trial(values=[ndcg, ms]))
    assert choose_trial(study, latency_budget_ms=5.0).values == [0.25, 4.0]
    assert choose_trial(study, latency_budget_ms=0.5).values == [0.20, 1.0]  # none within: the fastest
    assert choose_trial(study, latency_budget_ms=50.0).values == [0.30, 9.0]


# --- mechanics with a fake objective (resume, workers) --------------------------------


def fake_objective(trial: optuna.Trial) -> float:
    """Cheap stand-in for training: a smooth function of two params, a little slow."""
    x = trial.suggest_float("x", -1.0, 1.0)
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.3)
    return 1.0 - x * x


def _numbers(url: str, name: str) -> list[int]:
    return [t.number for t in optuna.load_study(study_name=name, storage=url).trials]


def test_kill_and_restart_continues_the_same_study(db_url: str) -> None:
    url, cfg = db_url, SearchConfig(n_trials=1000, heartbeat_s=1, study_name="resume")
    open_study(cfg, url, 10)
    proc = mp.get_context("spawn").Process(target=run_workers, args=(cfg, url, fake_objective, 10))
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        study = optuna.load_study(study_name="resume", storage=url)
        if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 3:
            break
    proc.kill()  # SIGKILL: no clean-up, the running trial is left RUNNING
    proc.join()
    before = _numbers(url, "resume")
    assert len(before) >= 3
    time.sleep(2.5)  # past the grace period (2 heartbeats)
    run_workers(cfg.with_overrides(n_trials=3), url, fake_objective, 10)  # type: ignore[arg-type]
    study = optuna.load_study(study_name="resume", storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) > len(before) and numbers[: len(before)] == before
    assert len(set(numbers)) == len(numbers) == numbers[-1] + 1  # no duplicates, no gaps
    # The killed trial was failed after its missed heartbeats; only a trial killed before its first
    # heartbeat (created, nothing suggested yet) can stay RUNNING: optuna cannot tell it from a live one.
    running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) <= 1 and not any(t.params for t in running)


def test_workers_opening_an_empty_database_together_share_one_study(db_url: str) -> None:
    """Workers that start at once on a new database race to create its tables and the study (threads
    here, each with its own connections, like pods)."""
    cfg, n = SearchConfig(study_name="race"), 4
    barrier, errors = threading.Barrier(n), []

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            open_study(cfg, db_url, 10).optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert optuna.get_all_study_names(db_url) == ["race"]
    assert len(optuna.load_study(study_name="race", storage=db_url).trials) == n


def test_a_worker_outlives_a_dropped_database_connection(postgres: LocalPostgres) -> None:
    """A server restart or an idle timeout in between drops the pooled connections of a training worker."""
    url = postgres.new_database("dropped")
    study = open_study(SearchConfig(study_name="dropped"), url, 10)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    admin = sa.create_engine(postgres.admin_url, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        dropped = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = :db"), {"db": sa.engine.make_url(url).database}).scalar()
    assert dropped
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    assert len(study.trials) == 2


def test_two_worker_processes_both_contribute(db_url: str) -> None:
    url = db_url
    cfg = SearchConfig(n_trials=6, workers=2, study_name="shared")
    assert run_workers(cfg, url, fake_objective, 10) == 6
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 6
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in study.trials}


# --- a tiny real search ---------------------------------------------------------------


TINY_SPACE = SearchSpace(dim=[16, 32], epochs=[2, 4], n_layers=[0, 2], knn_k=[0, 5], ease_blend_auto=False,
                         ease_blend=[0.0, 0.5], ease_head_items=[2048], ease_topk=[256])  # tiny: no sparse EASE
TINY_BASE = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, epochs=4, patience=2,
                        n_layers=1, knn_k=5, ease_blend=0.0)


def test_tiny_search_prunes_writes_outputs_and_beats_the_default(
    ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path: Path
) -> None:
    cfg = SearchConfig(n_trials=7, prune_startup_trials=2, prune_warmup_epochs=1, space=TINY_SPACE)
    result = run_search(ingested_dir, features_dir, split_dir, tmp_path, cfg, TINY_BASE)
    m = result.metrics
    assert m["n_trials"] == 7 and m["n_complete"] + m["n_pruned"] == 7 and m["n_complete"] >= 2
    assert m["n_pruned"] >= 1
    assert m["best_valid_ndcg@20"] >= m["default_valid_ndcg@20"] > 0
    study = optuna.load_study(study_name=cfg.study_name, storage=local_storage(tmp_path))
    first = study.trials[0]
    assert first.user_attrs["default"] and TrainConfig(**first.user_attrs["config"]) == TINY_BASE
    best = load_config_file(tmp_path / "best.yaml", TrainConfig)  # what `fusionrec train --config` reads
    assert best == TrainConfig(**study.best_trial.user_attrs["config"])
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 7 and {"params_fusion", "user_attrs_latency_ms"} <= set(trials.columns)
    assert (tmp_path / "importances.json").is_file() and (tmp_path / "summary.json").is_file()
    for plot in ("optimization_history", "param_importances", "parallel_coordinate"):
        for ext in ("html", "png"):
            assert (tmp_path / "plots" / f"{plot}.{ext}").stat().st_size > 0, (plot, ext)


# --- a search on a catalogue whose only content is two vectors: files --------------------


@pytest.fixture(scope="module")
def vectors_dirs(tmp_path_factory: pytest.TempPathFactory) -> PreparedDirs:
    root = tmp_path_factory.mktemp("vectors-catalogue")
    return ingest_split_featurize(write_vectors_catalogue(root), root / "steps")


def test_search_on_a_vectors_only_catalogue_runs_every_trial_and_finds_the_vectors(
    vectors_dirs: PreparedDirs, tmp_path: Path
) -> None:
    """The train section asks for minilm/effnet-lite0, which this folder lacks: no trial fails for it, and the
    vectors (views of the factors that drive the interactions) beat the collaborative-only default."""
    space = TINY_SPACE.with_overrides(lr=[0.02, 0.05], ease_blend=[0.0, 0.0])  # EASE off: the neural part decides
    cfg = SearchConfig(n_trials=6, pruner="none", timeout=None, space=space)
    base = TINY_BASE.with_overrides(text_encoder="minilm", image_encoder="effnet-lite0")
    assert isinstance(base, TrainConfig)
    result = run_search(vectors_dirs.ingested, vectors_dirs.features, vectors_dirs.split, tmp_path, cfg, base)
    m = result.metrics
    assert m["n_failed"] == 0 and m["n_complete"] == 6 and m["n_ran"] == m["n_requested"] == 6
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["budget"]["stopped_by"] == "done"
    study = optuna.load_study(study_name=cfg.study_name, storage=local_storage(tmp_path))
    configs = [TrainConfig(**t.user_attrs["config"]) for t in study.trials]
    assert all(c.text_encoder == "none" and c.image_encoder == "none" for c in configs)
    assert {tuple(c.extra_modalities) for c in configs} > {()}  # vectors searched in and out
    default = configs[0]
    assert study.trials[0].user_attrs["default"] and default.extra_modalities == []
    best = load_config_file(tmp_path / "best.yaml", TrainConfig)
    assert best.extra_modalities and set(best.extra_modalities) <= {"vectors:audio", "vectors:image"}
    assert m["best_valid_ndcg@20"] > m["default_valid_ndcg@20"] * 1.5
    with_vectors = [t.value for t, c in zip(study.trials, configs, strict=True) if c.extra_modalities]
    without = [t.value for t, c in zip(study.trials, configs, strict=True) if not c.extra_modalities]
    assert min(with_vectors) > max(without)  # every trial with content beats every trial without


def test_a_second_worker_waits_until_the_enqueued_trial_is_taken() -> None:
    from fusionrec.automl.study import _wait_for_enqueued

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    t0 = time.monotonic()
    _wait_for_enqueued(study, timeout=0.6)  # nobody takes it: gives up after the timeout
    assert time.monotonic() - t0 >= 0.6
    taker = threading.Timer(0.3, lambda: study.ask())  # the first worker takes it
    taker.start()
    t0 = time.monotonic()
    _wait_for_enqueued(study, timeout=30)
    taker.join()
    assert time.monotonic() - t0 < 10 and not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
