"""The trainable multi-modal network (torch): content + id item towers, LightGCN over
the user-item graph, a frozen item-item kNN graph, the user head, and a separate
linear content tower for items never seen in training.

Item layer 0:  h_i = fuse(f_m(x_im)) + id_i (id-dropout; zero for untrained items)
kNN mixing:    h <- (1 - w) h + w A_knn h
LightGCN:      [u; e] = mean_l A^l [user_emb; h]
Score:         user_head(u, context) . item_matrix(e, z)   (cosine; / temperature in the loss)
Cold tower:    s(u, i) = p_u . W x_i + b . x_i   (x_i: concatenated normalised features)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.functional import normalize

from fusionrec.config import TrainConfig
from fusionrec.models.fusion import ItemEncoder, UserHead, item_matrix, principal_basis
from fusionrec.models.graph import lightgcn, sym_spmm


@dataclass
class Exported:
    """Everything inference needs, as numpy arrays (saved to safetensors by the Recommender)."""

    arrays: dict[str, np.ndarray]
    state: dict[str, np.ndarray]  # module weights: encoder.*, user_head.*, cold.*


class ColdTower(nn.Module):
    """Linear content tower with a content bias, VBPR-style: s = p_u.(W x_i + q_i) + b.x_i + c_i.

    The id terms q_i, c_i (trained items only) absorb what is specific to an item, so the
    content terms learn what generalises; items never seen in training use the content terms.
    """

    def __init__(self, n_users: int, n_items: int, feat_dim: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item.weight, std=0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.w = nn.Linear(feat_dim, dim, bias=False)
        self.b = nn.Linear(feat_dim, 1, bias=False)

    def items(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (n, F) -> item vectors (n, d), item bias (n,)."""
        return self.w(x), self.b(x).squeeze(-1)


def pad_basis(basis: torch.Tensor, k: int) -> torch.Tensor:
    """A (d, k') basis padded with zero columns to (d, k) (fewer items than axes)."""
    return torch.nn.functional.pad(basis, (0, k - basis.shape[1]))


def stack_features(feats: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Concatenate L2-normalised modality features, zeros where missing: (n, F)."""
    parts = [normalize(f, dim=-1) * mask[:, m : m + 1] for m, f in enumerate(feats)]
    return torch.cat(parts, dim=1)


class FusionNet(nn.Module):
    """The full model. Graphs (sparse tensors) are fixed inputs, not parameters."""

    def __init__(self, cfg: TrainConfig, n_users: int, feats: list[np.ndarray], mask: np.ndarray,
                 trained: np.ndarray, context_dim: int, adj: torch.Tensor | None,
                 knn: torch.Tensor | None) -> None:
        super().__init__()
        n_items = mask.shape[0]
        self.cfg = cfg
        self.n_users, self.n_items, self.n_mod = n_users, n_items, len(feats)
        if self.n_mod == 0 and not cfg.use_id_emb:
            raise ValueError("the model has no item representation: no modality and use_id_emb is false")
        self.feats = [torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)) for f in feats]
        self.mask = torch.from_numpy(mask.astype(bool))  # (n, M)
        self.trained = torch.from_numpy(trained.astype(bool))  # (n,)
        self.adj, self.knn = adj, knn
        dim = cfg.dim
        self.user_emb = nn.Embedding(n_users, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        self.id_emb = nn.Embedding(n_items, dim) if cfg.use_id_emb else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.1)
        dims = [f.shape[1] for f in feats]
        self.reduced_dims = [min(d, cfg.feature_pca) if cfg.feature_pca > 0 else d for d in dims]
        self.encoder = ItemEncoder(dims, dim, cfg.fusion, cfg.proj_hidden, self.reduced_dims) if self.n_mod else None
        self.rfeats = self._reduced_features()  # (n, r_m) per modality, fixed
        self.user_head = UserHead(dim, self.n_mod, context_dim, cfg.fusion == "attention" and self.n_mod > 0)
        # the cold tower reads the full features: its content bias needs every direction (VBPR does the same)
        self.cold = ColdTower(n_users, n_items, sum(dims), dim) if cfg.cold_tower and self.n_mod else None
        self.cold_x = stack_features(self.feats, self.mask) if self.cold is not None else None  # (n, F) fixed

    def _reduced_features(self) -> list[torch.Tensor]:
        """Fit each wide modality's principal basis on the items that have it; reduce once."""
        if self.encoder is None:
            return []
        with torch.no_grad():
            for m, f in enumerate(self.feats):
                if self.reduced_dims[m] < f.shape[1]:
                    present = f[self.mask[:, m]]
                    basis = principal_basis(present if len(present) else f, self.reduced_dims[m])
                    getattr(self.encoder, f"basis{m}").copy_(pad_basis(basis, self.reduced_dims[m]))
            return [r.contiguous() for r in self.encoder.reduce(self.feats)]

    # --- item and user representations ---------------------------------------------
    def content(self, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> z (n, M, d), mask (n, M) after modality dropout, content (n, d)."""
        mask = self.mask
        if train and self.cfg.modality_dropout > 0 and self.n_mod > 1:
            mask = mask & (torch.rand(mask.shape) >= self.cfg.modality_dropout)
        if self.encoder is None:
            return torch.zeros(self.n_items, 0, self.cfg.dim), mask, torch.zeros(self.n_items, self.cfg.dim)
        z, content = self.encoder(self.rfeats, mask, reduced=True)
        return z, mask, content

    def layer0(self, content: torch.Tensor, train: bool) -> torch.Tensor:
        """Item layer-0 vectors h (n, d): content + id (dropped in training), kNN-mixed."""
        h = content
        if self.id_emb is not None:
            keep = self.trained.float()[:, None]  # an untrained id is noise: never use it
            if train and self.cfg.id_dropout > 0:
                keep = keep * (torch.rand(self.n_items, 1) >= self.cfg.id_dropout).float()
            h = h + self.id_emb.weight * keep  # (n, d)
        if self.knn is not None and self.cfg.knn_weight > 0:
            w = self.cfg.knn_weight
            h = (1 - w) * h + w * sym_spmm(self.knn, h)  # (n, n) x (n, d) -> (n, d)
        return h

    def propagate(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN over users and items: -> users (n_users, d), items (n_items, d)."""
        x = torch.cat([self.user_emb.weight, h], dim=0)  # (U + I, d)
        if self.adj is not None and self.cfg.n_layers > 0:
            x = lightgcn(self.adj, x, self.cfg.n_layers)
        return x[: self.n_users], x[self.n_users :]

    def forward(self, train: bool = True) -> dict[str, torch.Tensor]:
        """All representations of one pass: users (U, d), e (n, d), z, mask, items (n, D), h0."""
        z, mask, content = self.content(train)
        h0 = self.layer0(content, train)
        users, e = self.propagate(h0)
        items = item_matrix(e, z, mask, self.user_head.attention)
        return {"users": users, "e": e, "z": z, "mask": mask, "items": items, "h0": h0}

    def cold_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Cold-tower scores (B, n) of the given user indices."""
        assert self.cold is not None and self.cold_x is not None
        vec, bias = self.cold.items(self.cold_x)  # (n, F) -> (n, d), (n,)
        keep = self.trained.float()
        vec = vec + self.cold.item.weight * keep[:, None]  # id terms of trained items only
        bias = bias + self.cold.item_bias * keep
        return self.cold.user(users) @ vec.T + bias[None, :]  # (B, d) x (d, n) + (1, n)

    # --- export for inference -------------------------------------------------------
    @torch.no_grad()
    def export(self) -> Exported:
        """Final vectors and the module weights inference needs (eval mode, no dropout)."""
        out = self.forward(train=False)
        arrays = {
            "user_base": out["users"], "item_e": out["e"], "item_h0": out["h0"],
            "item_vecs": out["items"], "trained": self.trained.to(torch.uint8),
        }
        if self.cold is not None and self.cold_x is not None:
            vec, bias = self.cold.items(self.cold_x)
            arrays.update(cold_user=self.cold.user.weight, cold_item=vec, cold_bias=bias)
        state = {}
        for name, module in (("encoder", self.encoder), ("user_head", self.user_head), ("cold", self.cold)):
            if module is not None:
                skip = ("user.weight", "item.weight", "item_bias")  # per-row arrays: exported above or unused
                state.update({f"{name}.{k}": v for k, v in module.state_dict().items() if k not in skip})
        return Exported(
            arrays={k: v.detach().cpu().numpy() for k, v in arrays.items()},
            state={k: v.detach().cpu().numpy() for k, v in state.items()},
        )
