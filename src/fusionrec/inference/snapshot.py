"""The immutable model view that serving requests read, and copy-on-write item additions.

A request reads `engine.snapshot` once and uses only it, so swapping in a new snapshot
(a new item, a new model version) never changes what a request in flight sees.
`with_item` embeds a new item with the encoders featurize used (rebuilt from the model's
`encoders/` state via `fusionrec.features.registry.get_encoder`) and returns a new
snapshot over a shallow copy of the Recommender that holds it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Snapshot:
    """One immutable view of a model: what every request reads exactly once."""

    rec: Any  # fusionrec.models.recommender.Recommender (never mutated after the snapshot is built)
    model_dir: Path
    version: str
    n_items: int
    popular: np.ndarray  # item indices, most popular first
    encoders: dict[str, Any] = field(default_factory=dict)  # shared by snapshots of one model
    _modality: dict[str, np.ndarray] | None = None

    @classmethod
    def build(cls, rec: Any, model_dir: Path, encoders: dict[str, Any] | None = None) -> Snapshot:
        meta = rec.meta or {}
        version = str(meta.get("version") or model_dir.name)
        if meta.get("trained_at"):  # "version" alone may repeat across retrains
            version = f"{version}+{meta['trained_at']}"
        pop = np.asarray(rec.popularity(), dtype=np.float64)[: rec.n_items]
        popular = np.argsort(-pop, kind="stable")
        return cls(rec, model_dir, version, rec.n_items, popular, encoders if encoders is not None else {})

    def modality_vectors(self) -> dict[str, np.ndarray]:
        """Per-modality item vectors, computed once per snapshot (explanations only)."""
        if self._modality is None:
            self._modality = {k: np.asarray(v) for k, v in self.rec.modality_vectors().items()}
        return self._modality


def encoder_for(snap: Snapshot, key: str) -> Any:
    """The encoder behind a feature key ("text:minilm"), rebuilt from the model's encoders/ state."""
    if key not in snap.encoders:
        from fusionrec.config import FeaturizeConfig
        from fusionrec.features.registry import get_encoder
        from fusionrec.features.store import slugify
        from fusionrec.io import read_json

        name = key.split(":", 1)[1]
        state = snap.model_dir / "encoders" / slugify(name)
        spec, normalize = name, True
        if (state / "encoder.json").is_file():
            desc = read_json(state / "encoder.json")
            spec, normalize = desc.get("spec", name), desc.get("normalization", "l2") == "l2"
        snap.encoders[key] = get_encoder(spec, FeaturizeConfig(normalize=normalize),
                                         state if state.is_dir() else None)
    return snap.encoders[key]

def with_item(snap: Snapshot, item_id: str, text: str, pil: Any, title: str) -> tuple[Snapshot, dict[str, bool]]:
    """Encode one item; return a new snapshot on a copy of the model that holds it (copy-on-write)."""
    features, masks = {}, {}
    for key in snap.rec.modalities:
        modality = key.split(":", 1)[0]
        if modality == "text" and text:
            features[key] = encoder_for(snap, key).encode_texts([text])
            masks[key] = np.ones(1, bool)
        elif modality == "image" and pil is not None:
            features[key], masks[key] = encoder_for(snap, key).encode_images([pil])
    rec = copy.copy(snap.rec)
    rec.arrays, rec.item_ids, rec.titles = dict(rec.arrays), list(rec.item_ids), list(rec.titles)
    rec.add_items([item_id], features, masks, titles=[title or ""])
    present = {key: bool(masks[key][0]) if key in masks else False for key in snap.rec.modalities}
    return Snapshot.build(rec, snap.model_dir, snap.encoders), present
