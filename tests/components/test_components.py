"""Every kfp component executed through kfp.local on the tiny demo, its outputs checked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kfp.dsl import Artifact, Dataset, Model
from tests.components.component_tasks import (
    TINY_EVALUATE,
    TINY_FEATURIZE,
    TINY_SEARCH,
    TINY_TRAIN,
    as_params,
)

from components import COMPONENTS, evaluate, featurize, ingest, package, search, split, train
from fusionrec.config import IngestConfig, SplitConfig
from fusionrec.io import read_json
from fusionrec.steps import STEPS

pytestmark = [
    pytest.mark.integration,  # each task is a subprocess of this interpreter
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),  # no image locally
]


def test_one_component_per_step() -> None:
    assert sorted(COMPONENTS) == sorted(STEPS)
    for name, component in COMPONENTS.items():
        spec = component.component_spec
        image = spec.implementation.container.image
        assert image.startswith("ghcr.io/fusionrec/fusionrec:"), f"{name} runs on {image}"
        assert "metrics" in spec.outputs, f"{name} logs no metrics"


def test_ingest(run_component, demo_dir: Path) -> None:
    task = run_component(ingest, {"data": (demo_dir, Dataset)}, cfg=as_params(IngestConfig()))
    out = task.output("ingested")
    items = pd.read_parquet(out / "items.parquet")
    interactions = pd.read_parquet(out / "interactions.parquet")
    assert list(items.index) == list(range(len(items)))
    assert interactions["item_idx"].between(0, len(items) - 1).all()
    metrics = task.metrics()
    assert metrics["items"] == len(items) and metrics["interactions"] == len(interactions)
    assert (out / "rejected.parquet").exists() and (out / "report.json").exists()


def test_split(run_component, ingested_dir: Path) -> None:
    task = run_component(split, {"ingested": (ingested_dir, Dataset)}, cfg=as_params(SplitConfig()))
    out = task.output("split_data")
    parts = {p: pd.read_parquet(out / f"{p}.parquet") for p in ("train", "valid", "test")}
    total = len(pd.read_parquet(ingested_dir / "interactions.parquet"))
    assert sum(len(df) for df in parts.values()) == total
    assert len(parts["train"]) > len(parts["test"]) > 0
    assert task.metrics()["train_rows"] == len(parts["train"])


def test_featurize(run_component, demo_dir: Path, ingested_dir: Path) -> None:
    from fusionrec.features.store import load_features

    inputs = {"data": (demo_dir, Dataset), "ingested": (ingested_dir, Dataset)}
    task = run_component(featurize, inputs, cfg=as_params(TINY_FEATURIZE))
    features = load_features(task.output("features"))
    n_items = len(pd.read_parquet(ingested_dir / "items.parquet"))
    assert set(features) == {"text:tfidf", "image:color"}
    for matrix in features.values():
        assert matrix.values.shape[0] == n_items and matrix.mask.shape == (n_items,)
    assert features["text:tfidf"].values.shape[1] == TINY_FEATURIZE.tfidf_dim
    assert task.metrics()["items"] == n_items


@pytest.mark.slow  # 25 s; the isolated cluster run covers shared-study workers in the default suite
def test_search_worker_then_summary_share_one_study(run_component, ingested_dir: Path, features_dir: Path,
                                                    split_dir: Path, postgres,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fan-out shape: workers and the summary meet in the database named by $FUSIONREC_STUDY_DB
    (PostgreSQL, as on a cluster; the one-pod shape below covers SQLite)."""
    from fusionrec.config import TrainConfig, load_config_file

    db_url = postgres.new_database("search")
    monkeypatch.setenv("FUSIONREC_STUDY_DB", db_url)  # the task subprocess inherits it (a Secret on a cluster)
    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset), "split_data": (split_dir, Dataset)}
    common = dict(cfg=as_params(TINY_SEARCH), base=as_params(TINY_TRAIN), study_name="run-1", workers=1,
                  shared_study=True)
    worker = run_component(search, inputs, trials_per_worker=1, **common)
    assert worker.metrics()["n_complete"] == 1
    summary = run_component(search, inputs, trials_per_worker=0, **common)  # reads the study the worker filled
    assert summary.metrics()["n_trials"] == 1
    assert read_json(summary.output("study") / "study" / "summary.json")["storage"] == db_url
    best = load_config_file(summary.output("study") / "study" / "best.yaml", TrainConfig)
    assert (best.text_encoder, best.image_encoder) == ("tfidf", "color")
    overlay = yaml.safe_load((summary.output("study") / "best_overlay.yaml").read_text())
    assert overlay == {}, "the only trial is the enqueued default: nothing to lay over train_cfg"
    assert summary.metrics()["overlay_fields"] == 0 and summary.metrics()["enabled"] == 1
    assert summary.output("report").read_text().lstrip().startswith("<")


def test_search_in_one_pod_runs_its_workers_on_a_study_of_its_own(run_component, ingested_dir: Path,
                                                                  features_dir: Path, split_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSIONREC_STUDY_DB", raising=False)
    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset), "split_data": (split_dir, Dataset)}
    task = run_component(search, inputs, cfg=as_params(TINY_SEARCH), base=as_params(TINY_TRAIN), study_name="one-pod",
                         trials_per_worker=1, workers=2, shared_study=False)
    assert task.metrics()["n_trials"] == 2, "two worker processes x one trial each"
    assert (task.output("study") / "study" / "study.db").is_file(), "the study lives in the task's own output"


def test_a_search_switched_off_writes_an_empty_overlay(run_component, ingested_dir: Path, features_dir: Path,
                                                      split_dir: Path) -> None:
    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset), "split_data": (split_dir, Dataset)}
    cfg = as_params(TINY_SEARCH.with_overrides(enabled=False))
    task = run_component(search, inputs, cfg=cfg, base=as_params(TINY_TRAIN), study_name="off", trials_per_worker=3,
                         workers=1, shared_study=False)
    assert yaml.safe_load((task.output("study") / "best_overlay.yaml").read_text()) == {}
    assert task.metrics()["enabled"] == 0 and task.metrics()["n_trials"] == 0
    assert not (task.output("study") / "study" / "study.db").exists(), "no trial ran"
    assert "search.enabled: false" in task.output("report").read_text()


def test_a_shared_search_without_its_database_fails_and_says_what_to_set(run_component, ingested_dir: Path,
                                                                         features_dir: Path, split_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FUSIONREC_STUDY_DB", raising=False)
    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset), "split_data": (split_dir, Dataset)}
    with pytest.raises(RuntimeError):
        run_component(search, inputs, cfg=as_params(TINY_SEARCH), base=as_params(TINY_TRAIN), study_name="x",
                      trials_per_worker=1, workers=1, shared_study=True)
    out = capfd.readouterr().out
    assert "FUSIONREC_STUDY_DB is empty" in out and "pipeline.study_secret" in out


def test_train(run_component, ingested_dir: Path, features_dir: Path, split_dir: Path, study_dir: Path) -> None:
    from fusionrec.models.recommender import Recommender

    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset),
              "split_data": (split_dir, Dataset), "study": (study_dir, Artifact)}
    task = run_component(train, inputs, cfg=as_params(TINY_TRAIN))
    rec = Recommender.load(task.output("model"))
    (model,) = task.executor_output()["artifacts"]["model"]["artifacts"]
    trained = model["metadata"]["train_config"]
    assert trained == {**TINY_TRAIN.model_dump(mode="json"), "dim": 8}, "train_cfg with the search's overlay laid over it"
    assert rec.n_items == len(pd.read_parquet(ingested_dir / "items.parquet"))
    assert rec.score_users(pd.Series([0, 1]).to_numpy()).shape == (2, rec.n_items)
    assert 0.0 <= task.metrics()["valid_ndcg@20"] <= 1.0


def test_evaluate_gate_promotes_only_a_model_as_good_as_the_champion(
        run_component, ingested_dir: Path, features_dir: Path, split_dir: Path, model_dir: Path) -> None:
    from fusionrec.io import read_json

    inputs = {"ingested": (ingested_dir, Dataset), "features": (features_dir, Dataset),
              "split_data": (split_dir, Dataset), "model": (model_dir, Model)}
    first = run_component(evaluate, inputs, cfg=as_params(TINY_EVALUATE), champion_metrics={})
    assert first.returned() is True, "with no champion the first model is promoted"
    metrics = read_json(first.output("evaluation") / "metrics.json")
    assert "mostpop" in metrics["baselines"] and 0.0 <= metrics["model"]["test"]["ndcg@20"] <= 1.0
    assert first.metrics()["promote"] == 1 and "ndcg@20" in first.metrics()
    assert first.metrics()["margin_ndcg@20"] == pytest.approx(
        metrics["model"]["test"]["ndcg@20"] - metrics["baselines"]["mostpop"]["test"]["ndcg@20"])
    comparison = first.output("comparison").read_text()  # the KFP UI renders it as Markdown
    assert comparison.startswith("**Promoted**") and "| model |" in comparison and "<pre>" not in comparison
    page = first.output("plots").read_text()
    assert page.count("data:image/png;base64,") == 2, "both plots embedded in the page the UI shows"

    strong = {"ndcg@20": 1.0, "recall@20": 1.0}  # a champion no model can match
    second = run_component(evaluate, inputs, cfg=as_params(TINY_EVALUATE), champion_metrics=strong)
    assert second.returned() is False
    assert read_json(second.output("evaluation") / "promotion.json")["promote"] is False


def _promotion(folder: Path, promote: bool) -> Path:
    """An evaluate output folder holding only the gate's verdict (all that `package` reads of it)."""
    from fusionrec.evaluation.gate import Decision

    folder.mkdir(parents=True)
    decision = Decision(promote, "test verdict", "ndcg@20", 0.1234, 0.1961, 0.005, {"ndcg@20": -0.0727})
    (folder / "promotion.json").write_text(json.dumps(decision.to_dict()))
    return folder


def test_package(run_component, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored, exported, and (the state's URL in the env, as the Secret gives it) the champion."""
    from fusionrec.config import PackageConfig
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))  # the task subprocess inherits them
    monkeypatch.setenv("FUSIONREC_FEEDBACK_URL", url)
    inputs = {"model": (model_dir, Model), "evaluation": (_promotion(tmp_path / "evaluation", True), Dataset)}
    task = run_component(package, inputs, cfg=as_params(PackageConfig(model_name="fusionrec-test")),
                         models_root=str(tmp_path / "models"), run_id="run-1")
    (exported,) = task.output("packaged").glob("fusionrec-test-*.bentomodel")  # survives the pod's store
    assert exported.stat().st_size > 0
    assert (tmp_path / "bentoml" / "models" / "fusionrec-test").is_dir()
    assert task.metrics()["n_files"] > 0 and task.metrics()["rolled_out"] == 1
    with FeedbackStore(url) as store:
        champion = ServingState(store).champion()
    assert champion is not None and champion.source == "kfp run run-1"
    assert Path(champion.uri).parent == (tmp_path / "models").resolve() and (Path(champion.uri) / "model.safetensors").is_file()


def test_package_refuses_a_rejected_model_unless_forced(run_component, model_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.config import PackageConfig

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.delenv("FUSIONREC_FEEDBACK_URL", raising=False)  # no state: the forced model is packaged only
    inputs = {"model": (model_dir, Model), "evaluation": (_promotion(tmp_path / "evaluation", False), Dataset)}
    cfg = as_params(PackageConfig(model_name="fusionrec-test"))
    with pytest.raises(RuntimeError):  # kfp.local: the task failed (PromotionRejected)
        run_component(package, inputs, cfg=cfg)
    assert not (tmp_path / "bentoml" / "models" / "fusionrec-test").exists()
    forced = run_component(package, inputs, cfg=cfg, force=True)
    assert list(forced.output("packaged").glob("fusionrec-test-*.bentomodel"))
    assert forced.metrics()["rolled_out"] == 0
    assert (tmp_path / "bentoml" / "models" / "fusionrec-test").is_dir()
