"""Training losses: full / sampled softmax over items, BPR, contrastive alignment.

Scores are cosine similarities divided by a temperature; a full softmax over all
training items was clearly better than BPR on MovieLens. Imports torch at the top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_loss(users: torch.Tensor, items: torch.Tensor, pos: torch.Tensor, temperature: float,
                 item_ok: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each positive against every (allowed) item.

    Args:
        users: (B, D) user matrix rows.
        items: (n, D) item matrix.
        pos: (B,) positive item indices.
        item_ok: (n,) bool, items allowed as negatives (those seen in training).
    """
    logits = users @ items.T / temperature  # (B, D) x (D, n) -> (B, n)
    if item_ok is not None:
        logits = logits.masked_fill(~item_ok[None, :], float("-inf"))
    return F.cross_entropy(logits, pos)


def sampled_softmax_loss(users: torch.Tensor, items: torch.Tensor, pos: torch.Tensor, temperature: float,
                         negatives: torch.Tensor) -> torch.Tensor:
    """Softmax over the positive and a shared set of uniformly sampled negatives.

    Args:
        negatives: (K,) item indices shared by the batch (uniform: no logQ correction).
    """
    pos_logit = (users * items[pos]).sum(-1, keepdim=True)  # (B, 1)
    neg_logit = users @ items[negatives].T  # (B, D) x (D, K) -> (B, K)
    hit = pos[:, None] == negatives[None, :]  # an accidental positive is not a negative
    neg_logit = neg_logit.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1) / temperature  # (B, 1 + K)
    return F.cross_entropy(logits, torch.zeros_like(pos))


def bpr_loss(users: torch.Tensor, items: torch.Tensor, pos: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Bayesian personalised ranking, one sampled negative per positive and row.

    Args:
        negatives: (B, K) item indices, K negatives per positive.
    """
    pos_s = (users * items[pos]).sum(-1, keepdim=True)  # (B, 1)
    neg_s = torch.einsum("bd,bkd->bk", users, items[negatives])  # (B, D), (B, K, D) -> (B, K)
    return -F.logsigmoid((pos_s - neg_s) / temperature).mean()


def alignment_loss(z: torch.Tensor, mask: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE between pairs of an item's modality projections (CLIP-style, symmetric).

    Args:
        z: (n, M, d) per-modality item projections (a batch of items).
        mask: (n, M) modality present.
    """
    total = z.new_zeros(())
    pairs = 0
    zn = F.normalize(z, dim=-1)
    for a in range(z.shape[1]):
        for b in range(a + 1, z.shape[1]):
            both = mask[:, a] & mask[:, b]
            if int(both.sum()) < 2:
                continue
            logits = zn[both, a] @ zn[both, b].T / temperature  # (k, d) x (d, k) -> (k, k)
            target = torch.arange(logits.shape[0])
            total = total + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            pairs += 1
    return total / max(pairs, 1)
