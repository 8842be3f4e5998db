"""TrainData: everything training reads, in memory, assembled from the step folders.

The training loop (training.py), the model assembly (models/assemble.py) and the AutoML
study all take a TrainData; it lives here, with the data, so that none of them has to
import another to reach it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec import schema
from fusionrec.config import TrainConfig


@dataclass
class TrainData:
    """Everything training needs, in memory: interactions as index frames and matrices,
    item features by key ("text:minilm": (values (n, d), mask (n,))), and the id maps."""

    train: pd.DataFrame  # user_idx, item_idx[, context columns]
    valid: sp.csr_matrix  # (n_users, n_items)
    test: sp.csr_matrix | None
    features: dict[str, tuple[np.ndarray, np.ndarray]]
    item_ids: list[str]
    user_ids: list[str]
    titles: list[str] | None = None
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fingerprint: str = ""
    negatives: pd.DataFrame | None = None  # user_idx, item_idx[, timestamp]: negative events (never positives)
    # results derived from this data that later trainings on it reuse (the recency probe and its fit, the
    # origin weights); the fields above are not changed after construction
    cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def matrix(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """Binary (n_users, n_items) matrix of an interaction frame."""
        rows, cols = frame[schema.USER_IDX].to_numpy(np.int64), frame[schema.ITEM_IDX].to_numpy(np.int64)
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @property
    def train_matrix(self) -> sp.csr_matrix:
        return self.matrix(self.train)

    def negative_matrix(self) -> sp.csr_matrix | None:
        """Binary (n_users, n_items) matrix of the negative events (dislike, skip); None if there are none."""
        if self.negatives is None or self.negatives.empty:
            return None
        return self.matrix(self.negatives)

    def recency_matrix(self, half_life: float, origin_weights: Mapping[str, float] | None = None) -> sp.csr_matrix:
        """The train matrix with each interaction weighted by its recency and by its origin.

        Recency: 0.5^(newer / half_life), where `newer` counts the user's interactions after this
        one (by timestamp; file order without one), so the newest weighs 1 whatever the time gaps.
        Origin: origin_weights[origin] for merged feedback (schema.ORIGIN: what the model did not
        choose, explored or organic, can count more), 1 otherwise. Binary when half_life <= 0 and
        no interaction's origin is weighted.
        """
        factor = self._origin_factor(origin_weights)
        if half_life <= 0 and factor is None:
            return self.train_matrix
        frame = self.train
        order = (np.argsort(frame[schema.TIMESTAMP].to_numpy(), kind="stable") if schema.TIMESTAMP in frame.columns
                 else np.arange(len(frame)))
        rows = frame[schema.USER_IDX].to_numpy(np.int64)[order]
        cols = frame[schema.ITEM_IDX].to_numpy(np.int64)[order]
        weights = np.ones(len(frame))
        if half_life > 0:
            newer = pd.Series(rows).groupby(rows).cumcount(ascending=False).to_numpy(np.float64)
            weights = 0.5 ** (newer / half_life)
        if factor is not None:
            weights = weights * factor[order]
        m = sp.csr_matrix((weights, (rows, cols)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()  # a pair met twice: both weights count
        return m.astype(np.float32)

    def is_weighted(self, half_life: float, origin_weights: Mapping[str, float] | None = None) -> bool:
        """Whether recency_matrix(half_life, origin_weights) is weighted (not the binary matrix)."""
        return half_life > 0 or self._origin_factor(origin_weights) is not None

    def _origin_factor(self, origin_weights: Mapping[str, float] | None) -> np.ndarray | None:
        """(rows,) weight of each train row by its origin; None when every weight is 1.

        Kept in `cache` per weights: one training asks for it a dozen times (graph, targets, EASE,
        every recency candidate), and mapping the origin strings costs seconds at 10M rows.
        """
        if not origin_weights or schema.ORIGIN not in self.train.columns:
            return None
        key = ("origin_factor", tuple(sorted(origin_weights.items())))
        if key not in self.cache:
            factor = self.train[schema.ORIGIN].astype(str).str.lower().map(dict(origin_weights)).fillna(1.0)
            factor = factor.to_numpy(np.float64)
            self.cache[key] = None if np.all(factor == 1.0) else factor
        cached: np.ndarray | None = self.cache[key]
        return cached

    @classmethod
    def from_dirs(cls, ingested_dir: Path | str, features_dir: Path | str, split_dir: Path | str) -> TrainData:
        """Read an ingested folder, a features folder and a split folder (ours or external)."""
        from fusionrec.data.loading import load_ingested, load_split
        from fusionrec.features.store import load_features

        ingested = load_ingested(ingested_dir)
        split = load_split(split_dir, ingested)
        feats = {k: (fm.values, fm.mask) for k, fm in load_features(features_dir).items()}
        items = ingested.items
        titles = items["title"].astype(str).tolist() if "title" in items.columns else None
        train = split.train
        negative = schema.is_negative(train)
        data = cls(
            train=train[~negative].reset_index(drop=True), negatives=train[negative].reset_index(drop=True),
            valid=split.matrix("valid"), test=split.matrix("test"), features=feats,
            item_ids=items[schema.ITEM_ID].astype(str).tolist(),
            user_ids=ingested.users[schema.USER_ID].astype(str).tolist(), titles=titles,
            cold_items=np.asarray(split.cold_items, dtype=np.int64),
        )
        data.fingerprint = fingerprint(data)
        return data



def fingerprint(data: TrainData) -> str:
    """A short hash of the training interactions and catalogue size (ties a model to its data)."""
    h = hashlib.sha256()
    h.update(np.asarray([data.n_users, data.n_items]).tobytes())
    h.update(data.train[[schema.USER_IDX, schema.ITEM_IDX]].to_numpy(np.int64).tobytes())
    return h.hexdigest()[:16]


__all__ = ["TrainData", "fingerprint"]


def valid_sample(valid: sp.csr_matrix, cfg: TrainConfig) -> sp.csr_matrix:
    """The validation rows of at most cfg.valid_max_users users (a sample seeded by cfg.seed).

    Full ranking costs users x items per evaluation; on large catalogues a sample keeps early
    stopping and the blend choice affordable, and it changes nothing for smaller user sets.
    """
    valid = sp.csr_matrix(valid)
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    if cfg.valid_max_users <= 0 or len(users) <= cfg.valid_max_users:
        return valid
    keep = np.zeros(valid.shape[0], np.float32)
    keep[np.random.default_rng(cfg.seed).choice(users, cfg.valid_max_users, replace=False)] = 1.0
    out = sp.csr_matrix(sp.diags(keep) @ valid)
    out.eliminate_zeros()
    return out
