"""`fusionrec search` through Typer's CliRunner: a tiny real search and the errors people see."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fusionrec.cli import app
from fusionrec.config import TrainConfig, load_config_file

runner = CliRunner()


def _params(tmp_path: Path) -> Path:
    params = {
        "train": {"text_encoder": "tfidf", "image_encoder": "color", "dim": 16, "epochs": 2, "patience": 1,
                  "ease_blend": 0.0},
        "search": {"n_trials": 50, "space": {"dim": [16], "epochs": [1, 2], "ease_blend_auto": False,
                                             "ease_blend": [0.0, 0.0]}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_search_writes_the_overlay_that_train_lays_over(
    ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "search"
    args = ["search", "--data", str(ingested_dir), "--features", str(features_dir), "--split", str(split_dir),
            "--out", str(out), "--trials", "1", "--params", str(_params(tmp_path))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "n_trials=1" in result.stdout and "optuna-dashboard sqlite:///" in result.stdout
    best = load_config_file(out / "study" / "best.yaml", TrainConfig)
    assert best.text_encoder == "tfidf" and best.dim == 16  # the only trial is the default
    assert yaml.safe_load((out / "best_overlay.yaml").read_text()) == {}, "the default: nothing to lay over"
    assert json.loads((out / "metrics.json").read_text())["n_trials"] == 1
    again = runner.invoke(app, [*args[:-4], "--trials", "1", "--params", args[-1]])  # same --out: continues
    assert again.exit_code == 0, again.output
    assert "n_trials=2" in again.stdout
    assert again.stdout.strip().count("\n") == 0, "one summary line on stdout; progress goes to stderr"


def test_search_names_a_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "--data", str(tmp_path / "nope"), "--features", str(tmp_path),
                                 "--split", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nope" in result.output and "--data" in result.output


def test_search_reports_a_bad_params_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("search:\n  space:\n    lr: [0.0, 0.1]\n")
    result = runner.invoke(app, ["search", "--data", str(tmp_path), "--features", str(tmp_path),
                                 "--split", str(tmp_path), "--out", str(tmp_path / "o"), "--params", str(bad)])
    assert result.exit_code == 2
    assert "lr" in result.output and "log-scale" in result.output
