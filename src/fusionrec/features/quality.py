"""A cheap intrinsic check of an embedding: do nearest neighbours share a label?

For each item with the modality and at least one label, take its k nearest neighbours
by cosine similarity (among such items, itself excluded) and count the share that
share at least one label with it (e.g. a genre). The same share for randomly drawn
neighbours is the baseline: an encoder that is broken (constant, random, misaligned
rows) scores at the baseline, a useful one above it. On ml100k-mm the reference
MiniLM text features reach about 0.51 and EfficientNet-Lite0 posters 0.44 (random 0.35).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def label_matrix(labels: Sequence[Any], sep: str = "|") -> np.ndarray:
    """'|'-separated label strings -> (n, n_labels) bool; missing or empty -> no labels."""
    sets = [{t.strip() for t in str(v).split(sep) if t.strip()} if isinstance(v, str) else set() for v in labels]
    vocab = sorted(set().union(*sets)) if sets else []
    col = {t: j for j, t in enumerate(vocab)}
    out = np.zeros((len(sets), len(vocab)), bool)
    for i, s in enumerate(sets):
        out[i, [col[t] for t in s]] = True
    return out


def neighbour_label_share(values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int = 10,
                          seed: int = 0, block: int = 1024) -> dict[str, float | int]:
    """Share of each item's k nearest neighbours that share a label, and the random baseline.

    Args:
        values: (n, d) embeddings; mask: (n,) bool present; labels: (n, L) bool.
        k: neighbours per item.

    Returns:
        {"share": mean share, "random": baseline share, "items": items scored, "k": k}.
    """
    keep = np.flatnonzero(mask & labels.any(axis=1))
    if len(keep) <= k:
        return {"share": float("nan"), "random": float("nan"), "items": int(len(keep)), "k": k}
    x = values[keep].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    lab = labels[keep].astype(np.float32)  # (m, L)
    shares = np.empty(len(keep), np.float32)
    for start in range(0, len(keep), block):
        sims = x[start : start + block] @ x.T  # (b, d) x (d, m) -> (b, m)
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not your own neighbour
        nn = np.argpartition(-sims, k, axis=1)[:, :k]  # (b, k)
        overlap = np.einsum("bl,bkl->bk", lab[start : start + block], lab[nn]) > 0  # (b, k)
        shares[start : start + sims.shape[0]] = overlap.mean(axis=1)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(keep), size=(2, 20_000))
    a, b = a[a != b], b[a != b]
    random = float(((lab[a] * lab[b]).sum(axis=1) > 0).mean())
    return {"share": round(float(shares.mean()), 4), "random": round(random, 4), "items": int(len(keep)), "k": k}
