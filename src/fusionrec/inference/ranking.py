"""Known users' rankings, computed once per snapshot and reused by every request that asks the same.

Most requests are a known user asking for their top-k with the default rules: seen items
excluded, no `recent_items`, no `context`. The answer to that depends only on the user and the
snapshot, so the snapshot keeps each user's best `depth` items (max_k plus the exploration pool,
so explored items come from the same list) with their scores, and a request slices it. Anything
else a request brings (recent items, context, exclude_seen false) is scored as before.

On load and before a model swap, every known user is ranked in batches of users when the score
matrix is small enough (`PRECOMPUTE_CELLS` user x item scores); beyond it, or past the cache's
capacity, a user is ranked on their first request and kept (oldest dropped first). A snapshot
with items added at runtime starts an empty cache: its users are ranked again, with the new
items, as they come.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fusionrec.inference.checks import top_k

PRECOMPUTE_CELLS = 20_000_000  # users x items ranked at warm-up; 1,000 x 1,000 took 0.22 s, so about 4 s at the bound
BATCH_USERS = 256  # users scored at once when precomputing


class UserRankings:
    """Each known user's `depth` best items and scores (seen items excluded) for one snapshot.

    Args:
        rec: the snapshot's Recommender; ann: its approximate index, or None (exact scoring).
        depth: how many items are kept per user (the most a request can ask: max_k + explore pool).
        capacity: users kept at most (oldest dropped first).
    """

    def __init__(self, rec: Any, ann: Any, depth: int, capacity: int) -> None:
        self.rec, self.ann, self.depth, self.capacity = rec, ann, int(depth), int(capacity)
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()  # insertions and evictions (reads of a present row need none)

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, uidx: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices (<= depth,) int32 best first, their scores float32) of a known user, ranked once."""
        row = self._rows.get(uidx)
        if row is None:
            row = self._rank_one(uidx)
            self._keep({uidx: row})
        return row

    def _rank_one(self, uidx: int) -> tuple[np.ndarray, np.ndarray]:
        seen = self.rec.seen(uidx)
        if self.ann is not None:
            from fusionrec.inference.ann import user_top_k

            cand, scores = user_top_k(self.rec, self.ann, uidx, self.depth, seen)
            return np.asarray(cand, np.int32), np.asarray(scores, np.float32)
        scores = self.rec.score_users(np.array([uidx]))[0][: self.rec.n_items]
        return _ranked(scores, self.depth, seen)

    def _keep(self, rows: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        with self._lock:
            self._rows.update(rows)
            while len(self._rows) > self.capacity:  # oldest first (dicts keep insertion order)
                self._rows.pop(next(iter(self._rows)))

    def precompute(self, max_cells: int = PRECOMPUTE_CELLS) -> int:
        """Rank known users in batches, up to the capacity, when the whole score matrix is at most
        max_cells scores and there is no approximate index; returns how many users were ranked."""
        rec = self.rec
        n_users = min(rec.n_users, self.capacity)
        if n_users == 0 or self.ann is not None or n_users * rec.n_items > max_cells:
            return 0
        for lo in range(0, n_users, BATCH_USERS):
            users = np.arange(lo, min(lo + BATCH_USERS, n_users))
            scores = rec.score_users(users)[:, : rec.n_items]
            self._keep({int(u): _ranked(s, self.depth, rec.seen(int(u))) for u, s in zip(users, scores, strict=True)})
        return n_users


def _ranked(scores: np.ndarray, depth: int, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = top_k(scores, depth, seen)
    return top.astype(np.int32), np.ascontiguousarray(scores[top], dtype=np.float32)  # 8 bytes per kept item
