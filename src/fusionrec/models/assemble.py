"""Turn a trained FusionNet into a Recommender: arrays, id maps, EASE and its blend weight."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from fusionrec.config import TrainConfig
from fusionrec.models.recommender import Recommender

if TYPE_CHECKING:
    from fusionrec.data.train_data import TrainData
    from fusionrec.models.network import FusionNet

BLEND_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
BLEND_MAX_USERS = 1_000  # the blend is chosen on at most this many validation users (full ranking, 11 weights)


def _csr_arrays(m: sp.csr_matrix, prefix: str, weighted: bool = False) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    m.sort_indices()
    out = {f"{prefix}_indptr": m.indptr.astype(np.int64), f"{prefix}_indices": m.indices.astype(np.int32)}
    if weighted:
        out[f"{prefix}_data"] = m.data.astype(np.float32)
    return out


def _rows_of(scores: np.ndarray, users: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A score function over the precomputed rows (len(users), n) of sorted users."""
    return lambda q: scores[np.searchsorted(users, q)]


def choose_blend(rec: Recommender, train: sp.csr_matrix, valid: sp.csr_matrix, metric: str = "ndcg@20",
                 chunk: int = 512) -> tuple[float, dict[float, float]]:
    """The EASE weight in BLEND_GRID with the best validation metric (ties: the smaller weight).

    A blend is linear in its weight, s(w) = (1 - w) s(0) + w s(1) (z-scores and the cold tower's
    mix are linear too), so each chunk of users is scored twice, not once per weight.
    """
    from fusionrec.evaluation.metrics import evaluate_scores

    users = np.flatnonzero(np.diff(sp.csr_matrix(valid).indptr) > 0)
    if len(users) > BLEND_MAX_USERS:  # a seeded sample: the choice is one number, the cost is users x items x 11
        users = np.sort(np.random.default_rng(0).choice(users, BLEND_MAX_USERS, replace=False))
    sums = dict.fromkeys(BLEND_GRID, 0.0)
    for start in range(0, len(users), chunk):
        b = users[start : start + chunk]  # sorted
        parts = []
        for w in (0.0, 1.0):
            rec.meta["ease_blend"] = w
            parts.append(rec.score_users(b))  # (c, n)
        rows = sp.diags(np.isin(np.arange(valid.shape[0]), b).astype(np.float32)) @ valid  # this chunk's users
        for w in BLEND_GRID:
            blended = (1 - w) * parts[0] + w * parts[1]
            m = evaluate_scores(_rows_of(blended, b), train, rows, ks=(20,))
            sums[w] += m[metric] * m["n_users"]
    results = {w: float(v / max(len(users), 1)) for w, v in sums.items()}
    best = max(results, key=lambda w: (results[w], -w))
    rec.meta["ease_blend"] = float(best)
    return float(best), results


def assemble_recommender(model: FusionNet, data: TrainData, cfg: TrainConfig, info: dict[str, Any],
                         best_epoch: int) -> tuple[Recommender, dict[str, float]]:
    """Package the trained network; choose the EASE blend on valid when cfg.ease_blend is None.

    Returns:
        (recommender, its validation metrics with the blend applied).
    """
    import fusionrec
    from fusionrec.data.train_data import valid_sample
    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.models.ease import EASE_KEYS, item_item_arrays, weights_key
    from fusionrec.models.recency import ITEM_ITEM

    exported = model.export()
    train = data.train_matrix
    keys: list[str] = info["keys"]
    arrays = dict(exported.arrays)
    arrays["popularity"] = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
    # the history EASE reads, weighted by recency and origin like the training targets (binary when neither applies)
    hist = data.recency_matrix(cfg.recency_half_life, cfg.origin_weights)
    weighted = data.is_weighted(cfg.recency_half_life, cfg.origin_weights)
    arrays.update(_csr_arrays(hist, "hist", weighted=weighted))
    negatives = data.negative_matrix()
    seen = train + data.valid  # what a user met is not offered again, a disliked item neither
    if negatives is not None:
        seen = seen + negatives
    arrays.update(_csr_arrays(seen, "seen"))
    for k in keys:
        arrays[f"feat::{k}"] = np.asarray(data.features[k][0], dtype=np.float32)
        arrays[f"mask::{k}"] = np.asarray(data.features[k][1], dtype=np.uint8)
    use_ease = cfg.ease_blend is None or cfg.ease_blend > 0
    if use_ease:
        key, fit = data.cache.get(ITEM_ITEM, (None, None))  # the recency probe's fit of this history
        fit = fit if key == weights_key(data, cfg, cfg.recency_half_life) else None
        arrays.update(item_item_arrays(hist, cfg, weighted, fit))  # dense EASE, or sparse CSR arrays on large catalogues
    meta: dict[str, Any] = {
        "version": getattr(fusionrec, "__version__", "0"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_fingerprint": data.fingerprint,
        "modalities": keys, "encoders": keys,
        "feature_dims": [int(data.features[k][0].shape[1]) for k in keys],
        "reduced_dims": list(model.reduced_dims),
        "context_spec": info["context_spec"],
        "ease_blend": float(cfg.ease_blend or 0.0),
        "best_epoch": best_epoch,
    }
    rec = Recommender(cfg, arrays, exported.state, data.item_ids, data.user_ids, meta, data.titles)
    if use_ease and cfg.ease_blend is None:
        _, grid = choose_blend(rec, train, valid_sample(data.valid, cfg))
        meta["ease_blend_grid"] = {str(k): v for k, v in grid.items()}
    if rec.ease_blend == 0:
        for key in EASE_KEYS:
            rec.arrays.pop(key, None)  # unused: keep the model folder small
    valid = evaluate_scores(rec.score_users, train, valid_sample(data.valid, cfg), ks=(10, 20))
    meta["valid_metrics"] = {k: float(v) for k, v in valid.items() if "@" in k}
    return rec, meta["valid_metrics"]
