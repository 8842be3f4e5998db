"""EASE (Steck 2019): a closed-form linear item-item model.

B = I - P diag(1 / diag P) with P = (X'X + lambda I)^-1 and a zero diagonal. It is
the strongest id-only peer on MovieLens and the linear component the neural model's
scores blend with. The baselines import `EASE` from here, so both use one fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from fusionrec.config import TrainConfig
    from fusionrec.data.train_data import TrainData

MAX_EASE_ITEMS = 30_000  # the Gram matrix is dense: n_items^2 floats


def ease_weights(train: sp.csr_matrix, lam: float = 300.0, weighted: bool = False) -> np.ndarray:
    """Fit the EASE item-item matrix on a user x item matrix.

    Args:
        train: (n_users, n_items) interactions; any positive value counts as 1 unless `weighted`.
        weighted: fit on the values as they are (e.g. recency weights).
        lam: L2 regularisation on the diagonal of the Gram matrix.

    Returns:
        B, (n_items, n_items) float32 with a zero diagonal; scores are X @ B.
    """
    n_items = train.shape[1]
    if n_items > MAX_EASE_ITEMS:
        raise ValueError(
            f"EASE needs a dense {n_items} x {n_items} matrix; more than {MAX_EASE_ITEMS} items is "
            "too large. Lower train.ease_max_items to use the sparse EASE, or set train.ease_blend to 0."
        )
    dtype = np.float64 if n_items <= 8000 else np.float32
    x = sp.csr_matrix(train, dtype=dtype) if weighted else (train > 0).astype(dtype)
    gram = np.asarray((x.T @ x).todense())  # (n, n)
    diag = np.diag_indices(n_items)
    gram[diag] += lam
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))[None, :]  # column j divided by -P_jj
    b[diag] = 0.0
    return b.astype(np.float32)


def is_dense(n_items: int, cfg: TrainConfig) -> bool:
    """Whether the item-item component of a catalogue this size is the exact (dense) EASE."""
    return n_items <= min(cfg.ease_max_items, MAX_EASE_ITEMS)


def weights_key(data: TrainData, cfg: TrainConfig, half_life: float) -> tuple[object, ...]:
    """What an item-item fit on this data depends on: equal keys, equal weights."""
    origins = tuple(sorted(cfg.origin_weights.items())) if data.is_weighted(0.0, cfg.origin_weights) else ()
    if is_dense(data.n_items, cfg):
        return ("dense", float(half_life), origins, float(cfg.ease_lambda))
    return ("sparse", float(half_life), origins, float(cfg.ease_lambda), cfg.ease_head_items, cfg.ease_topk)


def item_item_weights(hist: sp.csr_matrix, cfg: TrainConfig, weighted: bool) -> np.ndarray | sp.csr_matrix:
    """Exact EASE (n, n) up to cfg.ease_max_items items, the sparse EASE (CSR) above."""
    from fusionrec.models.sparse_ease import sparse_ease_weights

    if is_dense(hist.shape[1], cfg):
        return ease_weights(hist, cfg.ease_lambda, weighted=weighted)
    return sparse_ease_weights(hist, cfg.ease_lambda, cfg.ease_head_items, cfg.ease_topk, weighted=weighted)


def item_item_arrays(hist: sp.csr_matrix, cfg: TrainConfig, weighted: bool,
                     weights: np.ndarray | sp.csr_matrix | None = None) -> dict[str, np.ndarray]:
    """The recommender's item-item component: exact EASE, or the sparse one on large catalogues.

    Up to cfg.ease_max_items items the dense EASE matrix is stored as "ease" (n, n); above,
    the sparse EASE (fusionrec.models.sparse_ease) as CSR arrays "ease_indptr" (n + 1,),
    "ease_indices" and "ease_data" (nnz,), which serving reads row by row.

    Args:
        weighted: hist holds weights (recency, origin) to fit on as they are, not a binary history.
        weights: the fit for exactly this history and config, when it was made already
            (the recency probe's); None fits it here.
    """
    b = item_item_weights(hist, cfg, weighted=weighted) if weights is None else weights
    if not sp.issparse(b):
        return {"ease": np.asarray(b, dtype=np.float32)}
    b = sp.csr_matrix(b)
    return {"ease_indptr": b.indptr.astype(np.int64), "ease_indices": b.indices.astype(np.int32),
            "ease_data": b.data.astype(np.float32)}


EASE_KEYS = ("ease", "ease_indptr", "ease_indices", "ease_data")  # the arrays item_item_arrays may write


class EASE:
    """EASE as a recommender with the evaluator's `fit` / `score_users` interface."""

    name = "ease"

    def __init__(self, lam: float = 300.0) -> None:
        self.lam = lam
        self.weights: np.ndarray | None = None
        self._train: sp.csr_matrix | None = None

    def fit(self, train: sp.csr_matrix, features: object = None) -> EASE:
        """Fit on a (n_users, n_items) matrix; features are ignored (id-only model)."""
        self._train = (train > 0).astype(np.float32).tocsr()
        self.weights = ease_weights(self._train, self.lam)
        return self

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores (b, n_items) of known users: their training rows times B."""
        if self.weights is None or self._train is None:
            raise RuntimeError("EASE.score_users called before fit")
        return np.asarray(self._train[np.asarray(user_idx)] @ self.weights, dtype=np.float32)

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores (b, n_items) of users given as history rows (fold-in is exact for EASE)."""
        if self.weights is None:
            raise RuntimeError("EASE.score_histories called before fit")
        return np.asarray((histories > 0).astype(np.float32) @ self.weights, dtype=np.float32)
