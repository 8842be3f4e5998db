"""Per-modality projection and fusion of item content (torch modules).

Every modality m gets its own projection f_m (MLP) to the shared dimension d; the
fusion turns the (n, M, d) stack into one (n, d) item content vector:

- `concat`: a linear map of the concatenated projections,
- `mean`: mean over the modalities the item has,
- `gated`: learned per-item gates (a softmax over the item's own modalities),
- `attention`: user-conditioned weights over modalities (`UserHead`); the item's
  content vector is the mean, and each user picks its own mix at scoring time.

Missing modalities are masks, never zeros that pretend to be data. This module
imports torch at the top: import it only inside functions that train or score.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import normalize

FUSIONS = ("concat", "mean", "gated", "attention")


def build_projector(d_in: int, dim: int, hidden: int) -> nn.Module:
    """Linear when hidden == 0, else Linear -> GELU -> Linear."""
    if hidden <= 0:
        return nn.Linear(d_in, dim)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where mask is True; all-masked rows give zeros."""
    w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(w, nan=0.0)


def principal_basis(values: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k right singular vectors of an (n, d) feature matrix: a fixed (d, k) linear map."""
    k = min(k, *values.shape)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # randomised SVD: same basis for the same features, whatever the seed
    _, _, v = torch.svd_lowrank(values, q=min(k + 16, *values.shape), niter=3)  # v: (d, q)
    torch.random.set_rng_state(gen_state)
    return v[:, :k].contiguous()  # (d, k)


class ItemEncoder(nn.Module):
    """Features (n, d_m) per modality + masks (n, M) -> z (n, M, d) and content (n, d).

    A wide modality (e.g. 1280-d image features) is first mapped onto its top principal
    axes (`reduced_dims`, fixed buffers computed once from the catalogue): the trained
    projection after it is as expressive on the catalogue's span and several times cheaper.
    """

    def __init__(self, feature_dims: list[int], dim: int, fusion: str, hidden: int,
                 reduced_dims: list[int] | None = None) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.fusion = fusion
        reduced = reduced_dims or feature_dims
        self.n_bases = len(feature_dims)
        for m, (d, r) in enumerate(zip(feature_dims, reduced, strict=True)):
            self.register_buffer(f"basis{m}", torch.zeros(d, r) if r < d else None)
        self.proj = nn.ModuleList([build_projector(r, dim, hidden) for r in reduced])
        m = len(feature_dims)
        self.mix = nn.Linear(m * dim, dim, bias=False) if fusion == "concat" else None
        self.gate = (
            nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
            if fusion == "gated"
            else None
        )

    def reduce(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map each modality onto its fixed basis where it has one: (n, d_m) -> (n, r_m)."""
        out = []
        for m, f in enumerate(feats):
            basis = getattr(self, f"basis{m}")
            out.append(f if basis is None else f @ basis)
        return out

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor, reduced: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: raw (n, d_m) each, or already `reduce`d when reduced=True."""
        feats = feats if reduced else self.reduce(feats)
        z = torch.stack([p(f) for p, f in zip(self.proj, feats, strict=True)], dim=1)  # (n, M, d)
        z = z * mask[..., None]  # a missing modality contributes nothing
        if self.mix is not None:
            return z, self.mix(z.flatten(1))  # (n, M*d) -> (n, d)
        if self.gate is not None:
            w = masked_softmax(self.gate(z).squeeze(-1), mask)  # (n, M, d) -> (n, M)
        else:
            w = mask.float() / mask.float().sum(1, keepdim=True).clamp(min=1.0)  # mean of present
        return z, (w[..., None] * z).sum(1)  # (n, M, 1) * (n, M, d) -> (n, d)


class UserHead(nn.Module):
    """User base (b, d) + context (b, C) -> user matrix (b, D) scoring items in one product.

    Without attention D = d: the normalised user vector. With attention the item side
    is [e_i, z_i1..z_iM] (each block normalised, see `item_matrix`) and the user side
    [u, a_1(u) u, .., a_M(u) u], so u.e_i + sum_m a_m(u) u.z_im is still one product.
    """

    def __init__(self, dim: int, n_modalities: int, context_dim: int, attention: bool) -> None:
        super().__init__()
        self.attention = attention
        self.ctx = nn.Linear(context_dim, dim, bias=False) if context_dim else None
        self.query = nn.Linear(dim, dim, bias=False) if attention else None
        self.keys = nn.Parameter(torch.randn(n_modalities, dim) * dim**-0.5) if attention else None

    def forward(self, base: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        u = base
        if self.ctx is not None and context is not None:
            u = u + self.ctx(context)  # (b, C) -> (b, d)
        u = normalize(u, dim=-1)
        if self.query is None or self.keys is None:
            return u
        a = torch.softmax(self.query(u) @ self.keys.T, dim=-1)  # (b, d) x (d, M) -> (b, M)
        blocks = [u] + [a[:, m : m + 1] * u for m in range(a.shape[1])]
        return torch.cat(blocks, dim=1)  # (b, (1 + M) d)


def item_matrix(e: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, attention: bool) -> torch.Tensor:
    """Item side of the score product.

    Args:
        e: (n, d) final item vectors (content + id, propagated).
        z: (n, M, d) per-modality projections (used with attention only).
        mask: (n, M) modality present.

    Returns:
        (n, D): normalised e, or with attention [e, z_1..z_M] with each block normalised.
    """
    if not attention:
        return normalize(e, dim=-1)
    zs = normalize(z, dim=-1) * mask[..., None]  # (n, M, d)
    return torch.cat([normalize(e, dim=-1), zs.flatten(1)], dim=1)  # (n, (1 + M) d)
