"""A catalogue whose content is only precomputed vectors: ids, two `.npy` files, and interactions.

Items and users have latent factors; users pick items by the match of their factors
(interactions), and both vector files are noisy linear views of the item factors, so the
vectors carry the signal that drives the interactions. Some items lack one vector file's row,
a few lack both (no content at all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

T0 = 1_714_571_100  # 2024-05-01T13:45:00Z


@dataclass(frozen=True)
class VectorsCatalogue:
    root: Path  # the dataset folder: items.csv (item_id only), interactions.csv
    audio: Path  # audio.npy + audio.ids.txt
    image: Path  # image.npy + image.ids.json
    item_ids: list[str]
    without_content: list[str]  # in neither vector file

    @property
    def vector_sources(self) -> list[str]:
        return [f"vectors:{self.audio}", f"vectors:{self.image}"]


def write_vectors_catalogue(root: Path, users: int = 150, items: int = 240, per_user: int = 12, factors: int = 8,
                            seed: int = 0, timestamps: str = "iso") -> VectorsCatalogue:
    """Write the dataset under root/data and the vector files under root/vectors.

    Args:
        timestamps: "iso" (ISO-8601 text, some with a zone), "ms" (unix milliseconds) or "none".
    """
    rng = np.random.default_rng(seed)
    item_f = rng.normal(size=(items, factors))  # (n, k)
    user_f = rng.normal(size=(users, factors))  # (U, k)
    ids = [f"sku-{i:04d}" for i in range(items)]
    logits = 2.5 * user_f @ item_f.T / np.sqrt(factors)  # (U, k) x (k, n) -> (U, n)
    rows = []
    for u in range(users):
        p = np.exp(logits[u] - logits[u].max())
        chosen = rng.choice(items, size=per_user, replace=False, p=p / p.sum())
        rows += [(f"user-{u:03d}", ids[i]) for i in chosen]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    times = T0 + rng.permutation(len(inter)) * 60
    if timestamps == "iso":
        stamp = pd.to_datetime(times, unit="s", utc=True)
        inter["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") if j % 2 else t.strftime("%Y-%m-%d %H:%M:%S")
                              for j, t in enumerate(stamp)]  # zoned and naive (= UTC) mixed
    elif timestamps == "ms":
        inter["timestamp"] = times * 1000
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": ids}).to_csv(data / "items.csv", index=False)
    inter.to_csv(data / "interactions.csv", index=False)

    order = rng.permutation(items)
    bare = set(order[:4].tolist())  # no vector at all
    no_audio, no_image = bare | set(order[4:14].tolist()), bare | set(order[14:24].tolist())
    vec = root / "vectors"
    vec.mkdir(parents=True, exist_ok=True)
    audio_rows = [i for i in rng.permutation(items) if i not in no_audio]  # file order is not catalogue order
    audio = item_f[audio_rows] @ rng.normal(size=(factors, 16)) + 0.3 * rng.normal(size=(len(audio_rows), 16))
    np.save(vec / "audio.npy", audio.astype(np.float32))
    (vec / "audio.ids.txt").write_text("".join(f"{ids[i]}\n" for i in audio_rows))
    image_rows = [i for i in range(items) if i not in no_image]
    image = item_f[image_rows] @ rng.normal(size=(factors, 24)) + 0.3 * rng.normal(size=(len(image_rows), 24))
    np.save(vec / "image.npy", image.astype(np.float32))
    (vec / "image.ids.json").write_text(json.dumps([ids[i] for i in image_rows]))
    return VectorsCatalogue(root=data, audio=vec / "audio.npy", image=vec / "image.npy", item_ids=ids,
                            without_content=sorted(ids[i] for i in bare))


@dataclass(frozen=True)
class PreparedDirs:
    ingested: Path
    split: Path
    features: Path


def ingest_split_featurize(cat: VectorsCatalogue, out: Path) -> PreparedDirs:
    """The catalogue through ingest, split (random-811) and featurize (its two vectors files only)."""
    from fusionrec.config import FeaturizeConfig, IngestConfig, SplitConfig
    from fusionrec.data.ingest import run_ingest
    from fusionrec.data.splits import run_split
    from fusionrec.features.pipeline import run_featurize

    dirs = PreparedDirs(out / "ingested", out / "split", out / "features")
    run_ingest(cat.root, dirs.ingested, IngestConfig())
    run_split(dirs.ingested, dirs.split, SplitConfig(protocol="random-811"))
    cfg = FeaturizeConfig(text_encoders=["none"], image_encoders=["none"], vector_sources=cat.vector_sources,
                          cache_dir=str(out / "cache"))
    run_featurize(dirs.ingested, dirs.features, cfg)
    return dirs
