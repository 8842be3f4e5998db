"""Training: the callback hook, early stopping, determinism, every loss and fusion, run_train."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.models.model_samples import FAST, colour_data

from fusionrec.config import TrainConfig
from fusionrec.data.train_data import TrainData
from fusionrec.training import run_train, train

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


def _shifted_data() -> tuple[TrainData, np.ndarray]:
    """colour_data plus, for the colour-0 users, four newest interactions with colour-1 items."""
    import pandas as pd
    from tests.models.model_samples import cold_items, colour_of_items, user_colours

    from fusionrec import schema

    data = colour_data()
    old = data.train.assign(**{schema.TIMESTAMP: data.train.groupby(schema.USER_IDX).cumcount()})
    rng = np.random.default_rng(5)
    pool = np.setdiff1d(np.flatnonzero(colour_of_items() == 1), cold_items())
    shifted = np.flatnonzero(user_colours() == 0)
    new = pd.DataFrame([(u, int(i), 0, 100 + n) for u in shifted for n, i in enumerate(rng.choice(pool, 4, replace=False))],
                       columns=[schema.USER_IDX, schema.ITEM_IDX, "hour", schema.TIMESTAMP])
    data.train = pd.concat([old, new], ignore_index=True)
    return data, shifted


def test_recency_matrix_weighs_each_users_newer_interactions() -> None:
    data, shifted = _shifted_data()
    assert (data.recency_matrix(0).data == 1.0).all()
    m = data.recency_matrix(2.0)
    row = m[shifted[0]].toarray().ravel()
    weights = np.sort(row[row > 0])[::-1]  # 12 interactions: newest 1, then 0.5^(1/2), ...
    assert np.allclose(weights, 0.5 ** (np.arange(12) / 2.0))


def test_recency_half_life_lets_a_recent_taste_outvote_a_long_history(tmp_path: Path) -> None:
    """Users with 8 old colour-0 and 4 new colour-1 interactions: weighting by recency brings colour 1 up."""
    from tests.models.model_samples import colour_of_items

    from fusionrec.models.recommender import Recommender

    data, shifted = _shifted_data()
    colour = colour_of_items()

    def colour1_share(rec: Recommender) -> float:
        scores = rec.score_users(shifted)
        for r, u in enumerate(shifted):
            scores[r, rec.seen(int(u))] = -np.inf
        return float((colour[np.argsort(-scores, axis=1)[:, :5]] == 1).mean())

    cfg = QUICK.with_overrides(epochs=8, patience=8, ease_blend=0.5)
    plain = train(data, cfg).recommender
    recent = train(data, cfg.with_overrides(recency_half_life=2.0)).recommender
    assert colour1_share(recent) > colour1_share(plain) + 0.2
    # the weighted history EASE reads is saved with the model
    recent.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    assert np.allclose(again.score_users(shifted), recent.score_users(shifted), atol=1e-5)
    assert "hist_data" in again.arrays and "hist_data" not in plain.arrays


def test_negative_events_train_as_negatives_never_as_positives(demo_dir: Path, features_dir: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    """A dislike merged from feedback is not a positive target, and the model never offers that item again."""
    import shutil

    import pandas as pd

    from fusionrec.config import IngestConfig, SplitConfig
    from fusionrec.steps import run_ingest, run_split

    data = Path(shutil.copytree(demo_dir, tmp_path / "data"))
    inter = pd.read_csv(data / "interactions.csv", dtype={"user_id": str, "item_id": str})
    user = inter["user_id"].value_counts().index[0]
    mine = set(inter.loc[inter["user_id"] == user, "item_id"])
    disliked = [i for i in sorted(set(inter["item_id"])) if i not in mine][:5]
    ts = int(inter["timestamp"].max()) + 1
    extra = pd.DataFrame({"user_id": user, "item_id": disliked, "timestamp": ts, "event": "dislike"})
    pd.concat([inter, extra.reindex(columns=inter.columns)], ignore_index=True).to_csv(data / "interactions.csv", index=False)
    run_ingest(data, tmp_path / "ingested", IngestConfig())
    run_split(tmp_path / "ingested", tmp_path / "split", SplitConfig(protocol="temporal-loo"))
    td = TrainData.from_dirs(tmp_path / "ingested", features_dir, tmp_path / "split")
    u = td.user_ids.index(user)
    cols = [td.item_ids.index(i) for i in disliked]
    assert td.train_matrix[u, cols].sum() == 0  # never positives
    assert td.negatives is not None and len(td.negatives) == 5
    neg = td.negative_matrix()
    assert neg is not None and neg[u, cols].sum() == 5
    cfg = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, epochs=2, patience=2)
    rec = train(td, cfg).recommender
    assert set(cols) <= set(rec.seen(u).tolist())  # a disliked item is not recommended again


def _recent_taste_valid() -> tuple[TrainData, np.ndarray]:
    """_shifted_data whose shifted users' validation rows are colour-1 items too (the new taste goes on)."""
    import scipy.sparse as sp
    from tests.models.model_samples import cold_items, colour_of_items

    data, shifted = _shifted_data()
    valid = sp.lil_matrix(data.valid)
    train = data.train_matrix
    pool = np.setdiff1d(np.flatnonzero(colour_of_items() == 1), cold_items())
    for u in shifted:
        valid.rows[u], valid.data[u] = [], []
        for i in np.setdiff1d(pool, train[u].indices)[:2]:
            valid[u, i] = 1.0
    data.valid = sp.csr_matrix(valid)
    return data, shifted


def test_recency_probe_turns_recency_on_only_where_validation_shows_the_newest_taste() -> None:
    from fusionrec.models.recency import choose_recency

    cfg = QUICK.with_overrides(recency_choices=[2.0])
    assert isinstance(cfg, TrainConfig)
    half_life, probe = choose_recency(_recent_taste_valid()[0], cfg)
    assert half_life == 2.0 and probe["2"] > probe["0"]
    sparse = cfg.with_overrides(ease_max_items=10, ease_head_items=20)  # above ease_max_items: the sparse EASE probes
    assert choose_recency(_recent_taste_valid()[0], sparse)[0] == 2.0  # type: ignore[arg-type]
    half_life, probe = choose_recency(colour_data(), cfg)  # validation drawn from the same taste as train
    assert half_life == 0.0 and set(probe) == {"0", "2"}
    # a half-life set in the config, or no choices, is kept without probing
    assert choose_recency(colour_data(), cfg.with_overrides(recency_half_life=3.0)) == (3.0, {})  # type: ignore[arg-type]
    assert choose_recency(colour_data(), QUICK.with_overrides(recency_choices=[])) == (0.0, {})  # type: ignore[arg-type]


def test_batches_sharing_a_step_take_the_step_of_one_batch_of_all_their_rows() -> None:
    import torch

    import fusionrec.training as T
    from fusionrec.models.objective import Batch

    data = colour_data()
    cfg = QUICK.with_overrides(modality_dropout=0.0, id_dropout=0.0, batch_size=8)  # a deterministic forward pass
    assert isinstance(cfg, TrainConfig)
    b = list(T.iter_batches(data, cfg, None, data.train_matrix, np.random.default_rng(0)))[:3]
    assert b[2].targets is not None
    batches = [b[0], b[1], Batch(users=b[2].users[:3], targets=b[2].targets[:3])]  # batches of unequal weight
    whole = Batch(users=torch.cat([b.users for b in batches]),
                  targets=torch.cat([b.targets for b in batches if b.targets is not None]))
    params = []
    for step in (batches, [whole]):
        torch.manual_seed(0)
        model = T.build_model(data, cfg, T.select_features(data, cfg), 0)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        T._step(model, opt, step, torch.Generator().manual_seed(0), lambda parts: None)
        params.append({k: v.detach().clone() for k, v in model.named_parameters()})
    assert params[0].keys() == params[1].keys()
    for k in params[0]:
        torch.testing.assert_close(params[0][k], params[1][k], rtol=1e-4, atol=1e-6, msg=k)
    # the step changed the parameters the graph pass reaches (a dropped pass-through gradient would not)
    torch.manual_seed(0)
    start = dict(T.build_model(data, cfg, T.select_features(data, cfg), 0).named_parameters())
    assert not torch.allclose(start["user_emb.weight"], params[0]["user_emb.weight"])
    assert not torch.allclose(start["id_emb.weight"], params[0]["id_emb.weight"])


def test_an_epoch_keeps_within_max_steps_per_epoch() -> None:
    from fusionrec.training import batches_per_step

    cfg = TrainConfig(batch_size=256, max_steps_per_epoch=64)
    assert batches_per_step(100_000, cfg) == 7  # 391 batches in 56 steps
    assert batches_per_step(943, cfg) == 1 and batches_per_step(64 * 256, cfg) == 1
    assert batches_per_step(64 * 256 + 1, cfg) == 2
    assert batches_per_step(100_000, cfg.with_overrides(max_steps_per_epoch=0)) == 1  # type: ignore[union-attr]
    data = colour_data()
    grouped = train(data, QUICK.with_overrides(batch_size=4, max_steps_per_epoch=3))  # type: ignore[arg-type]
    assert grouped.best_epoch >= 1 and np.isfinite(grouped.history[0]["loss_main"])


def test_recency_probe_fit_is_stored_by_training_and_reused_by_later_trainings(monkeypatch: Any) -> None:
    import fusionrec.models.ease as ease

    data, _ = _recent_taste_valid()
    cfg = QUICK.with_overrides(recency_choices=[2.0])
    fits: list[bool] = []
    real = ease.item_item_weights

    def counted(hist: Any, c: Any, weighted: bool) -> Any:
        fits.append(weighted)
        return real(hist, c, weighted)

    monkeypatch.setattr(ease, "item_item_weights", counted)
    rec = train(data, cfg).recommender  # type: ignore[arg-type]
    assert fits == [False, True]  # the probe's two fits; the model stores the chosen one without a third
    expected = ease.ease_weights(data.recency_matrix(2.0), cfg.ease_lambda, weighted=True)
    np.testing.assert_allclose(rec.arrays["ease"], expected, rtol=1e-5, atol=1e-6)
    train(data, cfg.with_overrides(dim=8))  # type: ignore[arg-type]  # another search trial: nothing refitted
    assert len(fits) == 2
    train(data, cfg.with_overrides(ease_lambda=cfg.ease_lambda * 2))  # type: ignore[arg-type]  # a new fit: probed again
    assert fits == [False, True, False, True]


def test_explored_and_organic_feedback_weigh_by_origin_in_targets_graph_and_ease() -> None:
    from fusionrec import schema

    train_rows = colour_data().train.copy()
    train_rows[schema.ORIGIN] = ""
    train_rows.loc[train_rows.index[::5], schema.ORIGIN] = "organic"
    train_rows.loc[train_rows.index[1::5], schema.ORIGIN] = "explored"
    data = dataclasses.replace(colour_data(), train=train_rows)  # merged feedback: rows with an origin
    weights = {"explored": 2.0, "organic": 3.0}
    assert not data.is_weighted(0.0, {}) and data.is_weighted(0.0, weights)
    assert data._origin_factor(weights) is data._origin_factor(dict(weights))  # mapped once per weights
    assert (data.recency_matrix(0.0, {}).data == 1.0).all()
    m = data.recency_matrix(0.0, weights)
    users, items = train_rows[schema.USER_IDX].to_numpy(), train_rows[schema.ITEM_IDX].to_numpy()
    got = np.asarray(m[users, items]).ravel()
    expected = train_rows[schema.ORIGIN].map({"organic": 3.0, "explored": 2.0}).fillna(1.0).to_numpy()
    assert np.allclose(got, expected)
    both = data.recency_matrix(2.0, weights)  # recency times origin
    assert np.allclose(both.toarray(), data.recency_matrix(2.0).toarray() * m.toarray())
    cfg = QUICK.with_overrides(origin_weights=weights, recency_choices=[], ease_blend=0.5)
    rec = train(data, cfg).recommender  # type: ignore[arg-type]
    assert "hist_data" in rec.arrays  # the served history carries the weights
    assert np.allclose(rec.arrays["ease"], ease_weights_of(m))
    # no origin column (a dataset before serving): the binary history, whatever the weights
    assert not colour_data().is_weighted(0.0, weights)


def ease_weights_of(m: Any) -> np.ndarray:
    from fusionrec.models.ease import ease_weights

    return ease_weights(m, QUICK.ease_lambda, weighted=True)


def test_train_records_the_recency_choice_in_the_model() -> None:
    data, _ = _recent_taste_valid()
    rec = train(data, QUICK.with_overrides(recency_choices=[2.0])).recommender  # type: ignore[arg-type]
    assert rec.config.recency_half_life == 2.0 and "hist_data" in rec.arrays
    assert set(rec.meta["recency_probe"]) == {"0", "2"}
