"""`fusionrec evaluate` through Typer's CliRunner: a trained model vs baselines, the gate, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusionrec.cli import app

runner = CliRunner()


def _invoke(*args: object):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    from fusionrec.config import TrainConfig
    from fusionrec.training import run_train

    out = tmp_path_factory.mktemp("model") / "model"
    cfg = TrainConfig(text_encoder="tfidf", image_encoder="color", epochs=2, dim=16, n_layers=1)
    run_train(ingested_dir, features_dir, split_dir, out, cfg)
    return out


def test_evaluate_model_against_baselines_and_gate(ingested_dir: Path, features_dir: Path, split_dir: Path,
                                                   model_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["evaluate", "--data", ingested_dir, "--features", features_dir, "--split", split_dir,
            "--model", model_dir, "--baselines", "mostpop,ease,content-knn", "--params", tmp_path / "none.yaml"]
    res = _invoke(*args, "--out", first)
    assert res.exit_code == 0, res.output
    assert "promote: True (no champion yet" in res.output
    metrics = json.loads((first / "metrics.json").read_text())
    assert set(metrics) == {"model", "baselines"} and set(metrics["baselines"]) == {"mostpop", "ease", "content-knn"}
    assert "| model |" in (first / "comparison.md").read_text()

    res = _invoke(*args, "--out", second, "--champion", first)  # same model, same holdout: within tolerance
    assert res.exit_code == 0, res.output
    decision = json.loads((second / "promotion.json").read_text())
    assert decision["promote"] and decision["deltas"]["ndcg@20"] == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_exit_with_a_message(ingested_dir: Path, split_dir: Path, tmp_path: Path) -> None:
    base = ["evaluate", "--data", ingested_dir, "--out", tmp_path / "out", "--params", tmp_path / "none.yaml"]
    res = _invoke(*base, "--split", tmp_path / "missing")
    assert res.exit_code == 1 and "evaluate failed" in res.output
    res = _invoke(*base, "--split", split_dir, "--baselines", "mostpop,nope")
    assert res.exit_code == 1 and "unknown baseline 'nope'" in res.output
    res = _invoke(*base, "--split", split_dir, "--model", tmp_path / "nomodel", "--baselines", "")
    assert res.exit_code == 1 and "not a model folder" in res.output
