"""Explanations of a recommendation: which modality drew it, and the history item it is closest to.

For each recommended item, every modality's projected vector (Recommender.modality_vectors)
is compared (cosine) with the mean of the user's history items in that modality; the
modality with the highest similarity is named. The closest history item is the one whose
final item vector is most similar. Popularity answers explain themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionrec.inference.checks import unit


def explain(snap: Any, top: np.ndarray, history: np.ndarray, path: str, max_history: int) -> list[dict[str, Any]]:
    """Per item: how close each modality is to the user's history, and the closest history item."""
    if path == "popular" or not len(history) or not len(top):
        return [{"reason": "popular among all users"} for _ in top]
    rec, hist = snap.rec, history[-max_history:]
    sims = unit(rec.item_vectors()[top]) @ unit(rec.item_vectors()[hist]).T  # (k, d) x (d, h) -> (k, h)
    per_mod = {}
    for key, vecs in snap.modality_vectors().items():
        profile = unit(vecs[hist].mean(axis=0))  # (d,)
        per_mod[key] = unit(vecs[top]) @ profile  # (k, d) x (d,) -> (k,)
    out = []
    for row, _ in enumerate(top):
        contrib = {key: round(float(v[row]), 4) for key, v in per_mod.items()}
        best = int(np.argmax(sims[row]))
        j = int(hist[best])
        out.append({"top_modality": max(contrib, key=lambda m: contrib[m]) if contrib else None,
                    "modality_similarity": contrib,
                    "closest_history_item": {"item_id": rec.item_ids[j], "title": rec.titles[j],
                                             "similarity": round(float(sims[row, best]), 4)}})
    return out
