"""Training: the callback hook, early stopping, determinism, every loss and fusion, run_train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.models.model_samples import FAST, colour_data

from fusionrec.config import TrainConfig
from fusionrec.training import TrainData, run_train, train

QUICK = FAST.with_overrides(epochs=3, patience=3)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


class Stop(Exception):
    pass


def test_callback_sees_every_epoch_and_its_exception_propagates() -> None:
    seen: list[tuple[int, float]] = []

    def callback(epoch: int, metrics: dict[str, float]) -> None:
        seen.append((epoch, metrics["ndcg@20"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(colour_data(), QUICK.with_overrides(epochs=5), callback)
    assert [e for e, _ in seen] == [1, 2] and all(0 <= v <= 1 for _, v in seen)


def test_early_stopping_keeps_the_best_epoch() -> None:
    result = train(colour_data(), FAST.with_overrides(epochs=40, patience=2, lr=0.1))
    ndcgs = [row["ndcg@20"] for row in result.history]
    assert result.history[result.best_epoch - 1]["ndcg@20"] == max(ndcgs)
    assert len(ndcgs) - result.best_epoch <= 2


def test_same_seed_same_model() -> None:
    a = train(colour_data(), QUICK).recommender
    b = train(colour_data(), QUICK).recommender
    users = np.arange(a.n_users)
    assert np.array_equal(a.score_users(users), b.score_users(users))


@pytest.mark.parametrize("overrides", [
    {"fusion": "attention", "loss": "bpr", "n_negatives": 4, "contrastive_weight": 0.1},
    {"fusion": "concat", "loss": "sampled_softmax", "n_negatives": 16, "proj_hidden": 8, "n_layers": 0},
    {"fusion": "mean", "context_columns": ["hour"], "knn_k": 0, "cold_tower": False, "ease_blend": 0.0},
    {"text_encoder": "none", "image_encoder": "none", "fusion": "gated", "ease_blend": 0.5},
])
def test_every_loss_and_fusion_trains(overrides: dict) -> None:
    rec = train(colour_data(), QUICK.with_overrides(**overrides)).recommender
    scores = rec.score_users(np.arange(rec.n_users))
    assert scores.shape == (rec.n_users, rec.n_items) and np.isfinite(scores).all()
    if overrides.get("context_columns"):
        ctx = rec.score_users(np.array([0, 1]), context=__import__("pandas").DataFrame({"hour": [3, 20]}))
        assert np.isfinite(ctx).all()


def test_missing_features_are_named() -> None:
    with pytest.raises(ValueError, match=r"text:minilm"):
        train(colour_data(), QUICK.with_overrides(text_encoder="minilm"))


def test_run_train_writes_a_model_folder(ingested_dir: Path, features_dir: Path,  # noqa: F811
                                         split_dir: Path, taste_model, tmp_path: Path) -> None:
    from fusionrec.models.recommender import Recommender

    cfg = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=32, epochs=15, patience=4, batch_size=32)
    result = run_train(ingested_dir, features_dir, split_dir, tmp_path / "model", cfg)
    assert {"valid_ndcg@20", "test_ndcg@20", "best_epoch", "ease_blend"} <= set(result.metrics)
    rec = Recommender.load(tmp_path / "model")
    assert rec.meta["data_fingerprint"] == TrainData.from_dirs(ingested_dir, features_dir, split_dir).fingerprint
    assert (tmp_path / "model" / "history.json").is_file()
    # behaviour on the demo: a history of one colour brings more of that colour than the catalogue has
    for colour in ("red", "blue"):
        ids = set(taste_model.items_with(colour=colour).tolist())
        idx = np.array([i for i in range(rec.n_items) if rec.item_ids[i] in ids])
        if len(idx) < 8:
            continue
        scores = rec.score_histories([idx[:5]])[0]
        scores[idx[:5]] = -np.inf
        top = np.argsort(-scores)[:10]
        share = np.mean([rec.item_ids[i] in ids for i in top])
        assert share > 1.5 * len(idx) / rec.n_items, colour
