"""The trained recommender as serving and evaluation see it (numpy in, numpy out).

It holds the final user and item vectors, the small modules that embed new items and
apply request context, the cold-item content tower and the EASE component. Scores of
the parts are blended after per-user normalisation (z-scores over the items the user
could be recommended: trained, not in the history):

    s = (1 - w) z(neural) + w z(EASE)                 for items seen in training
    s = (s_content + z(cold tower)) / 2 - offset     for items never seen (content only)

Artifacts: `model.safetensors` (arrays + module weights), `config.json` (TrainConfig
+ meta) and the id maps `items.parquet` / `users.parquet`. Loading executes no code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec import schema
from fusionrec.config import TrainConfig
from fusionrec.io import read_json, write_json
from fusionrec.models.context import encode_context
from fusionrec.models.inference_parts import InferenceParts, zscore
from fusionrec.models.sparse_ease import sparse_row_sum

log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded; the message names the file."""


def _csr(indptr: np.ndarray, indices: np.ndarray, n_items: int, data: np.ndarray | None = None) -> sp.csr_matrix:
    data = np.ones(len(indices), dtype=np.float32) if data is None else data
    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_items))


class Recommender:
    """A trained fusionrec model: scoring, fold-in, new items, save/load."""

    def __init__(self, config: TrainConfig, arrays: dict[str, np.ndarray], state: dict[str, np.ndarray],
                 item_ids: Sequence[str], user_ids: Sequence[str], meta: dict[str, Any],
                 titles: Sequence[str] | None = None) -> None:
        self.config = config
        self.meta = meta
        self.arrays = arrays
        self.state = state
        self.item_ids = [str(i) for i in item_ids]
        self.user_ids = [str(u) for u in user_ids]
        self.titles = [str(t) for t in titles] if titles is not None else [""] * len(self.item_ids)
        self._parts = InferenceParts(config, meta, state)
        self._item_pos: dict[str, int] | None = None
        self._user_pos: dict[str, int] | None = None
        self._hist: sp.csr_matrix | None = None  # the training history, built once per item count
        self._users: np.ndarray | None = None  # user matrix without request context, built once
        self._ease_csr: sp.csr_matrix | None = None  # sparse EASE as scipy, built once for batch scoring

    # --- identity -------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def modalities(self) -> list[str]:
        """Feature keys the model uses, in order ("text:minilm", "image:effnet-lite0", ...)."""
        return list(self.meta.get("modalities", []))

    @property
    def ease_blend(self) -> float:
        return float(self.meta.get("ease_blend", 0.0))

    def item_index(self, item_id: str) -> int | None:
        """Dense index of an item id, or None when unknown."""
        if self._item_pos is None or len(self._item_pos) != self.n_items:
            self._item_pos = {i: n for n, i in enumerate(self.item_ids)}
        return self._item_pos.get(str(item_id))

    def user_index(self, user_id: str) -> int | None:
        """Dense index of a user id, or None when unknown (fold them in with score_histories)."""
        if self._user_pos is None:
            self._user_pos = {u: n for n, u in enumerate(self.user_ids)}
        return self._user_pos.get(str(user_id))

    # --- scoring --------------------------------------------------------------------
    def _history(self) -> sp.csr_matrix:
        """Training history (users, items); recency weights when the model was trained with them.

        Built once: a copy made to add items (copy-on-write) shares it and rebuilds it at its own width.
        """
        if self._hist is None or self._hist.shape[1] != self.n_items:
            self._hist = _csr(self.arrays["hist_indptr"], self.arrays["hist_indices"], self.n_items,
                              self.arrays.get("hist_data"))
        return self._hist

    def _history_terms(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(seen (b, n) bool, EASE scores (b, n_e) or None) of known users' training histories.

        One user (a request) reads its history straight from the arrays: a scipy row slice and
        a sparse product cost far more than the arithmetic at serving sizes.
        """
        if len(user_idx) != 1:
            return self._history_rows_terms(self._history()[user_idx])
        u = int(user_idx[0])
        lo, hi = self.arrays["hist_indptr"][u : u + 2]
        idx = self.arrays["hist_indices"][lo:hi]
        seen = np.zeros((1, self.n_items), bool)
        seen[0, idx] = True
        if not self.blends_ease:
            return seen, None
        weights = self.arrays["hist_data"][lo:hi] if "hist_data" in self.arrays else np.ones(len(idx), np.float32)
        if "ease" not in self.arrays:  # sparse EASE: the history's rows, summed into one (n_e,) vector
            a = self.arrays
            return seen, sparse_row_sum(a["ease_indptr"], a["ease_indices"], a["ease_data"], idx, weights)[None, :]
        ease = self.arrays["ease"]
        keep = idx < ease.shape[0]
        return seen, (weights[keep] @ ease[idx[keep]])[None, :]  # (h,) x (h, n_e)

    def _history_rows_terms(self, hist: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray | None]:
        """(seen (b, n) bool, EASE scores (b, n_e) or None) of history rows (b, n)."""
        if not self.blends_ease:
            return hist.toarray() > 0, None
        ease = self.arrays["ease"] if "ease" in self.arrays else self._sparse_ease()  # (n_e, n_e): items at training
        rows = hist if hist.shape[1] == ease.shape[0] else hist[:, : ease.shape[0]]
        scores = rows @ ease  # (b, n_e) x (n_e, n_e)
        return hist.toarray() > 0, scores.toarray() if sp.issparse(scores) else np.asarray(scores)

    def _sparse_ease(self) -> sp.csr_matrix:
        """The sparse EASE matrix (n_e, n_e) from its CSR arrays, built once (batch scoring only)."""
        if self._ease_csr is None:
            a = self.arrays
            self._ease_csr = _csr(a["ease_indptr"], a["ease_indices"], len(a["ease_indptr"]) - 1, a["ease_data"])
        return self._ease_csr

    @property
    def blends_ease(self) -> bool:
        """Whether scores blend the EASE part (dense "ease" or sparse "ease_indptr"/... arrays)."""
        return self.ease_blend > 0 and ("ease" in self.arrays or "ease_indptr" in self.arrays)

    def user_matrix(self, user_idx: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """User vectors (b, D) of known users; without context they are computed once for all users."""
        if context is not None:
            return self._parts.user_matrix(self.arrays["user_base"][user_idx], context)
        if self._users is None:
            self._users = np.ascontiguousarray(self._parts.user_matrix(self.arrays["user_base"], None))
        return self._users[user_idx]

    def _combine(self, neural: np.ndarray, seen: np.ndarray, ease: np.ndarray | None,
                 cold_users: np.ndarray | None) -> np.ndarray:
        """Blend the parts after per-user normalisation: (b, n) each -> (b, n).

        The z-scores are taken over the items each user could be recommended (trained, not in
        the history), so the user's own history items do not stretch the scale of either part.

        Args:
            neural: (b, n) the network's scores; seen: (b, n) the history; ease: (b, n_e) EASE
                scores of the items that existed at training time, or None; cold_users: (b, d_c).
        """
        trained = self.arrays["trained"].view(bool)
        ref = trained & ~seen  # (b, n)
        w = self.ease_blend if ease is not None else 0.0
        out = zscore(neural, ref, weight=1 - w)
        if ease is not None:  # None when the blend weight is 0 (blends_ease)
            if ease.shape[1] < neural.shape[1]:  # items added since training have no EASE column
                ease = np.pad(ease, ((0, 0), (0, neural.shape[1] - ease.shape[1])))
            zscore(ease, ref, out=out, weight=w, add=True)
        if cold_users is not None and "cold_item" in self.arrays and not trained.all():
            untrained = ~trained
            cold = cold_users @ self.arrays["cold_item"].T + self.arrays["cold_bias"][None, :]  # (b, n)
            # the full model's content path and the cold tower agree best
            out[:, untrained] = 0.5 * (out[:, untrained] + zscore(cold, ref)[:, untrained]) - self.config.cold_offset
        return out

    def score_users(self, user_idx: np.ndarray, context: pd.DataFrame | None = None) -> np.ndarray:
        """Scores (b, n_items) of known users, higher is better.

        Args:
            user_idx: (b,) dense user indices.
            context: optional (b rows) request context columns.
        """
        user_idx = np.asarray(user_idx, dtype=np.int64)
        neural = self.user_matrix(user_idx, self._context(context)) @ self.arrays["item_vecs"].T  # (b, n)
        cold = self.arrays["cold_user"][user_idx] if "cold_user" in self.arrays else None
        return self._combine(neural, *self._history_terms(user_idx), cold)

    def score_histories(self, histories: Sequence[np.ndarray],
                        context: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        """Scores (b, n_items) of users known only by their recent items (fold-in).

        The user vector is the mean of the history's item vectors (LightGCN's first layer);
        EASE needs only the history. A user with an empty history gets popularity.
        """
        rows = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
        for h in rows:
            if len(h) and (h.min() < 0 or h.max() >= self.n_items):
                raise IndexError(f"history item index out of range 0..{self.n_items - 1}: {h.tolist()[:10]}")
        indptr = np.concatenate([[0], np.cumsum([len(h) for h in rows])]).astype(np.int64)
        hist = _csr(indptr, np.concatenate(rows) if rows else np.zeros(0, np.int64), self.n_items)
        counts = np.maximum(np.diff(indptr), 1)[:, None].astype(np.float32)
        base = (hist @ self.arrays["item_e"]) / counts  # (b, n) x (n, d) -> (b, d)
        neural = self._parts.user_matrix(base, self._context(context)) @ self.arrays["item_vecs"].T
        cold = (hist @ self.arrays["cold_item"]) / counts if "cold_item" in self.arrays else None
        out = self._combine(neural, *self._history_rows_terms(hist), cold)
        empty = np.diff(indptr) == 0
        if empty.any():
            out[empty] = zscore(self.popularity()[None, :], np.ones(self.n_items, bool))
        return out

    def _context(self, context: pd.DataFrame | Sequence[Mapping[str, Any]] | None) -> np.ndarray | None:
        spec = self.meta.get("context_spec") or []
        if context is None or not spec:
            return None
        frame = context if isinstance(context, pd.DataFrame) else pd.DataFrame(list(context))
        return encode_context(spec, frame)

    # --- vectors ----------------------------------------------------------------------
    def item_vectors(self) -> np.ndarray:
        """(n_items, D) normalised item vectors (cosine similarity = dot product)."""
        return self.arrays["item_vecs"]

    def modality_vectors(self) -> dict[str, np.ndarray]:
        """Per-modality projected item vectors {key: (n_items, d)}, L2-normalised, zeros where missing."""
        z = self.modality_stack()
        return {k: z[:, m] for m, k in enumerate(self.modalities)}

    def modality_stack(self, start: int = 0) -> np.ndarray:
        """(n_items - start, M, d): every modality's projected vectors of the items from `start` on,
        in `modalities` order, L2-normalised, zeros where an item lacks the modality."""
        feats = [self.arrays[f"feat::{k}"][start:] for k in self.modalities]
        masks = np.stack([self.arrays[f"mask::{k}"][start:].astype(bool) for k in self.modalities], 1)
        return np.asarray(self._parts.project(feats, masks))

    def popularity(self) -> np.ndarray:
        """(n_items,) training interaction counts."""
        return self.arrays["popularity"]

    def seen(self, user_idx: int) -> np.ndarray:
        """Item indices a known user interacted with (train + valid): exclude them when serving."""
        p, i = self.arrays["seen_indptr"], self.arrays["seen_indices"]
        return i[p[user_idx] : p[user_idx + 1]].astype(np.int64)

    # --- new items --------------------------------------------------------------------
    def _feature_inputs(self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
                        ) -> tuple[list[np.ndarray], np.ndarray]:
        unknown = set(features) - set(self.modalities)
        if unknown:
            raise KeyError(f"features {sorted(unknown)} are not used by this model; it uses {self.modalities}")
        sizes = {len(v) for v in features.values()}
        if len(sizes) != 1:
            raise ValueError(f"features must all hold the same number of items, got sizes {sorted(sizes)}")
        b = sizes.pop()
        feats, mask_cols = [], []
        for key in self.modalities:
            dim = self.arrays[f"feat::{key}"].shape[1]
            v = np.asarray(features.get(key, np.zeros((b, dim))), dtype=np.float32)
            if v.shape != (b, dim):
                raise ValueError(f"{key}: expected ({b}, {dim}) features, got {v.shape}")
            m = np.asarray(masks.get(key, np.full(b, key in features)), dtype=bool)
            feats.append(v * m[:, None])
            mask_cols.append(m)
        return feats, np.stack(mask_cols, axis=1)

    def encode_new_items(self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
                         ) -> np.ndarray:
        """Item vectors (b, D) of items never seen by the model, through the content path.

        Args:
            features: {feature key: (b, d_m)}, the model's modalities (a missing key is masked).
            masks: {feature key: (b,) bool}, True where the item has the modality.
        """
        return self._encode(features, masks)["item_vecs"]

    def _encode(self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats, mask = self._feature_inputs(features, masks)
        stored = [self.arrays[f"feat::{k}"] for k in self.modalities]
        stored_mask = np.stack([self.arrays[f"mask::{k}"].astype(bool) for k in self.modalities], 1)
        return self._parts.encode(feats, mask, stored, stored_mask, self.arrays["item_h0"])

    def add_items(self, item_ids: Sequence[str], features: Mapping[str, np.ndarray],
                  masks: Mapping[str, np.ndarray], titles: Sequence[str] | None = None) -> np.ndarray:
        """Add new items, scorable at once through the content path; returns their new indices."""
        ids = [str(i) for i in item_ids]
        dupes = [i for i in ids if self.item_index(i) is not None] + [i for i in set(ids) if ids.count(i) > 1]
        if dupes:
            raise ValueError(f"item ids already in the model or repeated: {sorted(set(dupes))[:10]}")
        enc = self._encode(features, masks)
        feats, mask = self._feature_inputs(features, masks)
        b = len(ids)
        for key, rows in enc.items():
            self.arrays[key] = np.concatenate([self.arrays[key], rows.astype(self.arrays[key].dtype)])
        for m, key in enumerate(self.modalities):
            self.arrays[f"feat::{key}"] = np.concatenate([self.arrays[f"feat::{key}"], feats[m]])
            self.arrays[f"mask::{key}"] = np.concatenate([self.arrays[f"mask::{key}"], mask[:, m].astype(np.uint8)])
        self.arrays["trained"] = np.concatenate([self.arrays["trained"], np.zeros(b, np.uint8)])
        self.arrays["popularity"] = np.concatenate([self.arrays["popularity"], np.zeros(b, np.float32)])
        self.item_ids = self.item_ids + ids  # new lists: a reader holding the old ones is unaffected
        self.titles = self.titles + (list(titles) if titles is not None else [""] * b)
        return np.arange(self.n_items - b, self.n_items)

    # --- persistence ------------------------------------------------------------------
    def save(self, out_dir: Path | str) -> Path:
        """Write model.safetensors, config.json and the id maps into out_dir."""
        from safetensors.numpy import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"arr.{k}": np.ascontiguousarray(v) for k, v in self.arrays.items()}
        tensors.update({f"state.{k}": np.ascontiguousarray(v) for k, v in self.state.items()})
        save_file(tensors, str(out / schema.MODEL_WEIGHTS))
        write_json(out / schema.MODEL_CONFIG, {"train_config": self.config.model_dump(mode="json"), "meta": self.meta})
        pd.DataFrame({schema.ITEM_IDX: np.arange(self.n_items, dtype=np.int32), schema.ITEM_ID: self.item_ids,
                      "title": self.titles}).to_parquet(out / schema.MODEL_ITEMS, index=False)
        pd.DataFrame({schema.USER_IDX: np.arange(self.n_users, dtype=np.int32),
                      schema.USER_ID: self.user_ids}).to_parquet(out / schema.MODEL_USERS, index=False)
        return out

    @classmethod
    def load(cls, model_dir: Path | str) -> Recommender:
        """Read a folder written by `save` (safetensors + JSON + parquet; no pickle)."""
        from safetensors.numpy import load_file

        d = Path(model_dir)
        for name in (schema.MODEL_WEIGHTS, schema.MODEL_CONFIG, schema.MODEL_ITEMS, schema.MODEL_USERS):
            if not (d / name).is_file():
                raise ModelLoadError(f"{d}: not a model folder, missing {name} (write one with `fusionrec train`)")
        tensors = load_file(str(d / schema.MODEL_WEIGHTS))
        cfg_json = read_json(d / schema.MODEL_CONFIG)
        items = pd.read_parquet(d / schema.MODEL_ITEMS)
        users = pd.read_parquet(d / schema.MODEL_USERS)
        arrays = {k[4:]: v for k, v in tensors.items() if k.startswith("arr.")}
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("state.")}
        titles = items["title"].tolist() if "title" in items.columns else None
        saved = dict(cfg_json["train_config"])
        unknown = sorted(set(saved) - set(TrainConfig.model_fields))
        if unknown:  # trained by another fusionrec version: the arrays are what scoring reads
            log.warning("%s: ignoring train settings this version does not know: %s", d, ", ".join(unknown))
        config = TrainConfig(**{k: v for k, v in saved.items() if k not in unknown})
        return cls(config, arrays, state, items[schema.ITEM_ID].tolist(),
                   users[schema.USER_ID].tolist(), cfg_json["meta"], titles)
