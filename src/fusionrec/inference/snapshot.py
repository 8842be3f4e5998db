"""The immutable model view that serving requests read, and copy-on-write item additions.

A request reads `engine.snapshot` once and uses only it, so swapping in a new snapshot
(a new item, a new model version) never changes what a request in flight sees.
`with_items` embeds new items (one batch per modality) with the encoders featurize used
(rebuilt from the model's `encoders/` state via `fusionrec.features.registry.get_encoder`)
and returns a new snapshot over a shallow copy of the Recommender that holds them.
A snapshot of a large catalogue also holds the model's approximate top-k index
(`fusionrec.inference.ann`), shared by the snapshots of one model: items added later lie
beyond it and are scored exactly. Known users' rankings under the default rules are kept per
snapshot (`fusionrec.inference.ranking`); a snapshot with items added starts with none.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.inference.ranking import UserRankings
from fusionrec.monitoring.rollout import model_version

logger = logging.getLogger(__name__)
LOAD: Any = object()  # Snapshot.build's default: read the model folder's approximate index


@dataclass
class Snapshot:
    """One immutable view of a model: what every request reads exactly once."""

    rec: Any  # fusionrec.models.recommender.Recommender (never mutated after the snapshot is built)
    model_dir: Path
    version: str
    n_items: int
    popular: np.ndarray  # item indices, most popular first
    encoders: dict[str, Any] = field(default_factory=dict)  # shared by snapshots of one model
    base_items: int = 0  # items of the model as trained; the rest were added while serving
    ann: Any = None  # fusionrec.inference.ann.AnnIndex for known users' top-k; None: score every item
    rankings: UserRankings | None = None  # known users' rankings under the default rules; None: scored per request
    _modality: np.ndarray | None = None  # (n_items, M, d), see modality_stack
    _popular_scores: np.ndarray | None = None

    def popular_scores(self) -> np.ndarray:
        """(n_items,) scores of the popularity fallback, 1.0 for the most popular item down to 0.0, built once."""
        if self._popular_scores is None:
            scores = np.zeros(self.n_items, np.float32)
            scores[self.popular] = np.linspace(1.0, 0.0, self.n_items, dtype=np.float32)
            self._popular_scores = scores
        return self._popular_scores

    @classmethod
    def build(cls, rec: Any, model_dir: Path, encoders: dict[str, Any] | None = None,
              base_items: int | None = None, ann: Any = LOAD, rank_depth: int = 0, rank_users: int = 0
              ) -> Snapshot:
        """A snapshot of rec, read from model_dir.

        Args:
            base_items: the model's items as trained (default: all of rec's).
            ann: the approximate index to serve with; by default the one saved in model_dir
                when the catalogue reaches the model's `ann_min_items` (None when absent or stale).
            rank_depth, rank_users: items kept per known user's ranking and users kept at most
                (`UserRankings`); 0 users: every request is scored.
        """
        version = model_version(rec.meta, model_dir.name)
        pop = np.asarray(rec.popularity(), dtype=np.float64)[: rec.n_items]
        popular = np.argsort(-pop, kind="stable")
        if ann is LOAD:
            ann = load_ann(rec, model_dir)
        rankings = UserRankings(rec, ann, rank_depth, rank_users) if rank_users > 0 and rank_depth > 0 else None
        return cls(rec, model_dir, version, rec.n_items, popular, encoders if encoders is not None else {},
                   rec.n_items if base_items is None else base_items, ann, rankings)

    def modality_stack(self) -> np.ndarray:
        """(n_items, M, d) per-modality item vectors in `rec.modalities` order (explanations only),
        computed once per snapshot; a snapshot with added items extends its parent's (`with_items`)."""
        if self._modality is None:
            self._modality = self.rec.modality_stack()
        return self._modality

    def modality_vectors(self) -> dict[str, np.ndarray]:
        """Per-modality item vectors {key: (n_items, d)}: views of `modality_stack`."""
        z = self.modality_stack()
        return {k: z[:, m] for m, k in enumerate(self.rec.modalities)}


def load_ann(rec: Any, model_dir: Path) -> Any:
    """The approximate top-k index saved with the model, when its catalogue is large enough; else None."""
    min_items = int(getattr(rec.config, "ann_min_items", 0))
    if min_items <= 0 or rec.n_items < min_items or not (model_dir / "ann").is_dir():
        return None
    from fusionrec.inference.ann import load_index

    return load_index(model_dir, rec)


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

def warm(snap: Snapshot) -> None:
    """Embed one throw-away item now, off the request path, so the first real one does not wait for
    the encoders to load and run for the first time; a failure is logged and left to add_item to report."""
    from PIL import Image

    try:
        with_items(snap, [NewItem("\0warm-up", "warm up", Image.new("RGB", (8, 8), (128, 128, 128)), "")])
    except Exception as exc:  # noqa: BLE001  (reported again, to the caller, by add_item)
        logger.warning("encoders of %s not ready: %s", snap.model_dir, exc)


def model_vectors(rec: Any) -> dict[str, tuple[int, bool]]:
    """The model's `vectors:` modalities: key -> (dimension, L2-normalised by featurize)."""
    described = rec.meta.get("vectors") or {}
    return {key: (int(rec.arrays[f"feat::{key}"].shape[1]),
                  (described.get(key) or {}).get("normalization", "l2") == "l2")
            for key in rec.modalities if key.startswith("vectors:")}


def vectors_for(rec: Any, vectors: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """An item's given vectors as this model stores them: its keys and dimensions only, finite,
    normalised where featurize normalised (a vector stored under an earlier model may not fit)."""
    from fusionrec.features.vectors import given_vector

    fitted = {key: given_vector((vectors or {}).get(key), dim, normalise)
              for key, (dim, normalise) in model_vectors(rec).items()}
    return {key: row for key, row in fitted.items() if row is not None}


@dataclass(frozen=True)
class NewItem:
    """An item to embed: its id, joined text, decoded image (a PIL image or None), title, and its
    precomputed vectors by feature key ("vectors:audio"), as given (`vectors_for` fits them)."""

    item_id: str
    text: str = ""
    pil: Any = None
    title: str = ""
    vectors: Mapping[str, Any] = field(default_factory=dict)  # key -> a list or array of numbers


def with_items(snap: Snapshot, items: list[NewItem]) -> tuple[Snapshot, list[dict[str, bool]]]:
    """Encode items in one batch per modality; return a new snapshot on a copy of the model that
    holds them (copy-on-write), and per item which modalities it has."""
    if not items:
        return snap, []
    b, features, masks = len(items), {}, {}
    given = [vectors_for(snap.rec, it.vectors) if it.vectors else {} for it in items]
    for key in snap.rec.modalities:
        modality = key.split(":", 1)[0]
        if modality == "vectors":
            rows = [n for n in range(b) if key in given[n]]
        else:
            rows = [n for n, it in enumerate(items) if (it.text if modality == "text" else it.pil is not None)]
        if modality not in ("text", "image", "vectors") or not rows:
            continue
        if modality == "vectors":  # given with the item: nothing to encode
            values, ok = np.stack([given[n][key] for n in rows]), np.ones(len(rows), bool)
        elif modality == "text":
            values, ok = encoder_for(snap, key).encode_texts([items[n].text for n in rows]), np.ones(len(rows), bool)
        else:
            values, ok = encoder_for(snap, key).encode_images([items[n].pil for n in rows])
        features[key] = np.zeros((b, values.shape[1]), np.float32)  # (b, d): absent rows stay masked
        masks[key] = np.zeros(b, bool)
        features[key][rows], masks[key][rows] = values, ok
    if not features:  # no modality of this model present: the items are served, fully masked
        key = snap.rec.modalities[0]
        features[key], masks[key] = np.zeros((b, snap.rec.arrays[f"feat::{key}"].shape[1]), np.float32), np.zeros(b, bool)
    rec = copy.copy(snap.rec)
    rec.arrays, rec.item_ids, rec.titles = dict(rec.arrays), list(rec.item_ids), list(rec.titles)
    rec.add_items([it.item_id for it in items], features, masks, titles=[it.title or "" for it in items])
    present = [{key: bool(masks[key][n]) if key in masks else False for key in snap.rec.modalities}
               for n in range(b)]
    ranks = snap.rankings
    new = Snapshot.build(rec, snap.model_dir, snap.encoders, snap.base_items, snap.ann,
                         ranks.depth if ranks else 0, ranks.capacity if ranks else 0)
    if snap._modality is not None:  # only the new rows are projected: the catalogue's stay as they were
        new._modality = np.concatenate([snap._modality, rec.modality_stack(snap.n_items)])
    return new, present


def with_item(snap: Snapshot, item_id: str, text: str, pil: Any, title: str) -> tuple[Snapshot, dict[str, bool]]:
    """Encode one item; return a new snapshot on a copy of the model that holds it (copy-on-write)."""
    new, (present,) = with_items(snap, [NewItem(item_id, text, pil, title)])
    return new, present
