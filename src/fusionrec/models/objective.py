"""The training objective of one batch: main loss + cold tower + alignment (torch).

Full softmax batches are users, not interactions: the summed per-interaction
cross-entropy of a user's positives shares one logits row,

    sum_{i in pos(u)} -log softmax(s_u)_i = -sum_{i in pos(u)} s_ui + |pos(u)| logsumexp(s_u),

so one (B_users, n_items) product replaces |pos(u)| rows each (80x fewer on MovieLens)
with an identical gradient. Rows with context, sampled softmax and BPR use interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusionrec.models.losses import alignment_loss, bpr_loss, sampled_softmax_loss
from fusionrec.models.network import FusionNet

MASKED = -1e4  # a logit no softmax gives mass to, without -inf's 0 * inf = nan


@dataclass
class Batch:
    """Users (B,) with either targets (B, n) multi-hot (user rows) or pos (B,) (interaction rows)."""

    users: torch.Tensor
    targets: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    context: torch.Tensor | None = None


def batch_weight(batch: Batch) -> float:
    """What a batch's mean loss is a mean over: its positives (user rows) or its interactions."""
    return float(batch.targets.sum()) if batch.targets is not None else float(len(batch.users))


def multinomial_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean per-positive softmax cross-entropy of user rows.

    Args:
        logits: (B, n) scores / temperature; targets: (B, n) multi-hot; allowed: (n,) bool.
    """
    logp = torch.log_softmax(logits.masked_fill(~allowed[None, :], MASKED), dim=1)  # (B, n)
    return -(logp * targets).sum() / targets.sum().clamp(min=1.0)


def _interaction_loss(model: FusionNet, u: torch.Tensor, items: torch.Tensor, batch: Batch,
                      gen: torch.Generator) -> torch.Tensor:
    cfg = model.cfg
    assert batch.pos is not None
    pos = batch.pos
    pool = model.trained.nonzero().squeeze(1)  # negatives only from trained items
    if cfg.loss == "sampled_softmax":
        neg = pool[torch.randint(len(pool), (cfg.n_negatives,), generator=gen)]
        return sampled_softmax_loss(u, items, pos, cfg.temperature, neg)
    if cfg.loss == "bpr":
        k = max(1, min(cfg.n_negatives, 8))
        neg = pool[torch.randint(len(pool), (len(pos), k), generator=gen)]
        return bpr_loss(u, items, pos, neg, cfg.temperature)
    logits = u @ items.T / cfg.temperature  # (B, D) x (D, n) -> (B, n)
    return F.cross_entropy(logits.masked_fill(~model.trained[None, :], MASKED), pos)


def batch_loss(model: FusionNet, batch: Batch, gen: torch.Generator, out: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch; returns (total, its parts as floats for the progress log).

    out: the model's forward pass to read (several batches can share one); None runs it here.
    """
    cfg = model.cfg
    out = model(train=True) if out is None else out
    u = model.user_head(out["users"][batch.users], batch.context)  # (B, d) -> (B, D)
    items = out["items"]  # (n, D)
    if batch.targets is not None:
        main = multinomial_loss(u @ items.T / cfg.temperature, batch.targets, model.trained)
    else:
        main = _interaction_loss(model, u, items, batch, gen)
    parts = {"main": main.item()}
    total = main
    if model.cold is not None:
        cold_logits = model.cold_scores(batch.users)  # (B, n)
        if batch.targets is not None:
            cold = multinomial_loss(cold_logits, batch.targets, model.trained)
        else:
            assert batch.pos is not None
            cold = F.cross_entropy(cold_logits.masked_fill(~model.trained[None, :], MASKED), batch.pos)
        total = total + cold
        parts["cold"] = cold.item()
    if cfg.contrastive_weight > 0 and model.n_mod > 1:
        chosen = torch.unique(batch.pos if batch.pos is not None else batch.targets.nonzero()[:, 1])  # type: ignore[union-attr]
        align = alignment_loss(out["z"][chosen], out["mask"][chosen])
        total = total + cfg.contrastive_weight * align
        parts["align"] = align.item()
    return total, parts
