"""`fusionrec train` and `fusionrec recommend` through Typer's CliRunner on the tiny demo."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fusionrec.cli import app
from fusionrec.config import TrainConfig, dump_config

runner = CliRunner()
HELD_OUT = 5  # catalogue items removed from the training part: never trained, still rankable


@pytest.fixture(scope="module")
def external_split(split_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The demo split as external CSVs (original ids), with a few items taken out of train."""
    out = tmp_path_factory.mktemp("ext-split")
    parts = {p: pd.read_parquet(split_dir / f"{p}.parquet") for p in ("train", "valid", "test")}
    held = parts["train"]["item_id"].value_counts().index[-HELD_OUT:].tolist()
    parts["train"] = parts["train"][~parts["train"]["item_id"].isin(held)]
    for name, frame in parts.items():
        frame[["user_id", "item_id", "timestamp"]].to_csv(out / f"{name}.csv", index=False)
    return out, held


@pytest.fixture(scope="module")
def model_dir(ingested_dir: Path, features_dir: Path, external_split: tuple[Path, list[str]],  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("train-cli")
    cfg = tmp / "best.yaml"
    dump_config(TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, epochs=3, batch_size=32), cfg)
    res = runner.invoke(app, ["train", "--data", str(ingested_dir), "--features", str(features_dir),
                              "--split", str(external_split[0]), "--config", str(cfg), "--out", str(tmp / "model")])
    assert res.exit_code == 0, res.output
    assert "valid_ndcg@20" in res.output
    return tmp / "model"


def test_train_writes_the_model_contract(model_dir: Path) -> None:
    for name in ("model.safetensors", "config.json", "items.parquet", "users.parquet"):
        assert (model_dir / name).is_file()


def test_recommend_respects_exclusions_and_candidates(model_dir: Path, external_split: tuple[Path, list[str]],
                                                      tmp_path: Path) -> None:
    split, held = external_split
    train = pd.read_csv(split / "train.csv", dtype=str)
    users = train["user_id"].drop_duplicates().head(20).tolist() + ["nobody-knows-me"]
    pd.DataFrame({"user_id": users}).to_csv(tmp_path / "users.csv", index=False)
    trained_items = train["item_id"].value_counts().index[:5].tolist()
    pd.DataFrame({"item_id": held + trained_items}).to_csv(tmp_path / "cand.csv", index=False)
    res = runner.invoke(app, ["recommend", "--model", str(model_dir), "--users", str(tmp_path / "users.csv"),
                              "--k", "8", "--exclude", str(split / "train.csv"), "--exclude", str(split / "valid.csv"),
                              "--candidates", str(tmp_path / "cand.csv"), "--out", str(tmp_path / "recs.csv")])
    assert res.exit_code == 0, res.output
    recs = pd.read_csv(tmp_path / "recs.csv", dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
    assert set(recs["user_id"]) == set(users)
    assert set(recs["item_id"]) <= set(held + trained_items)
    assert set(held) <= set(recs["item_id"])  # never-trained candidates are ranked, not dropped
    excluded = set(zip(train["user_id"], train["item_id"], strict=True))
    assert not excluded & set(zip(recs["user_id"], recs["item_id"], strict=True))
    for _, g in recs.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert g["score"].is_monotonic_decreasing


def test_recommend_names_unknown_candidates(model_dir: Path, tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["x"]}).to_csv(tmp_path / "users.csv", index=False)
    pd.DataFrame({"item_id": ["no-such-item"]}).to_csv(tmp_path / "cand.csv", index=False)
    res = runner.invoke(app, ["recommend", "--model", str(model_dir), "--users", str(tmp_path / "users.csv"),
                              "--candidates", str(tmp_path / "cand.csv"), "--out", str(tmp_path / "r.csv")])
    assert res.exit_code == 1 and "no-such-item" in res.output


def test_train_with_a_bad_config_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("dimm: 3\n")
    res = runner.invoke(app, ["train", "--data", str(tmp_path), "--features", str(tmp_path), "--split",
                              str(tmp_path), "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "dimm" in res.output
