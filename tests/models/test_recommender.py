"""The recommender on the hand-built colour world: it learns, it folds in, it round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from tests.models.model_samples import FAST, cold_items, colour_data, colour_of_items, features, user_colours

from fusionrec.evaluation.metrics import evaluate_scores
from fusionrec.models.recommender import ModelLoadError, Recommender
from fusionrec.training import TrainResult, train


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train(colour_data(), FAST)


def test_loss_falls_and_train_items_are_recalled(trained: TrainResult) -> None:
    losses = [row["loss_main"] for row in trained.history]
    assert losses[-1] < losses[0] * 0.9
    data = colour_data()
    empty = sp.csr_matrix(data.train_matrix.shape)
    train_recall = evaluate_scores(trained.recommender.score_users, empty, data.train_matrix, ks=(10,))
    assert train_recall["recall@10"] > 0.8  # 8 train items among 18 warm items of the colour


def test_valid_metrics_beat_random(trained: TrainResult) -> None:
    # a user's 2 valid items hide among ~54 unseen items, 10 of them of the user's colour
    assert trained.valid_metrics["recall@10"] > 0.5
    assert trained.best_epoch >= 1 and len(trained.history) >= trained.best_epoch


def test_fold_in_of_a_one_colour_history_recommends_that_colour(trained: TrainResult) -> None:
    rec = trained.recommender
    colour = colour_of_items()
    history = np.flatnonzero(colour == 2)[:3]
    scores = rec.score_histories([history])[0]
    scores[history] = -np.inf
    top = np.argsort(-scores)[:5]
    assert (colour[top] == 2).all()


def test_empty_history_gets_popularity(trained: TrainResult) -> None:
    rec = trained.recommender
    scores = rec.score_histories([np.zeros(0, np.int64)])[0]
    assert np.argmax(scores) == np.argmax(rec.popularity())


def test_cold_items_are_ranked_by_content(trained: TrainResult) -> None:
    rec = trained.recommender
    cold = cold_items()
    scores = rec.score_users(np.arange(rec.n_users))[:, cold]  # (U, 6)
    own = colour_of_items()[cold][None, :] == user_colours()[:, None]
    # AUC of "the user's colour" among the cold items: random is 0.5
    pos, neg = scores[own].reshape(rec.n_users, -1), scores[~own].reshape(rec.n_users, -1)
    auc = (pos[:, :, None] > neg[:, None, :]).mean()
    assert auc > 0.8


def test_new_item_copying_a_known_item_lands_next_to_it(trained: TrainResult) -> None:
    rec = trained.recommender
    feats = features()
    j = 3
    new = rec.encode_new_items({k: v[[j]] for k, (v, _) in feats.items()},
                               {k: m[[j]] for k, (_, m) in feats.items()})  # (1, D)
    sims = rec.item_vectors() @ new[0]
    assert j in np.argsort(-sims)[:5]
    assert colour_of_items()[np.argsort(-sims)[:5]].tolist().count(colour_of_items()[j]) == 5


def test_add_items_are_scorable_at_once(trained: TrainResult, tmp_path: Path) -> None:
    rec = Recommender.load(trained.recommender.save(tmp_path / "m"))
    feats = features()
    idx = rec.add_items(["fresh"], {k: v[[0]] for k, (v, _) in feats.items()}, {k: m[[0]] for k, (_, m) in feats.items()})
    assert idx.tolist() == [rec.n_items - 1] and rec.item_index("fresh") == idx[0]
    scores = rec.score_users(np.arange(rec.n_users))
    assert scores.shape == (rec.n_users, rec.n_items) and np.isfinite(scores).all()
    red_fans = user_colours() == 0
    assert scores[red_fans, idx[0]].mean() > scores[~red_fans, idx[0]].mean()
    with pytest.raises(ValueError, match="already"):
        rec.add_items(["fresh"], {k: v[[0]] for k, (v, _) in feats.items()}, {})


def test_save_load_round_trip_gives_identical_scores(trained: TrainResult, tmp_path: Path) -> None:
    rec = trained.recommender
    loaded = Recommender.load(rec.save(tmp_path / "model"))
    users = np.arange(rec.n_users)
    assert np.array_equal(rec.score_users(users), loaded.score_users(users))
    hist = [np.array([1, 2]), np.array([30])]
    assert np.array_equal(rec.score_histories(hist), loaded.score_histories(hist))
    assert np.array_equal(rec.item_vectors(), loaded.item_vectors())
    assert loaded.item_ids == rec.item_ids and loaded.user_ids == rec.user_ids
    assert loaded.meta["ease_blend"] == rec.ease_blend and loaded.config == rec.config
    assert sorted(loaded.modality_vectors()) == sorted(rec.modalities)
    assert set(loaded.seen(0)) >= set(colour_data().train_matrix[0].indices)
    assert not list((tmp_path / "model").glob("*.pkl"))


def test_load_of_a_folder_that_is_not_a_model_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        Recommender.load(tmp_path)


def test_a_model_saved_with_a_setting_this_version_lacks_still_loads(trained: TrainResult, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import json

    trained.recommender.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    saved = json.loads(cfg_path.read_text())
    saved["train_config"]["from_a_newer_version"] = 1.0
    cfg_path.write_text(json.dumps(saved))
    with caplog.at_level("WARNING"):
        again = Recommender.load(tmp_path / "m")
    assert "from_a_newer_version" in caplog.text
    users = np.arange(3)
    assert np.allclose(again.score_users(users), trained.recommender.score_users(users), atol=1e-6)
