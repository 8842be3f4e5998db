"""Metrics on hand-computed rankings (the conventions of ../shared/bench/peers.md)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.evaluation.metrics import evaluate_scores, ranking_metrics, top_k

LOG3, LOG5 = np.log2(3), np.log2(5)


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


def _fixed(scores: np.ndarray):  # noqa: ANN202
    return lambda users: scores[users]


def test_top_k_breaks_ties_by_item_index() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert top_k(scores, 4).tolist() == [[1, 3, 0, 2]]


def test_hand_computed_single_user() -> None:
    # ranking 0 > 1 > 2 > 3 > 4; item 0 is a train item (excluded) -> list 1, 2, 3, 4; test = {2, 4}
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    m = evaluate_scores(_fixed(scores), _csr([[0]], 5), _csr([[2, 4]], 5), ks=(2, 3, 4))
    idcg = 1 + 1 / LOG3
    assert m["recall@2"] == pytest.approx(0.5) and m["precision@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 / LOG3) / idcg)
    assert m["mrr@2"] == pytest.approx(0.5) and m["hit@2"] == 1.0
    assert m["precision@3"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(0.5)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["ndcg@4"] == pytest.approx((1 / LOG3 + 1 / LOG5) / idcg)
    assert m["n_users"] == 1


def test_ideal_dcg_is_over_min_of_test_size_and_k() -> None:
    # 3 test items, K = 2, both top slots hit: NDCG 1 although recall is 2/3
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    m = evaluate_scores(_fixed(scores), _csr([[]], 4), _csr([[0, 1, 2]], 4), ks=(2,))
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)


def test_miss_gives_zero_mrr_and_hit() -> None:
    recs = np.array([[0, 1]])
    m = ranking_metrics(recs, [np.array([3])], ks=(2,))
    assert m["mrr@2"][0] == 0.0 and m["hit@2"][0] == 0.0 and m["ndcg@2"][0] == 0.0


def test_averages_over_users_with_test_items_only() -> None:
    scores = np.tile(np.array([0.4, 0.3, 0.2, 0.1]), (3, 1))
    test = _csr([[0], [], [3]], 4)  # user 1 has no test item: skipped
    m = evaluate_scores(_fixed(scores), _csr([[], [], []], 4), test, ks=(1,))
    assert m["n_users"] == 2
    assert m["recall@1"] == pytest.approx(0.5)  # user 0 hits, user 2 misses
    assert m["mrr@1"] == pytest.approx(0.5)


def test_exclude_removes_valid_items_from_ranking() -> None:
    scores = np.array([[0.9, 0.8, 0.7]])
    valid = _csr([[0]], 3)
    m = evaluate_scores(_fixed(scores), _csr([[]], 3), _csr([[1]], 3), ks=(1,), exclude=[valid])
    assert m["recall@1"] == 1.0


def test_candidates_rank_only_among_them() -> None:
    # cold items {2, 3}: item 0 scores highest but is not a candidate; test item 0 is dropped
    scores = np.array([[0.9, 0.8, 0.1, 0.5]])
    m = evaluate_scores(_fixed(scores), _csr([[]], 4), _csr([[0, 2]], 4), ks=(1, 2), candidates=np.array([2, 3]))
    assert m["recall@1"] == 0.0  # item 3 first
    assert m["recall@2"] == 1.0 and m["mrr@2"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(1.0)  # both candidates recommended


def test_coverage_counts_distinct_recommended_items_at_each_k() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.0], [0.1, 0.9, 0.0, 0.5]])
    m = evaluate_scores(_fixed(scores), _csr([[], []], 4), _csr([[0], [1]], 4), ks=(1, 2))
    assert m["coverage@1"] == pytest.approx(0.5)  # items 0 and 1
    assert m["coverage@2"] == pytest.approx(1.0)  # plus 2 and 3


def test_short_list_does_not_count_excluded_items() -> None:
    # 3 items, 2 in train: only one rankable item, K = 2 must not recommend (or count) train items
    scores = np.array([[0.9, 0.8, 0.1]])
    m = evaluate_scores(_fixed(scores), _csr([[0, 1]], 3), _csr([[2]], 3), ks=(2,))
    assert m["recall@2"] == 1.0
    assert m["coverage@2"] == pytest.approx(1 / 3)


def test_per_user_values_are_returned() -> None:
    scores = np.tile(np.array([0.4, 0.3, 0.2]), (2, 1))
    m = evaluate_scores(_fixed(scores), _csr([[], []], 3), _csr([[0], [2]], 3), ks=(1,), per_user=True)
    assert m["users"].tolist() == [0, 1]
    assert m["per_user"]["hit@1"].tolist() == [1.0, 0.0]
