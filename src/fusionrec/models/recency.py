"""Recency weighting chosen before training, by an EASE probe on validation.

Whether a user's newest interactions predict the next ones better than the older ones
depends on the data and on how its validation rows were drawn: on a time-ordered split
(the last interactions held out) weighting by recency helps every part of the model;
on a random split it throws information away. `choose_recency` lets validation decide:
EASE (seconds to fit, and scoring like the model's item-item part) is fitted on the
binary history and on each recency-weighted one (train.recency_choices) and scored on
the validation rows; a half-life is taken only when its per-user NDCG@20 gain over the
binary history is larger than `MIN_Z` paired standard errors, so noise on a small
validation set leaves recency off. The network is then trained once, with the choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from fusionrec.config import TrainConfig
from fusionrec.models.ease import weights_key

if TYPE_CHECKING:
    from fusionrec.data.train_data import TrainData

MIN_Z = 2.0  # a half-life must beat the binary history by this many paired standard errors
ITEM_ITEM = "item_item"  # TrainData.cache: (weights_key, fit) of the chosen history, which assemble reuses


def _per_user_ndcg(data: TrainData, cfg: TrainConfig, half_life: float, valid: sp.csr_matrix
                   ) -> tuple[np.ndarray, np.ndarray | sp.csr_matrix]:
    """Validation NDCG@20 per user (users with validation rows, in order) of EASE on this history, and its fit."""
    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.models.ease import item_item_weights

    hist = sp.csr_matrix(data.recency_matrix(half_life, cfg.origin_weights), dtype=np.float32)
    b = item_item_weights(hist, cfg, weighted=data.is_weighted(half_life, cfg.origin_weights))

    def score(users: np.ndarray) -> np.ndarray:
        s = hist[users] @ b  # (u, n) x (n, n) -> (u, n)
        return s.toarray() if sp.issparse(s) else np.asarray(s)

    ndcg = np.asarray(evaluate_scores(score, data.train_matrix, valid, ks=(20,), per_user=True)["per_user"]["ndcg@20"])
    return ndcg, b


def choose_recency(data: TrainData, cfg: TrainConfig) -> tuple[float, dict[str, float]]:
    """The recency half-life to train with, and the probe's validation NDCG@20 per candidate.

    A half-life set in the config (> 0) is kept; so is 0 when recency_choices is empty or
    there are no validation rows. Otherwise the best candidate by mean gain among those
    whose gain over the binary history exceeds MIN_Z standard errors, else 0.
    """
    from fusionrec.data.train_data import valid_sample

    if cfg.recency_half_life > 0 or not cfg.recency_choices or data.valid is None or data.valid.nnz == 0:
        return cfg.recency_half_life, {}
    valid = valid_sample(data.valid, cfg)
    if valid.nnz == 0:
        return cfg.recency_half_life, {}
    key = ("recency", *weights_key(data, cfg, 0.0), tuple(sorted(set(cfg.recency_choices))),
           cfg.valid_max_users, cfg.seed)
    if key in data.cache:  # the same probe ran on this data before (search trials)
        best, probe = data.cache[key]
        return best, dict(probe)
    base, fit = _per_user_ndcg(data, cfg, 0.0, valid)
    probe, best, best_gain, best_fit = {"0": float(base.mean())}, 0.0, 0.0, fit
    for half_life in sorted(set(cfg.recency_choices)):
        ndcg, fit = _per_user_ndcg(data, cfg, half_life, valid)
        gain = ndcg - base  # (users,) paired differences
        probe[f"{half_life:g}"] = float(base.mean() + gain.mean())
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.inf
        if gain.mean() > MIN_Z * se and gain.mean() > best_gain:
            best, best_gain, best_fit = float(half_life), float(gain.mean()), fit
        del fit  # a losing candidate's fit can be freed before the next one is made
    data.cache[key] = (best, dict(probe))
    data.cache[ITEM_ITEM] = (weights_key(data, cfg, best), best_fit)  # the fit training stores
    return best, probe
