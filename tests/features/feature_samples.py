"""Test data of the features tests: a tiny hand-built ingested catalogue with real photos.

Items (row = item_idx): two cat pictures (scikit-image's Chelsea and a flipped crop of
it), a coffee cup, a red and a blue square, and one item without an image. Texts are
short sentences; the last item's `genres` label lets the quality check run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fusionrec.schema import HAS_IMAGE, HAS_TEXT, IMAGE_PATH, INGESTED_ITEMS, ITEM_ID, ITEM_IDX, TEXT


def sample_images() -> dict[str, Image.Image]:
    """cat, cat2 (another view: flipped, cropped, resized), coffee, red, blue."""
    import skimage.data

    cat = Image.fromarray(skimage.data.chelsea())
    cat2 = cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((40, 10, 420, 290)).resize((200, 150))
    return {"cat": cat, "cat2": cat2, "coffee": Image.fromarray(skimage.data.coffee()),
            "red": Image.new("RGB", (64, 64), (220, 20, 20)), "blue": Image.new("RGB", (64, 64), (20, 20, 220))}


ITEMS = [  # item_id, text, genres, image name or None
    ("i1", "A tabby cat sleeps on a warm windowsill.", "Animals", "cat"),
    ("i2", "A kitten naps in the afternoon sun.", "Animals", "cat2"),
    ("i3", "A cup of hot espresso on a saucer.", "Drinks", "coffee"),
    ("i4", "Quarterly tax law changes for small businesses.", "Finance", "red"),
    ("i5", "A red fire truck races down the street.", "Vehicles", "blue"),
    ("i6", "Fresh coffee beans roasted this morning.", "Drinks", None),
]


def write_catalogue(folder: Path, rows: list[tuple[str, str, str, str | None]] = ITEMS) -> Path:
    """Write items.parquet (ingested layout) + images into folder; returns folder."""
    images = sample_images()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for idx, (item_id, text, genres, image) in enumerate(rows):
        path = None
        if image is not None:
            path = folder / "images" / f"{item_id}.jpg"
            images[image].save(path, quality=92)
        records.append({ITEM_IDX: idx, ITEM_ID: item_id, "title": text.split(" ")[1], "genres": genres,
                        TEXT: text, IMAGE_PATH: str(path) if path else None,
                        HAS_TEXT: bool(text), HAS_IMAGE: path is not None})
    pd.DataFrame(records).to_parquet(folder / INGESTED_ITEMS, index=False)
    return folder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

TEXTS = [  # text encoders' samples: 4 to ~60 words, so length buckets differ; varied topics, so vectors do
    "A cat sleeps on the sofa.",
    "After the plane crashes on a remote island, the survivors must learn to trust each other, while strange "
    "signals from the jungle suggest they are not alone and a storm closes in on their makeshift camp.",
    "The central bank raised interest rates again.",
    "Toy Story (1995). Led by Woody, Andy's toys live happily in his room until Andy's birthday brings Buzz "
    "Lightyear onto the scene. Afraid of losing his place in Andy's heart, Woody plots against Buzz.",
    "Fresh coffee beans roasted this morning.",
    "A retired detective is drawn back into one last case when his former partner vanishes without a trace.",
]
