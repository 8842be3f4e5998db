"""A sparse EASE for catalogues too large for the dense (n, n) item-item matrix.

EASE's column j is the ridge regression of item j's interactions on every other item's
(Steck 2019). Here the regressors are restricted to the `head` most popular items:

    P = (X_H' X_H + lambda I)^-1                          (N, N), N = head items
    b_j = -P[:, j] / P_jj, b_jj = 0       for j in the head (EASE on the head, exactly)
    b_j = P X_H' X_j                      for every other item (ridge on the head)

and each column keeps its `topk` largest weights by magnitude. The result is a sparse
(n, n) matrix whose rows are head items only; scores are x @ B as for EASE. With every
item in the head and no pruning it IS EASE (the tests check this).

Cost: one N^3 inversion and an (N, N) x (N, n) product done in column chunks, so time is
linear in the catalogue and memory is O(N^2 + N * chunk + n * topk), never O(n^2).
Popular items carry most of the co-occurrence signal: a user's tail items add nothing to
the EASE part (the neural part still scores them), which is the price of the bound.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_COLUMNS = 1024  # target items per (N, chunk) block: N * chunk * 4 bytes


def popular_items(x: sp.csr_matrix, n: int) -> np.ndarray:
    """The n items with the most interactions (ties: lower index), most popular first."""
    counts = np.diff(sp.csc_matrix(x).indptr)
    return np.argsort(-counts, kind="stable")[: min(n, x.shape[1])]


def _prune(b: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions and values of each column's topk largest |b|: (k, c) each."""
    if topk <= 0 or topk >= b.shape[0]:
        rows = np.broadcast_to(np.arange(b.shape[0])[:, None], b.shape)
        return rows, b
    rows = np.argpartition(-np.abs(b), topk - 1, axis=0)[:topk]  # (k, c)
    return rows, np.take_along_axis(b, rows, axis=0)


def sparse_ease_weights(train: sp.csr_matrix, lam: float = 300.0, head_items: int = 4096, topk: int = 64,
                        weighted: bool = False, chunk: int = CHUNK_COLUMNS) -> sp.csr_matrix:
    """Fit the sparse EASE item-item matrix (see the module docstring).

    Args:
        train: (n_users, n_items) interactions; any positive value counts as 1 unless `weighted`.
        lam: L2 regularisation, as in EASE.
        head_items: regressor items (the most popular); >= n_items gives EASE's regressors.
        topk: weights kept per target item (largest magnitude); 0 keeps all.
        weighted: fit on the values as they are (e.g. recency weights).
        chunk: target items per dense block (memory N * chunk floats).

    Returns:
        B, (n_items, n_items) float32 CSR with rows only for head items and a zero diagonal.
    """
    n_items = train.shape[1]
    x = sp.csr_matrix(train, dtype=np.float64) if weighted else (train > 0).astype(np.float64)
    head = popular_items(x, head_items)  # (N,)
    pos = np.full(n_items, -1, dtype=np.int64)
    pos[head] = np.arange(len(head))
    xh_t = sp.csr_matrix(x[:, head].T)  # (N, U)
    gram = (xh_t @ xh_t.T).toarray()  # (N, U) x (U, N) -> (N, N)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)  # (N, N) float64: the head's precision matrix
    p_diag = np.diag(p).copy()
    p32 = p.astype(np.float32)
    del gram, p
    xc = sp.csc_matrix(x)
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n_items, chunk):
        cols = np.arange(start, min(start + chunk, n_items))
        g = (xh_t @ xc[:, cols]).toarray().astype(np.float32)  # (N, U) x (U, c) -> (N, c)
        b = p32 @ g  # (N, N) x (N, c) -> (N, c): ridge of each target on the head
        hp = pos[cols]
        in_head = np.flatnonzero(hp >= 0)
        if len(in_head):  # head targets: EASE's constrained solution, zero self-weight
            b[:, in_head] = p32[:, hp[in_head]] / (-p_diag[hp[in_head]])[None, :].astype(np.float32)
            b[hp[in_head], in_head] = 0.0
        r, v = _prune(b, topk)  # (k, c) each
        keep = v != 0
        rows_out.append(head[r[keep]])
        cols_out.append(np.broadcast_to(cols[None, :], r.shape)[keep])
        vals_out.append(v[keep].astype(np.float32))
    rows, cols_all, vals = (np.concatenate(a) for a in (rows_out, cols_out, vals_out))
    out = sp.csr_matrix((vals, (rows, cols_all)), shape=(n_items, n_items), dtype=np.float32)
    out.sort_indices()
    return out


def sparse_row_sum(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray,
                   weights: np.ndarray) -> np.ndarray:
    """sum_r weights[r] * B[rows[r], :] of a CSR matrix given by its arrays, as a dense (n,) vector.

    Pure numpy and O(entries read + n): the one-user serving path reads a few history rows
    and must not build a scipy matrix per request.
    """
    n = len(indptr) - 1
    keep = rows < n  # items added after training have no row
    rows, weights = rows[keep], weights[keep]
    starts, stops = indptr[rows], indptr[rows + 1]
    lengths = stops - starts  # (h,)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(n, dtype=np.float32)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)  # (total,)
    w = np.repeat(weights.astype(np.float32), lengths) * data[offsets]
    return np.bincount(indices[offsets], weights=w, minlength=n).astype(np.float32)  # (n,)
