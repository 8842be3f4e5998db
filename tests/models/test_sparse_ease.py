"""The sparse EASE: equal to EASE where it should be, scored by serving, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from tests.models.model_samples import FAST, colour_data

from fusionrec.config import ServeConfig
from fusionrec.models.ease import EASE_KEYS, ease_weights, item_item_arrays
from fusionrec.models.recommender import Recommender
from fusionrec.models.sparse_ease import popular_items, sparse_ease_weights, sparse_row_sum
from fusionrec.training import TrainResult, train


def _x(seed: int = 0, users: int = 60, items: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    pop = rng.pareto(1.5, items) + 0.1
    dense = rng.random((users, items)) < np.clip(0.5 * pop / pop.max() + 0.05, 0, 1)[None, :]
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("weighted", [False, True])
def test_head_covering_every_item_without_pruning_is_ease(weighted: bool) -> None:
    x = _x()
    if weighted:
        x = x.multiply(np.random.default_rng(1).uniform(0.2, 1.0, x.shape)).tocsr()
    dense = ease_weights(x, 5.0, weighted=weighted)
    b = sparse_ease_weights(x, 5.0, head_items=x.shape[1], topk=0, weighted=weighted, chunk=7)
    assert np.allclose(b.toarray(), dense, atol=1e-5)


def test_head_columns_are_ease_on_the_head_and_tail_columns_ridge_on_it() -> None:
    x = _x(3)
    head = popular_items(x, 10)
    b = sparse_ease_weights(x, 5.0, head_items=10, topk=0, chunk=4).toarray()
    assert set(np.flatnonzero(np.abs(b).sum(axis=1))) <= set(head.tolist())  # only head items are regressors
    assert np.allclose(b[np.ix_(head, head)], ease_weights(x[:, head], 5.0), atol=1e-5)
    xd = x.toarray().astype(np.float64)
    xh = xd[:, head]
    tail = np.setdiff1d(np.arange(x.shape[1]), head)
    ridge = np.linalg.solve(xh.T @ xh + 5.0 * np.eye(10), xh.T @ xd[:, tail])  # (N, n_tail)
    assert np.allclose(b[np.ix_(head, tail)], ridge, atol=1e-4)


def test_pruning_keeps_each_columns_largest_weights() -> None:
    x = _x(4)
    full = sparse_ease_weights(x, 5.0, head_items=12, topk=0).toarray()
    pruned = sparse_ease_weights(x, 5.0, head_items=12, topk=3).toarray()
    assert ((pruned != 0).sum(axis=0) <= 3).all()
    for j in range(x.shape[1]):
        kept = np.flatnonzero(pruned[:, j])
        assert np.allclose(pruned[kept, j], full[kept, j], atol=1e-6)
        if len(kept):
            dropped = np.setdiff1d(np.flatnonzero(full[:, j]), kept)
            assert np.abs(full[dropped, j]).max(initial=0.0) <= np.abs(full[kept, j]).min() + 1e-7


def test_row_sum_matches_the_sparse_product_and_skips_rows_added_later() -> None:
    b = sparse_ease_weights(_x(5), 5.0, head_items=8, topk=4)
    rows = np.array([0, 3, 7, 24, 30, 31])  # 30, 31: items added after training
    weights = np.array([1.0, 0.5, 2.0, 1.0, 1.0, 1.0], np.float32)
    got = sparse_row_sum(b.indptr, b.indices, b.data, rows, weights)
    expected = weights[:4] @ b.toarray()[rows[:4]]
    assert got.shape == (b.shape[0],) and np.allclose(got, expected, atol=1e-6)
    assert not sparse_row_sum(b.indptr, b.indices, b.data, np.array([30]), np.ones(1)).any()


def test_item_item_arrays_switch_at_the_configured_size() -> None:
    x = _x()
    assert set(item_item_arrays(x, FAST, weighted=False)) == {"ease"}
    sparse = item_item_arrays(x, FAST.with_overrides(ease_max_items=10, ease_head_items=6, ease_topk=3), weighted=False)
    assert set(sparse) == {"ease_indptr", "ease_indices", "ease_data"} and len(sparse["ease_data"]) <= 3 * 25


@pytest.fixture(scope="module")
def forced() -> TrainResult:
    """The colour world trained with the sparse EASE forced (every catalogue above 10 items)."""
    cfg = FAST.with_overrides(ease_blend=0.5, ease_max_items=10, ease_head_items=20, ease_topk=8)
    return train(colour_data(), cfg)


def test_training_stores_the_sparse_component_and_one_user_scores_match_batch(forced: TrainResult) -> None:
    rec = forced.recommender
    assert "ease" not in rec.arrays and "ease_indptr" in rec.arrays and rec.ease_blend == 0.5
    users = np.arange(rec.n_users)
    batch = rec.score_users(users)
    one = np.concatenate([rec.score_users(np.array([u])) for u in users])
    assert np.allclose(one, batch, atol=1e-5)


def test_sparse_component_equals_dense_when_it_covers_every_item() -> None:
    cfg = FAST.with_overrides(ease_blend=0.5, epochs=2)
    rec = train(colour_data(), cfg).recommender
    users = np.arange(rec.n_users)
    dense_scores = rec.score_users(users)
    hist = sp.csr_matrix((np.ones(len(rec.arrays["hist_indices"]), np.float32), rec.arrays["hist_indices"],
                          rec.arrays["hist_indptr"]), shape=(rec.n_users, rec.n_items))
    arrays = {k: v for k, v in rec.arrays.items() if k not in EASE_KEYS}
    arrays.update(item_item_arrays(hist, cfg.with_overrides(ease_max_items=0, ease_head_items=10**6, ease_topk=0),
                                   weighted=False))
    sparse_rec = Recommender(rec.config, arrays, rec.state, rec.item_ids, rec.user_ids, dict(rec.meta), rec.titles)
    assert np.allclose(sparse_rec.score_users(users), dense_scores, atol=1e-4)
    assert np.allclose(sparse_rec.score_users(users[:1]), dense_scores[:1], atol=1e-4)


def test_save_load_round_trip_keeps_the_sparse_scores(forced: TrainResult, tmp_path: Path) -> None:
    rec = forced.recommender
    loaded = Recommender.load(rec.save(tmp_path / "m"))
    users = np.arange(rec.n_users)
    assert "ease_indptr" in loaded.arrays and "ease" not in loaded.arrays
    assert np.allclose(loaded.score_users(users), rec.score_users(users), atol=1e-6)
    assert np.allclose(loaded.score_users(users[:1]), rec.score_users(users[:1]), atol=1e-6)
    hist = [rec.arrays["hist_indices"][: 3]]
    assert np.allclose(loaded.score_histories(hist), rec.score_histories(hist), atol=1e-6)


def test_serving_recommends_with_the_sparse_component(forced: TrainResult, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.inference import InferenceEngine
    from fusionrec.monitoring.store import FeedbackStore

    rec = forced.recommender
    model_dir = rec.save(tmp_path / "m")
    monkeypatch.setenv(ServeConfig().token_env, "t")
    eng = InferenceEngine(model_dir, ServeConfig(explore_share=0.0), FeedbackStore(tmp_path / "feedback.db"))
    try:
        user = rec.user_ids[0]
        out = eng.recommend(user, k=5, explain=False)
        scores = rec.score_users(np.array([0]))[0]
        scores[rec.seen(0)] = -np.inf
        served = np.array([rec.item_index(i["item_id"]) for i in out["items"]])
        assert np.allclose([i["score"] for i in out["items"]], scores[served], atol=1e-5)  # the blended scores
        assert np.allclose(scores[served], np.sort(scores)[::-1][:5], atol=1e-5)  # the five best (ties aside)
        folded = eng.recommend("stranger", k=5, recent_items=rec.item_ids[:3], explain=False)
        assert folded["path"] == "fold_in" and len(folded["items"]) == 5
    finally:
        eng.close()


def test_blend_choice_from_two_scorings_equals_scoring_each_weight(forced: TrainResult) -> None:
    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.models.assemble import BLEND_GRID, choose_blend

    rec, data = forced.recommender, colour_data()
    _, grid = choose_blend(rec, data.train_matrix, data.valid)
    for w in BLEND_GRID:
        rec.meta["ease_blend"] = w
        direct = evaluate_scores(rec.score_users, data.train_matrix, data.valid, ks=(20,))["ndcg@20"]
        assert grid[w] == pytest.approx(direct, abs=1e-6)
    assert len(set(grid.values())) > 1  # the weights do rank differently here


def test_valid_sample_keeps_whole_rows_of_at_most_the_cap() -> None:
    from fusionrec.data.train_data import valid_sample

    valid = _x(6, users=300)
    sample = valid_sample(valid, FAST.with_overrides(valid_max_users=50))
    kept = np.flatnonzero(np.diff(sample.indptr) > 0)
    assert len(kept) == 50
    assert (sample[kept] != valid[kept]).nnz == 0  # whole rows, unchanged
    assert valid_sample(valid, FAST.with_overrides(valid_max_users=0)).nnz == valid.nnz


def test_large_catalogues_find_content_neighbours_through_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    import fusionrec.models.graph as graph

    rng = np.random.default_rng(0)
    topic = rng.integers(0, 20, 2000)
    values = rng.normal(size=(20, 16))[topic] + 0.5 * rng.normal(size=(2000, 16))
    feats = [(values, np.ones(2000, bool))]
    exact_idx, _ = graph.content_similarity_topk(feats, 5)
    monkeypatch.setattr(graph, "EXACT_KNN_MAX_ITEMS", 1000)
    idx, sim = graph.content_similarity_topk(feats, 5)
    assert idx.shape == (2000, 5) and not (idx == np.arange(2000)[:, None]).any()  # no self loops
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, exact_idx, strict=True)]) > 0.9
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # best first
