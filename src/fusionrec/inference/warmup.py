"""Run every read path of a snapshot once before it serves, so that its first requests are as fast
as the rest.

The first call of each path builds what later calls reuse: the user matrix of every known user,
the history matrix, the per-modality vectors behind explanations, known users' rankings (all of
them when the score matrix is small enough, see `fusionrec.inference.ranking`), and numpy's and
torch's own first-call setup. At a million items that is seconds; done here, on load and before
a model swap, readiness means that a request is answered at full speed, not that the process is up.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fusionrec.inference.ann import user_top_k
from fusionrec.inference.checks import top_k
from fusionrec.inference.explain import explain


def warm_reads(snap: Any, max_history: int) -> float:
    """Rank known users (see `UserRankings.precompute`), score one (with explanations, and through
    the index when there is one), fold in a history and rank similar items on `snap` (a Snapshot),
    exactly as requests do, without logging anything; returns the seconds it took."""
    start = time.perf_counter()
    rec = snap.rec
    if snap.rankings is not None:
        snap.rankings.precompute()
    if rec.n_users:
        history = rec.seen(0)
        scores = rec.score_users(np.array([0]))[0][: snap.n_items]
        top = top_k(scores, 10, history)
        explain(snap, top, history, "user", max_history)
        if snap.ann is not None:  # large catalogues answer known users through the index
            user_top_k(rec, snap.ann, 0, 10, history)
    top_k(snap.popular_scores(), 10, np.zeros(0, np.int64))  # unknown users without history
    recent = np.asarray(snap.popular[:3], dtype=np.int64)
    if len(recent):
        scores = rec.score_histories([recent])[0][: snap.n_items]
        explain(snap, top_k(scores, 10, recent), recent, "fold_in", max_history)
        vecs = rec.item_vectors()[: snap.n_items]
        top_k((vecs @ vecs[int(recent[0])]).astype(np.float32), 10, recent[:1])
    return time.perf_counter() - start
