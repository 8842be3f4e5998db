"""Baselines on tiny hand-built matrices: each learns the structure it is meant to learn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.config import EvaluateConfig
from fusionrec.models.baselines import REGISTRY, make_baseline

FAST = {"epochs": 30, "batch_size": 64, "lr": 0.05, "dim": 8}


@dataclass(frozen=True)
class FM:
    """Stand-in for fusionrec.features.store.FeatureMatrix (same attributes)."""

    name: str
    modality: str
    values: np.ndarray
    mask: np.ndarray


def _blocks(n_users: int = 20, n_items: int = 12, hold: int = 2) -> tuple[sp.csr_matrix, np.ndarray]:
    """Two tastes: even users like items 0..5, odd users items 6..11; the last `hold` items of each
    group are left out of training (they are the items a model should rank next)."""
    rows, cols = [], []
    half = n_items // 2
    for u in range(n_users):
        group = range(0, half - hold) if u % 2 == 0 else range(half, n_items - hold)
        for i in group:
            if (u + i) % 5 != 0:  # a few holes so models have something to fill
                rows.append(u)
                cols.append(i)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    group_of_item = (np.arange(n_items) >= half).astype(int)
    return x, group_of_item


def _features(group_of_item: np.ndarray) -> dict[str, FM]:
    rng = np.random.default_rng(0)
    values = np.eye(2, dtype=np.float32)[group_of_item] + 0.05 * rng.standard_normal((len(group_of_item), 2))
    mask = np.ones(len(group_of_item), bool)
    mask[0] = False  # one item without an image: masked rows must not break anything
    return {"image:color": FM("image:color", "image", values.astype(np.float32), mask)}


def test_registry_names_match_the_config_defaults() -> None:
    assert set(EvaluateConfig().baselines) <= set(REGISTRY)


def test_unknown_name_and_bad_parameter_are_clear() -> None:
    with pytest.raises(ValueError, match="known: mostpop"):
        make_baseline("nope")
    with pytest.raises(ValueError, match="bad parameters"):
        make_baseline("itemknn", neighbours=3)


def test_mostpop_scores_are_training_counts() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]], np.float32))
    scores = make_baseline("mostpop").fit(x).score_users(np.array([0, 3]))
    assert scores.shape == (2, 3)
    assert scores[0].tolist() == [3.0, 1.0, 2.0] == scores[1].tolist()


def test_itemknn_is_cosine_of_item_columns() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32))
    model = make_baseline("itemknn", k=1).fit(x)
    scores = model.score_users(np.array([3]))[0]  # user 3 has item 0; its neighbour is item 1
    assert scores[1] == pytest.approx(2 / np.sqrt(3 * 2))
    assert scores[2] == 0.0


@pytest.mark.parametrize("name", ["itemknn", "ease", "bpr-mf", "lightgcn", "vbpr"])
def test_collaborative_models_rank_same_taste_items_first(name: str) -> None:
    x, group = _blocks()
    params = FAST if name in ("bpr-mf", "lightgcn", "vbpr") else {}
    model = make_baseline(name, **params).fit(x, _features(group))
    scores = model.score_users(np.arange(x.shape[0]))  # (20, 12)
    assert scores.shape == x.shape and scores.dtype == np.float32
    trained = np.asarray(x.sum(axis=0)).ravel() > 0
    for u in range(x.shape[0]):
        unseen = trained & (x[u].toarray().ravel() == 0)  # trained items the user has not seen
        own, other = unseen & (group == u % 2), unseen & (group != u % 2)
        if own.any():
            assert scores[u, own].max() > scores[u, other].max(), f"{name}: user {u}"


def test_vbpr_scores_unseen_items_through_content() -> None:
    x, group = _blocks(hold=2)  # items 4, 5, 10, 11 never appear in training
    model = make_baseline("vbpr", **FAST).fit(x, _features(group))
    scores = model.score_users(np.arange(x.shape[0]))
    cold = np.array([4, 5, 10, 11])
    for u in range(x.shape[0]):
        best = cold[np.argmax(scores[u, cold])]
        assert group[best] == u % 2


def test_content_knn_profile_is_history_mean() -> None:
    x, group = _blocks()
    scores = make_baseline("content-knn").fit(x, _features(group)).score_users(np.array([0, 1]))
    assert scores[0, 3] > scores[0, 9] and scores[1, 9] > scores[1, 3]
    assert scores[0, 0] == 0.0  # masked item: zero vector, no fake similarity


def test_content_models_need_features() -> None:
    x, _ = _blocks()
    for name in ("vbpr", "content-knn"):
        assert make_baseline(name).needs_features
        with pytest.raises(ValueError, match="needs item features"):
            make_baseline(name, **({"epochs": 1} if name == "vbpr" else {})).fit(x, None)


def test_training_is_deterministic() -> None:
    x, group = _blocks()
    a = make_baseline("bpr-mf", **FAST).fit(x).score_users(np.arange(4))
    b = make_baseline("bpr-mf", **FAST).fit(x).score_users(np.arange(4))
    np.testing.assert_array_equal(a, b)
