"""Retraining runs on the tiny demo: the record, the common holdout and the champion/challenger gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_synth import fake_kfp_client

from fusionrec.config import EvaluateConfig, MonitorConfig, Params


def _feedback(demo: Path, taste_model, ts0: float, n_per_user: int = 10, seed: int = 0) -> pd.DataFrame:  # noqa: ANN001
    """Clicks drawn from the demo's ground truth for every demo user."""
    rng = np.random.default_rng(seed)
    items = taste_model.item_ids
    rows = []
    for u in taste_model.user_ids:
        p = taste_model.click_prob(u, items)
        for item in rng.choice(items, n_per_user, replace=False, p=p / p.sum()):
            rows.append((str(u), str(item), "click", ts0 + len(rows)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event", "ts"])
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    return frame


def _sabotaged(model: Path, out: Path) -> Path:
    """A copy of the model whose item ids are shuffled: every score lands on the wrong item."""
    shutil.copytree(model, out)
    items = pd.read_parquet(out / "items.parquet")
    items["item_id"] = np.random.default_rng(3).permutation(items["item_id"].to_numpy())
    items.to_parquet(out / "items.parquet", index=False)
    return out


@pytest.fixture()
def data_copy(demo_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_dir, tmp_path / "data"))


PARAMS = Params(monitor=MonitorConfig(holdout_share=0.3), evaluate=EvaluateConfig(promote_tolerance=0.005))


def test_gate_rejects_a_worse_challenger(data_copy: Path, model_dir: Path, taste_model, tmp_path: Path) -> None:  # noqa: ANN001, F811
    from fusionrec.monitoring.retrain import retrain

    fb = _feedback(data_copy, taste_model, ts0=2e9)
    record = retrain(data_copy, fb, model_dir, tmp_path / "work", PARAMS, reason="test",
                     trainer=lambda _d, run, _p: _sabotaged(model_dir, run / "model"))
    assert record["merge"]["merged"] > 0
    assert record["decision"]["promote"] is False
    assert "worse" in record["decision"]["reason"]
    assert record["champion_metrics"]["ndcg@20"] > record["challenger_metrics"]["ndcg@20"]
    assert record["champion_metrics"]["holdout"] == record["challenger_metrics"]["holdout"]
    assert "promotion" not in record
    saved = json.loads((Path(record["run_dir"]) / "record.json").read_text())
    assert saved["reason"] == "test" and saved["data_fingerprint"]
    assert len((tmp_path / "work" / "runs.jsonl").read_text().splitlines()) == 1


def test_equal_challenger_is_promoted_and_packaged(data_copy: Path, model_dir: Path, taste_model, tmp_path: Path,  # noqa: ANN001, F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.store import BentoStore

    from fusionrec.monitoring.retrain import retrain

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    fb = _feedback(data_copy, taste_model, ts0=2e9, seed=1)
    record = retrain(data_copy, fb, model_dir, tmp_path / "work", PARAMS, model_store=BentoStore(),
                     trainer=lambda _d, run, _p: Path(shutil.copytree(model_dir, run / "model")))
    assert record["decision"]["promote"] is True
    assert record["promotion"].get("package", "").startswith("fusionrec:")
    # a second run on the same store merges nothing new and trains nothing
    again = retrain(data_copy, fb, model_dir, tmp_path / "work", PARAMS,
                    trainer=lambda *_: pytest.fail("nothing new to train on"))
    assert again["merge"]["new_events"] == 0
    assert again["decision"]["promote"] is False


def _interaction_pairs(data_dir: Path) -> set[tuple[str, str]]:
    inter = pd.read_csv(data_dir / "interactions.csv", dtype=str)
    return set(zip(inter["user_id"], inter["item_id"], strict=True))


def test_a_promoted_recipe_is_refit_on_all_the_data_and_the_refit_ships(
        data_copy: Path, model_dir: Path, taste_model, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """The holdout judges the challenger; the model that ships has also learnt from the holdout."""
    from fusionrec.monitoring.retrain import retrain

    calls: list[tuple[Path, Path, Params]] = []

    def trainer(data: Path, run: Path, params: Params) -> Path:
        calls.append((Path(data), Path(run), params))
        return Path(shutil.copytree(model_dir, run / "model"))

    fb = _feedback(data_copy, taste_model, ts0=2e9, seed=4)
    params = PARAMS.model_copy(update={"monitor": PARAMS.monitor.with_overrides(models_root=str(tmp_path / "models"))})
    record = retrain(data_copy, fb, model_dir, tmp_path / "work", params, trainer=trainer)
    assert record["decision"]["promote"] is True and len(calls) == 2
    run_dir = Path(record["run_dir"])
    holdout = pd.read_parquet(run_dir / "holdout.parquet")
    held = set(zip(holdout["user_id"].astype(str), holdout["item_id"].astype(str), strict=True))
    (chal_data, _, _), (refit_data, refit_run, refit_params) = calls
    assert held and not held & _interaction_pairs(chal_data)  # the gated challenger never saw the holdout
    assert held <= _interaction_pairs(refit_data) and refit_data == data_copy  # the refit trains on all of it
    assert refit_run == run_dir / "refit"
    saved = json.loads((Path(record["challenger_dir"]) / "config.json").read_text())["train_config"]
    assert refit_params.train.model_dump(mode="json") == saved  # the gated recipe, with no second search
    assert refit_params.search.enabled is False
    assert refit_params.featurize.cache_dir == str(run_dir / ".feature-cache")  # the challenger's vectors
    shipped = Path(record["promoted_dir"])
    assert shipped == refit_run / "model" and record["refit"]["model_dir"] == str(shipped)
    assert json.loads((shipped / "holdout_metrics.json").read_text()) == record["challenger_metrics"]
    assert record["refit"]["valid_metrics"] is not None


def test_without_refit_or_when_it_fails_the_gated_challenger_ships(
        data_copy: Path, model_dir: Path, taste_model, tmp_path: Path) -> None:  # noqa: ANN001, F811
    from fusionrec.monitoring.retrain import retrain

    fb = _feedback(data_copy, taste_model, ts0=2e9, seed=5)
    off = PARAMS.model_copy(update={"monitor": PARAMS.monitor.with_overrides(refit=False)})
    runs: list[Path] = []
    record = retrain(data_copy, fb, model_dir, tmp_path / "work", off,
                     trainer=lambda _d, run, _p: runs.append(run) or Path(shutil.copytree(model_dir, run / "model")))
    assert record["decision"]["promote"] is True and len(runs) == 1 and "refit" not in record
    assert record["promoted_dir"] == record["challenger_dir"]

    def failing_refit(_d: Path, run: Path, _p: Params) -> Path:
        if run.name == "refit":
            raise MemoryError("out of memory")
        return Path(shutil.copytree(model_dir, run / "model"))

    fb2 = _feedback(data_copy, taste_model, ts0=3e9, seed=6).assign(id=lambda f: f["id"] + len(fb))
    record = retrain(data_copy, pd.concat([fb, fb2], ignore_index=True), model_dir, tmp_path / "work2", PARAMS,
                     trainer=failing_refit)
    assert record["decision"]["promote"] is True
    assert "MemoryError: out of memory" in record["refit"]["error"]
    assert record["promoted_dir"] == record["challenger_dir"]


def test_too_small_a_holdout_trains_nothing_and_says_why(data_copy: Path, model_dir: Path, taste_model,  # noqa: ANN001, F811
                                                          tmp_path: Path) -> None:
    from fusionrec.monitoring.retrain import retrain

    fb = _feedback(data_copy, taste_model, ts0=2e9, n_per_user=2)
    params = PARAMS.model_copy(update={"monitor": PARAMS.monitor.with_overrides(min_holdout=len(fb))})
    record = retrain(data_copy, fb, model_dir, tmp_path / "work", params,
                     trainer=lambda *_: pytest.fail("a holdout this small cannot gate a challenger"))
    assert record["merge"]["merged"] > 0 and record["decision"]["promote"] is False
    assert "monitor.min_holdout" in record["decision"]["reason"]


def test_challenger_params_lay_the_retrain_settings_over() -> None:
    from fusionrec.monitoring.retrain import challenger_params

    params = Params(monitor=MonitorConfig(retrain_split="temporal-loo", retrain_half_life=5.0))
    chal = challenger_params(params)
    assert chal.split.protocol == "temporal-loo" and chal.train.recency_half_life == 5.0
    assert params.split.protocol == "random-811" and params.train.recency_half_life == 0.0
    same = challenger_params(Params(monitor=MonitorConfig(retrain_split="", retrain_half_life=0.0)))
    assert same == Params(monitor=MonitorConfig(retrain_split="", retrain_half_life=0.0))


def test_a_run_publishes_under_an_object_store_root_only() -> None:
    """A path of the monitor's machine is not a path in the pipeline's pods: their default stands."""
    from fusionrec.monitoring.retrain import kfp_arguments

    def root(models_root: str) -> str | None:
        params = Params(monitor=MonitorConfig(models_root=models_root))
        return kfp_arguments("s3://b/data", {}, params).get("models_root")

    assert root("gs://models/fusionrec") == "gs://models/fusionrec"
    assert root("/models") is None and root("file:///srv/models") is None and root("") is None


def test_kfp_trigger_hands_the_challengers_settings_to_the_submitter(data_copy: Path, taste_model,  # noqa: ANN001
                                                                      tmp_path: Path) -> None:
    from fusionrec.monitoring.retrain import challenger_params, retrain

    submitted: list[dict] = []

    def submitter(arguments: dict) -> dict[str, str]:
        submitted.append(arguments)
        return {"kind": "run", "id": "run-7", "host": "http://kfp.example:8888"}

    fb = _feedback(data_copy, taste_model, ts0=2e9)
    record = retrain(data_copy, fb, None, tmp_path / "work", PARAMS, trigger="kfp", data_uri="s3://b/data",
                     submitter=submitter, trainer=lambda *_: pytest.fail("the cluster trains, not this process"))
    assert record["kfp"] == {"kind": "run", "id": "run-7", "host": "http://kfp.example:8888"}
    (arguments,) = submitted
    assert arguments["data_uri"] == "s3://b/data" and arguments["champion_metrics"] == {}
    assert "models_root" not in arguments, "no object-store root: the pipeline's own default stands"
    challenger = challenger_params(PARAMS)
    assert arguments["split_cfg"] == challenger.split.model_dump(mode="json")
    assert arguments["train_cfg"] == challenger.train.model_dump(mode="json")
    assert record["decision"]["promote"] is None and record["merge"]["merged"] > 0


def test_kfp_trigger_without_a_submitter_changes_nothing(data_copy: Path, model_dir: Path, taste_model,  # noqa: ANN001, F811
                                                         tmp_path: Path) -> None:
    from fusionrec.monitoring.merge import read_watermark
    from fusionrec.monitoring.retrain import RetrainError, retrain

    fb = _feedback(data_copy, taste_model, ts0=2e9)
    with pytest.raises(RetrainError, match="submitter"):
        retrain(data_copy, fb, model_dir, tmp_path / "work", PARAMS, trigger="kfp")
    assert read_watermark(data_copy) == 0 and not (tmp_path / "work").exists()


def _store_with(feedback: pd.DataFrame, path: Path) -> str:
    from fusionrec.monitoring.store import FeedbackStore

    url = f"sqlite:///{path}"
    with FeedbackStore(url) as fs:
        for row in feedback.itertuples():
            fs.append_feedback(row.user_id, row.item_id, row.event, ts=row.ts)
    return url


def test_cli_kfp_trigger_submits_through_the_pipelines_adapter(data_copy: Path, taste_model, tmp_path: Path,  # noqa: ANN001
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp
    from typer.testing import CliRunner

    from fusionrec.cli import app
    from fusionrec.monitoring.merge import read_watermark

    submitted: list[dict] = []

    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    monkeypatch.setattr(kfp, "Client", fake_kfp_client(submitted))
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    monkeypatch.delenv("FUSIONREC_FEEDBACK_URL", raising=False)  # as in the CronJob: the state is the --store's
    package = tmp_path / "training.yaml"
    params = tmp_path / "params.yaml"
    params.write_text(f"monitor: {{pipeline_package: {package}, models_root: 's3://models/fusionrec'}}\n")
    feedback = _feedback(data_copy, taste_model, ts0=2e9, n_per_user=2)
    url = _store_with(feedback, tmp_path / "fb.db")
    with FeedbackStore(url) as store:  # an item added while serving, and a click on it
        ServingState(store).add_item("fresh-item", title="Fresh", text="a fresh red scarf")
        store.append_feedback(str(taste_model.user_ids[0]), "fresh-item", "click", ts=2e9 + len(feedback))
    argv = ["retrain", "--store", url, "--data", str(data_copy), "--work", str(tmp_path / "work"), "--trigger", "kfp",
            "--kfp-host", "http://kfp.example:8888", "--data-uri", "s3://bucket/data", "--params", str(params)]
    missing = CliRunner().invoke(app, argv)  # no compiled pipeline yet: fails before merging anything
    assert missing.exit_code == 1 and "fusionrec pipeline compile" in missing.output
    assert read_watermark(data_copy) == 0 and not submitted
    package.write_text("pipelineSpec: {}\n")
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    (call,) = submitted
    assert call["host"] == "http://kfp.example:8888" and call["package"] == str(package)
    assert call["experiment"] == "fusionrec-retrain" and call["arguments"]["data_uri"] == "s3://bucket/data"
    assert call["arguments"]["models_root"] == "s3://models/fusionrec", "the run publishes where the monitor says"
    assert read_watermark(data_copy) > 0
    (line,) = (tmp_path / "work" / "runs.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["kfp"]["id"] == "run-123"
    assert record["merge"]["items_added"] == 1 and "unknown_item" not in record["merge"]["dropped"]
    assert "fresh-item" in set(pd.read_csv(data_copy / "items.csv", dtype=str)["item_id"])


@pytest.mark.parametrize("given", ["argument", "env"])
def test_promotion_publishes_the_model_and_moves_the_champion_pointer(  # noqa: ANN001
        data_copy: Path, model_dir: Path, taste_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        given: str) -> None:
    """The shared state brings the items added while serving (and their feedback) into the merge, and
    a promotion copies the challenger under monitor.models_root and moves the pointer every replica follows."""
    from fusionrec.monitoring.retrain import retrain
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    fb = _feedback(data_copy, taste_model, ts0=2e9, seed=2)
    extra = pd.DataFrame({"id": len(fb) + np.arange(1, 6), "user_id": [str(u) for u in taste_model.user_ids[:5]],
                          "item_id": "fresh-item", "event": "click", "ts": 2e9 + len(fb) + np.arange(5)})
    fb = pd.concat([fb, extra], ignore_index=True)
    params = PARAMS.model_copy(update={"monitor": PARAMS.monitor.with_overrides(models_root=str(tmp_path / "models"))})
    with FeedbackStore(url) as store:
        state = ServingState(store)
        state.add_item("fresh-item", title="Fresh", text="a fresh red scarf")
        if given == "env":
            monkeypatch.setenv("FUSIONREC_FEEDBACK_URL", url)
        record = retrain(data_copy, fb, model_dir, tmp_path / "work", params,
                         trainer=lambda _d, run, _p: Path(shutil.copytree(model_dir, run / "model")),
                         state=state if given == "argument" else None)
        champ = state.champion()
    assert record["decision"]["promote"] is True and champ is not None
    assert record["promotion"]["champion"] == champ.to_dict() and champ.source == record["run_dir"]
    published = Path(champ.uri)
    assert published.parent == (tmp_path / "models").resolve()
    assert (published / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert record["merge"]["items_added"] == 1 and "unknown_item" not in record["merge"]["dropped"]
    items = pd.read_csv(data_copy / "items.csv", dtype=str)
    assert "fresh-item" in set(items["item_id"])
    inter = pd.read_csv(data_copy / "interactions.csv", dtype=str)
    assert (inter["item_id"] == "fresh-item").sum() == 5  # its feedback was merged, not skipped


def test_a_dataset_without_timestamps_retrains_with_the_real_steps(data_copy: Path, model_dir: Path, taste_model,  # noqa: ANN001, F811
                                                                   tmp_path: Path) -> None:
    """Merge, holdout, ingest, split, featurize, train and gate on a log that never had a time column."""
    from tests.serving.serving_fixtures import TINY_FEATURES, TINY_TRAIN

    from fusionrec.monitoring.retrain import retrain

    inter = pd.read_csv(data_copy / "interactions.csv")
    inter.drop(columns=[c for c in ("timestamp", "hour") if c in inter.columns]).to_csv(
        data_copy / "interactions.csv", index=False)
    params = PARAMS.model_copy(update={"featurize": TINY_FEATURES, "train": TINY_TRAIN,
                                       "search": PARAMS.search.with_overrides(enabled=False),
                                       "monitor": PARAMS.monitor.with_overrides(refit=False)})
    record = retrain(data_copy, _feedback(data_copy, taste_model, ts0=2e9, seed=5), model_dir, tmp_path / "work",
                     params)
    assert record["merge"]["merged"] == 800 and record["merge"]["duplicates"] == 0  # re-clicks move their pairs
    assert record["challenger_metrics"]["ndcg@20"] > 0 and "decision" in record
    assert "timestamp" not in pd.read_csv(data_copy / "interactions.csv", nrows=1).columns
