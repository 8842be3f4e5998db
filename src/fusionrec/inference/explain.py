"""Explanations of a recommendation: which modality drew it, and the history item it is closest to.

For each recommended item, every modality's projected vector (Recommender.modality_vectors)
is compared (cosine) with the mean of the user's history items in that modality; the
modality with the highest similarity is named. The closest history item is the one whose
final item vector is most similar. Popularity answers explain themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def explain(snap: Any, top: np.ndarray, history: np.ndarray, path: str, max_history: int) -> list[dict[str, Any]]:
    """Per item: how close each modality is to the user's history, and the closest history item."""
    if path == "popular" or not len(history) or not len(top):
        return [{"reason": "popular among all users"} for _ in top]
    rec, hist = snap.rec, history[-max_history:]
    vecs = rec.item_vectors()  # unit rows: a dot product is the cosine
    sims = vecs[top] @ vecs[hist].T  # (k, d) x (d, h) -> (k, h)
    best = sims.argmax(axis=1)  # (k,)
    closest = hist[best].tolist()
    closest_sim = np.round(sims[np.arange(len(top)), best].astype(np.float64), 4).tolist()
    keys = list(rec.modalities)
    if keys:  # (k, M): each modality's cosine between the item and the history's mean in that modality
        z = snap.modality_stack()  # (n, M, d) unit rows, zeros where the item lacks the modality
        mean = z[hist].sum(axis=0)  # (M, d)
        mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        per_mod = np.round((z[top] * mean).sum(axis=2).astype(np.float64), 4)  # (k, M)
        top_mod, contrib = [keys[m] for m in per_mod.argmax(axis=1).tolist()], per_mod.tolist()
    out = []
    for row in range(len(top)):
        j = closest[row]
        out.append({"top_modality": top_mod[row] if keys else None,
                    "modality_similarity": dict(zip(keys, contrib[row], strict=True)) if keys else {},
                    "closest_history_item": {"item_id": rec.item_ids[j], "title": rec.titles[j],
                                             "similarity": closest_sim[row]}})
    return out
