"""Full-ranking top-K metrics: one implementation for training, evaluation and benchmarks.

Conventions (the multi-modal literature's, and ../shared/bench/peers.md's):
- every item is ranked, minus the items in `exclude` (the user's train/valid items);
- Recall@K = hits / |test items of the user|; Precision@K = hits / K;
- NDCG@K with binary relevance, ideal DCG over min(|test|, K);
- MRR@K = 1 / rank of the first hit (0 if none in the top K); HitRate@K = any hit;
- ties are broken by item index (stable sort), averages over users with test items;
- coverage@K = share of the catalogue (or of the candidates) in at least one user's top K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user_idx (b,) -> scores (b, n_items)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best items per row, best first; ties go to the lower item index.

    Args:
        scores: (b, n_items) float; excluded items must already be -inf.
    Returns:
        (b, k) int64 item indices.
    """
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (b, k) unordered
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # score desc, then index asc
    return np.take_along_axis(part, order, axis=1)


def _rows(m: sp.csr_matrix, users: np.ndarray) -> list[np.ndarray]:
    return [m.indices[m.indptr[u] : m.indptr[u + 1]] for u in users]


def ranking_metrics(recs: np.ndarray, truth: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user metrics of ranked lists against sets of relevant items.

    Args:
        recs: (b, max_k) ranked item indices.
        truth: b arrays of relevant item indices (each non-empty).
    Returns:
        {"recall@10": (b,), ...} per-user values.
    """
    max_k = recs.shape[1]
    hits = np.zeros(recs.shape, dtype=bool)  # (b, max_k)
    n_rel = np.array([len(t) for t in truth], dtype=np.float64)
    for i, t in enumerate(truth):
        hits[i] = np.isin(recs[i], t)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))  # (max_k,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        dcg = (h * discounts[:k]).sum(axis=1)
        ideal = np.array([discounts[: int(min(n, k))].sum() for n in n_rel])
        first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
        out[f"recall@{k}"] = n_hits / n_rel
        out[f"precision@{k}"] = n_hits / k
        out[f"ndcg@{k}"] = dcg / ideal
        out[f"mrr@{k}"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
        out[f"hit@{k}"] = (n_hits > 0).astype(np.float64)
    return out


def evaluate_scores(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] = (10, 20),
    exclude: Sequence[sp.csr_matrix] = (),
    batch_size: int = 512,
    candidates: np.ndarray | None = None,
    per_user: bool = False,
) -> dict:
    """Full-ranking metrics of a scorer on a test matrix.

    Args:
        score_fn: maps a batch of user indices to (b, n_items) scores.
        train: (n_users, n_items) known items, always excluded from the ranking.
        test: (n_users, n_items) relevant items; users with none are skipped.
        exclude: more matrices of items to exclude (e.g. valid when testing).
        candidates: if given, only these item indices are ranked (e.g. cold items).
        per_user: also return "users" and per-user arrays under "per_user".
    Returns:
        {"recall@10": float, ..., "coverage@K": float, "n_users": int}.
    """
    test = sp.csr_matrix(test, copy=True)
    mask_m = sp.csr_matrix(train)
    for m in exclude:
        mask_m = mask_m + sp.csr_matrix(m)
    mask_m = sp.csr_matrix(mask_m)
    if candidates is not None:
        keep = np.zeros(test.shape[1], dtype=bool)
        keep[candidates] = True
        test = sp.csr_matrix(test.multiply(keep[None, :]))
    test.eliminate_zeros()  # multiply() keeps explicit zeros, which _rows would read as test items
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    max_k = max(ks)
    per: dict[str, list[np.ndarray]] = {}
    seen_items = {k: np.zeros(test.shape[1], dtype=bool) for k in ks}  # recommended to anyone at K
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.array(score_fn(batch), dtype=np.float64, copy=True)  # (b, n_items)
        for i, row in enumerate(_rows(mask_m, batch)):
            scores[i, row] = -np.inf
        if candidates is not None:
            scores[:, ~keep] = -np.inf
        recs = top_k(scores, max_k)
        # fewer rankable items than K: the tail of the list is excluded items (-inf), not recommendations
        recs = np.where(np.isfinite(np.take_along_axis(scores, recs, axis=1)), recs, -1)
        for k in ks:
            top = recs[:, :k]
            seen_items[k][top[top >= 0]] = True
        for name, vals in ranking_metrics(recs, _rows(test, batch), ks).items():
            per.setdefault(name, []).append(vals)
    result: dict = {name: float(np.concatenate(v).mean()) if v else 0.0 for name, v in per.items()}
    n_catalogue = int(keep.sum()) if candidates is not None else test.shape[1]
    for k in ks:
        result[f"coverage@{k}"] = float(seen_items[k].sum() / max(n_catalogue, 1))
    result["n_users"] = int(len(users))
    if per_user:
        result["users"] = users
        result["per_user"] = {name: np.concatenate(v) if v else np.zeros(0) for name, v in per.items()}
    return result
