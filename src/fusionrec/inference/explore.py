"""Exploration: a share of each answer comes from just beyond the model's top-k.

A model retrained on the feedback to its own recommendations learns mostly from clicks on what it
already chose; after a taste shift the items users now want are rarely shown, so they are rarely
clicked, and the next model does not learn them. Exploration shows a few items the model ranked
just past its top-k, so the feedback also covers what the model did not choose.

How (measured with `benchmarks.loop`, see benchmarks/reports/loop_organic1.md):
- of k slots, share * k are explored on average (the whole part always, the fractional part drawn
  per request), so the served share equals `serve.explore_share` over many requests;
- explored items are drawn uniformly from the ranks k .. k + pool - 1 of the same candidate list
  that top-k returns, so every rule of top-k holds for them (seen and excluded items never appear,
  nor items without a finite score) and no extra pass over the catalogue is made;
- they take the last slots, in score order, so the answer stays sorted by score and the slots
  users look at first keep the model's choice;
- share 0 returns `top_k`'s answer unchanged, so the service answers exactly as without exploration.

The engine marks explored items in the answer (`explored: true`, and an explanation that says so)
and in the served log (`served.explored`), so monitoring can measure click-through on chosen
impressions only and the merge can tell explored clicks from chosen ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionrec.inference.checks import top_k

EXPLAINED = "explored: shown from just beyond the model's top-k, so that feedback on it teaches the next model"


class Explorer:
    """Draws the explored part of each answer.

    Args:
        share: expected share of the k slots that are explored, in [0, 1).
        pool: explored items come from the ranks k .. k + pool - 1 (the model's near misses).
        seed: seed of the draws (-1 or None: fresh entropy); tests pass one to get the same answers.
        diverse: draw near misses unlike the chosen items more often (weight (1 - max cosine to the
            chosen items)^2 on the item vectors the caller passes); False: uniformly.
    """

    def __init__(self, share: float, pool: int, seed: int | None = None, diverse: bool = False) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"serve.explore_share={share}: expected a share in [0, 1) (0 = no exploration)")
        if pool < 1:
            raise ValueError(f"serve.explore_pool={pool}: expected at least 1 rank beyond the top-k")
        self.share, self.pool, self.diverse = float(share), int(pool), diverse
        self.rng = np.random.default_rng(None if seed is None or seed < 0 else seed)  # draws hold its lock

    @classmethod
    def from_config(cls, cfg: Any) -> Explorer:
        """From a ServeConfig's explore_share, explore_pool and explore_seed."""
        return cls(cfg.explore_share, cfg.explore_pool, cfg.explore_seed, cfg.explore_diverse)

    @property
    def active(self) -> bool:
        return self.share > 0.0

    def top_k(self, scores: np.ndarray, k: int, exclude: np.ndarray, vectors: np.ndarray | None = None
              ) -> tuple[np.ndarray, int]:
        """The items to serve and how many of them (the last ones) were explored.

        Returns:
            (indices, n_explored): the first len - n_explored are the model's top items, best first;
            the last n_explored were drawn from the ranks k .. k + pool - 1, in score order.
        """
        if not self.active:
            return top_k(scores, k, exclude), 0
        want = int(self.share * k + self.rng.random())  # stochastic rounding: E[want] = share * k
        if want == 0:
            return top_k(scores, k, exclude), 0
        cand = top_k(scores, k + self.pool, exclude)  # (<= k + pool,) best first; exclusions applied
        beyond = len(cand) - k
        n = min(want, max(beyond, 0))
        if n == 0:  # a catalogue with nothing beyond the top-k: the plain answer
            return cand[:k], 0
        weights = None
        if self.diverse and vectors is not None:  # favour near misses unlike what is chosen
            sims = vectors[cand[k:]] @ vectors[cand[: k - n]].T  # (beyond, d) x (d, k - n) -> (beyond, k - n)
            novelty = np.clip(1.0 - sims.max(axis=1), 1e-6, None) ** 2
            weights = novelty / novelty.sum()
        picked = np.sort(self.rng.choice(beyond, n, replace=False, p=weights)) + k  # ranks past k, in score order
        return np.concatenate([cand[: k - n], cand[picked]]), n


def mark_explored(items: list[dict[str, Any]], n_explored: int) -> list[bool]:
    """Mark each answer item `explored` (the last n_explored are) and say so in its explanation.

    Returns:
        The flags in answer order (what the served log records).
    """
    first = len(items) - n_explored
    flags = [p >= first for p in range(len(items))]
    for item, flag in zip(items, flags, strict=True):
        item["explored"] = flag
        if flag and "explanation" in item:
            item["explanation"] = {**item["explanation"], "explored": True, "reason": EXPLAINED}
    return flags


__all__ = ["EXPLAINED", "Explorer", "mark_explored"]
