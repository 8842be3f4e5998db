"""The torch modules a trained Recommender keeps for inference, rebuilt from config + weights.

`InferenceParts` turns stored module weights back into the item encoder (new items),
the user head (request context, modality attention) and the cold tower's linear maps.
torch is imported lazily, the first time one of them is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionrec.config import TrainConfig


def _masked_row_sums(x: np.ndarray, mask: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """(k, 1) float64 sums of each row of x over the mask's columns; buf (k, n) float32 is overwritten.

    x times the mask is one fast pass; a row with an infinite value outside the mask (0 * inf)
    is summed again the exact way, by copying only the masked values.
    """
    with np.errstate(invalid="ignore"):  # 0 * inf: the row is summed again below
        np.multiply(x, mask, out=buf)
    sums = buf.sum(axis=1, keepdims=True, dtype=np.float64)
    if not np.isfinite(sums).all():
        exact = np.zeros_like(buf)
        np.copyto(exact, x, where=mask)
        sums = exact.sum(axis=1, keepdims=True, dtype=np.float64)
    return sums


def zscore(scores: np.ndarray, ref: np.ndarray, out: np.ndarray | None = None, weight: float = 1.0,
           add: bool = False, chunk_elems: int = 1 << 20) -> np.ndarray:
    """Per-row z-scores, with mean and std taken over the reference columns of each row.

    Works through a few rows at a time (about chunk_elems values), so that a batch over a large
    catalogue is read from memory a handful of times rather than once per temporary array.

    Args:
        scores: (b, n) raw scores.
        ref: (n,) or (b, n) bool, the reference items (trained, and not already in the history).
        out: (b, n) float32 to write into (a new array when None).
        weight: the z-scores are multiplied by it.
        add: add the weighted z-scores to out instead of overwriting it (a blend, one part at a time).
    Returns:
        out, float32.
    """
    b, n = scores.shape
    if out is None:
        out = np.zeros((b, n), dtype=np.float32) if add else np.empty((b, n), dtype=np.float32)
    rows = max(1, chunk_elems // max(n, 1))
    tmp, squares = (np.empty((min(rows, b), n), dtype=np.float32) for _ in range(2))
    for r in range(0, b, rows):
        s = scores[r : r + rows]
        m = ref[r : r + rows] if ref.ndim == 2 else ref[None, :]
        t, sq, o = tmp[: len(s)], squares[: len(s)], out[r : r + rows]
        count = np.maximum(m.sum(axis=1, keepdims=True), 1)  # (k, 1), or (1, 1) for a shared reference
        mu = _masked_row_sums(s, m, t) / count
        np.subtract(s, mu.astype(np.float32), out=t)  # centred
        np.multiply(t, t, out=sq)
        sd = np.sqrt(_masked_row_sums(sq, m, sq) / count)
        scale = (weight / np.where(sd > 1e-12, sd, 1.0)).astype(np.float32)
        if add:
            t *= scale
            o += t
        else:
            np.multiply(t, scale, out=o)
    return out


def _mean_cosine(new: list[np.ndarray], new_mask: np.ndarray, old: list[np.ndarray], old_mask: np.ndarray
                 ) -> np.ndarray:
    """(b, n) mean cosine similarity over the modalities both items have."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = np.zeros((new[0].shape[0], old[0].shape[0]), dtype=np.float32)
    count = np.zeros_like(sim)
    for m in range(len(new)):
        both = new_mask[:, m, None] & old_mask[None, :, m]  # (b, n)
        sim += (unit(new[m]) @ unit(old[m]).T) * both
        count += both
    return sim / np.maximum(count, 1.0)


class InferenceParts:
    """Item encoder, user head and cold tower weights of one trained model."""

    def __init__(self, config: TrainConfig, meta: dict[str, Any], state: dict[str, np.ndarray]) -> None:
        self.config = config
        self.meta = meta
        self.state = state
        self._encoder: Any = None
        self._head: Any = None

    @property
    def attention(self) -> bool:
        return self.config.fusion == "attention" and bool(self.meta.get("modalities"))

    def _sub_state(self, prefix: str) -> dict[str, Any]:
        import torch

        return {k[len(prefix) + 1 :]: torch.from_numpy(np.array(v)) for k, v in self.state.items()
                if k.startswith(prefix + ".")}

    def encoder(self) -> Any:
        """The ItemEncoder module with its trained weights (eval mode)."""
        if self._encoder is None:
            from fusionrec.models.fusion import ItemEncoder

            dims = list(self.meta["feature_dims"])
            enc = ItemEncoder(dims, self.config.dim, self.config.fusion, self.config.proj_hidden,
                              list(self.meta.get("reduced_dims", dims)))
            enc.load_state_dict(self._sub_state("encoder"))
            self._encoder = enc.eval()
        return self._encoder

    def head(self) -> Any:
        """The UserHead module with its trained weights (eval mode)."""
        if self._head is None:
            from fusionrec.models.context import context_dim
            from fusionrec.models.fusion import UserHead

            head = UserHead(self.config.dim, len(self.meta.get("modalities", [])),
                            context_dim(self.meta.get("context_spec") or []), self.attention)
            head.load_state_dict(self._sub_state("user_head"))
            self._head = head.eval()
        return self._head

    def user_matrix(self, base: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """User base vectors (b, d) [+ context (b, C)] -> user matrix (b, D)."""
        import torch

        with torch.inference_mode():
            ctx = torch.from_numpy(context) if context is not None else None
            return self.head()(torch.from_numpy(np.asarray(base, dtype=np.float32)), ctx).numpy()

    def project(self, feats: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
        """Per-modality projections (n, M, d), L2-normalised, zeros where missing."""
        import torch

        with torch.inference_mode():
            z, _ = self.encoder()([torch.from_numpy(f) for f in feats], torch.from_numpy(mask))
            z = torch.nn.functional.normalize(z, dim=-1) * torch.from_numpy(mask)[..., None]
        return z.numpy()

    def encode(self, feats: list[np.ndarray], mask: np.ndarray, stored: list[np.ndarray],
               stored_mask: np.ndarray, stored_h0: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of the model's item arrays for new items (content path only, no id).

        Args:
            feats: per modality (b, d_m); mask: (b, M).
            stored, stored_mask, stored_h0: the model's items, for kNN mixing with their neighbours.
        """
        import torch

        from fusionrec.models.fusion import item_matrix
        from fusionrec.models.network import stack_features

        if not feats:
            raise ValueError("this model uses no content modality, so it cannot embed new items")
        cfg = self.config
        with torch.inference_mode():
            tf = [torch.from_numpy(f) for f in feats]
            tm = torch.from_numpy(mask)
            z, h = self.encoder()(tf, tm)  # (b, M, d), (b, d)
            h = h.numpy()
            if cfg.knn_k > 0 and cfg.knn_weight > 0 and len(stored_h0):
                sim = _mean_cosine(feats, mask, stored, stored_mask)  # (b, n)
                k = min(cfg.knn_k, sim.shape[1])
                nb = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (b, k)
                w = np.clip(np.take_along_axis(sim, nb, axis=1), 0.0, None)
                w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
                h = (1 - cfg.knn_weight) * h + cfg.knn_weight * np.einsum("bk,bkd->bd", w, stored_h0[nb])
            e = h / (cfg.n_layers + 1)  # an isolated node keeps only its layer-0 share
            out = {"item_h0": h, "item_e": e,
                   "item_vecs": item_matrix(torch.from_numpy(e), z, tm, self.attention).numpy()}
            if "cold.w.weight" in self.state:
                x = stack_features(tf, tm).numpy()  # (b, F)
                out["cold_item"] = x @ self.state["cold.w.weight"].T  # (b, F) x (F, d)
                out["cold_bias"] = (x @ self.state["cold.b.weight"].T)[:, 0]
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
