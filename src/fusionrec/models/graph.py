"""Graphs the model propagates over: the user-item graph (LightGCN) and an item-item
kNN graph from content similarity (built once, frozen).

Everything is a sparse matrix product on the CPU; the dense side carries the gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    import torch

BLOCK_FLOATS = 1 << 24  # floats per (chunk, n) similarity block (64 MiB): O(n) memory on any catalogue
EXACT_KNN_MAX_ITEMS = 50_000  # larger catalogues find content neighbours with an IVF index (n^2 pairs: hours)


def _to_torch(m: sp.spmatrix) -> torch.Tensor:
    """scipy sparse -> torch CSR float32 tensor."""
    import warnings

    import torch

    csr = sp.csr_matrix(m, dtype=np.float32)
    csr.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": sparse @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data), size=csr.shape, check_invariants=False,
        )


def sym_spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a @ x for a SYMMETRIC sparse a, differentiable in x.

    torch's generic sparse backward transposes (and re-sorts) a on every step; for a
    symmetric matrix the gradient is simply a @ grad, so this is several times faster.
    """
    import torch

    class _SymSpMM(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dense):  # type: ignore[no-untyped-def, override]
            return a @ dense  # (N, N) x (N, d) -> (N, d)

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
            return a @ grad  # a == a.T

    out: torch.Tensor = _SymSpMM.apply(x)
    return out


def sym_normalize(a: sp.spmatrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 with isolated nodes left at zero."""
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg, dtype=np.float64)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    return (d @ a @ d).tocsr()


def normalized_adjacency(train: sp.csr_matrix, weighted: bool = False) -> torch.Tensor:
    """LightGCN's normalised bipartite adjacency.

    Args:
        train: (n_users, n_items) interactions.
        weighted: keep the values as edge weights (e.g. recency); otherwise every edge weighs 1.

    Returns:
        (n_users + n_items, n_users + n_items) sparse torch tensor (symmetric), users first.
    """
    r = sp.csr_matrix(train, dtype=np.float32) if weighted else (train > 0).astype(np.float32)
    a = sp.bmat([[None, r], [r.T, None]], format="csr")  # (U+I, U+I)
    return _to_torch(sym_normalize(a))


def lightgcn(adj: torch.Tensor, emb: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Mean of the layer embeddings e^0..e^L with e^{l+1} = A e^l.

    Args:
        adj: (N, N) normalised adjacency (sparse).
        emb: (N, d) layer-0 embeddings (users then items).

    Returns:
        (N, d) propagated embeddings.
    """
    out = emb
    layer = emb
    for _ in range(n_layers):
        layer = sym_spmm(adj, layer)  # (N, N) x (N, d) -> (N, d)
        out = out + layer
    return out / (n_layers + 1)


def content_similarity_topk(
    features: list[tuple[np.ndarray, np.ndarray]], k: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours of every item by mean cosine similarity over its modalities.

    Args:
        features: per modality (values (n, d_m), mask (n,) bool).
        k: neighbours per item (itself excluded).

    Returns:
        (indices (n, k) int64, similarities (n, k) float32).
    """
    import torch

    if len(features[0][0]) > EXACT_KNN_MAX_ITEMS:
        return approximate_similarity_topk(features, k)
    normed = []
    for values, mask in features:
        v = torch.from_numpy(np.asarray(values, dtype=np.float32))
        v = torch.nn.functional.normalize(v, dim=1) * torch.from_numpy(mask.astype(np.float32))[:, None]
        normed.append((v, torch.from_numpy(mask.astype(np.float32))))
    n = normed[0][0].shape[0]
    k = min(k, n - 1)
    chunk = max(16, min(chunk, BLOCK_FLOATS // max(n, 1)))  # a few (chunk, n) blocks live at once: bound them
    idx_out, sim_out = [], []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = torch.zeros(stop - start, n)
        count = torch.zeros(stop - start, n)
        for v, m in normed:
            sim += v[start:stop] @ v.T  # (c, d_m) x (d_m, n) -> (c, n)
            count += m[start:stop, None] * m[None, :]
        sim = sim / count.clamp(min=1.0)
        sim[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf  # no self loops
        top = torch.topk(sim, k, dim=1)
        idx_out.append(top.indices)
        sim_out.append(top.values)
    return torch.cat(idx_out).numpy(), torch.cat(sim_out).numpy().astype(np.float32)


def approximate_similarity_topk(features: list[tuple[np.ndarray, np.ndarray]], k: int, probe: int = 16,
                                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k content neighbours through a faiss IVF index: O(n sqrt(n)) instead of n^2 pairs.

    The query is the concatenation of the L2-normalised modalities / sqrt(M) (zeros where
    masked), whose inner product is the cosine summed over the modalities both items have,
    divided by M: the exact path's mean when nothing is masked, lower for an item missing one.

    Returns:
        (indices (n, k) int64, similarities (n, k) float32); -1 / 0 where fewer were found.
    """
    import faiss

    blocks = []
    for values, mask in features:
        v = np.asarray(values, dtype=np.float32)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) * mask[:, None]
        blocks.append(v / np.sqrt(len(features)))
    x = np.ascontiguousarray(np.hstack(blocks))  # (n, sum d_m)
    n = len(x)
    lists = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training rows per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    sample = np.random.default_rng(seed).choice(n, min(n, lists * 64), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = probe
    sims, idx = index.search(x, k + 1)  # (n, k + 1): usually the item itself first
    self_hit = idx == np.arange(n)[:, None]
    order = np.argsort(self_hit, axis=1, kind="stable")[:, :k]  # drop the self match, keep the rank order
    idx, sims = np.take_along_axis(idx, order, 1), np.take_along_axis(sims, order, 1)
    sims[idx < 0] = 0.0
    return idx.astype(np.int64), sims.astype(np.float32)


def knn_graph(features: list[tuple[np.ndarray, np.ndarray]], k: int) -> torch.Tensor:
    """Frozen item-item kNN graph: top-k content neighbours, symmetric, D^-1/2 A D^-1/2.

    Returns:
        (n_items, n_items) sparse torch tensor.
    """
    idx, sim = content_similarity_topk(features, k)
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    found = idx.ravel() >= 0  # the approximate path may find fewer than k
    a = sp.csr_matrix((np.clip(sim.ravel()[found], 0.0, None), (rows[found], idx.ravel()[found])), shape=(n, n))
    a = a.maximum(a.T)  # symmetric: i~j when either lists the other
    return _to_torch(sym_normalize(a))
