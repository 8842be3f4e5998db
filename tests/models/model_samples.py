"""A tiny hand-built world for model tests: three colours, users who each love one colour.

Items carry an `image:color` feature (a noisy one-hot of their colour) and a
`text:tfidf` feature (noise plus a weaker colour signal); a few items per colour have
no interaction at all (cold). Everything is deterministic from the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec import schema
from fusionrec.config import TrainConfig
from fusionrec.data.train_data import TrainData

N_COLOURS = 3
ITEMS_PER_COLOUR = 20
COLD_PER_COLOUR = 2
USERS_PER_COLOUR = 15
FAST = TrainConfig(dim=16, epochs=12, patience=12, lr=0.03, batch_size=16, text_encoder="tfidf",
                   image_encoder="color", knn_k=3, n_layers=1, feature_pca=0, ease_lambda=10.0)


def colour_of_items() -> np.ndarray:
    return np.repeat(np.arange(N_COLOURS), ITEMS_PER_COLOUR)


def cold_items() -> np.ndarray:
    """The last COLD_PER_COLOUR items of each colour: never interacted with."""
    return np.concatenate([np.arange(c * ITEMS_PER_COLOUR, (c + 1) * ITEMS_PER_COLOUR)[-COLD_PER_COLOUR:]
                           for c in range(N_COLOURS)])


def features(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    colour = colour_of_items()
    n = len(colour)
    onehot = np.eye(N_COLOURS, 8, dtype=np.float32)[colour]
    image = onehot + 0.1 * rng.standard_normal((n, 8)).astype(np.float32)
    text = np.concatenate([0.5 * onehot, rng.standard_normal((n, 8)).astype(np.float32)], axis=1)
    image_mask = np.ones(n, bool)
    image_mask[[5, 25]] = False  # two warm items without an image: masks must hold
    image[~image_mask] = 0.0
    return {"image:color": (image, image_mask), "text:tfidf": (text, np.ones(n, bool))}


def user_colours() -> np.ndarray:
    return np.repeat(np.arange(N_COLOURS), USERS_PER_COLOUR)


def interactions(per_user: int = 10, seed: int = 0) -> pd.DataFrame:
    """Each user interacts with per_user warm items of their colour."""
    rng = np.random.default_rng(seed)
    cold = set(cold_items().tolist())
    rows = []
    for u, c in enumerate(user_colours()):
        pool = [i for i in range(c * ITEMS_PER_COLOUR, (c + 1) * ITEMS_PER_COLOUR) if i not in cold]
        for i in rng.choice(pool, size=per_user, replace=False):
            rows.append((u, int(i), int(rng.integers(0, 24))))
    return pd.DataFrame(rows, columns=[schema.USER_IDX, schema.ITEM_IDX, "hour"])


def colour_data(seed: int = 0) -> TrainData:
    """TrainData of the colour world: 8 train and 2 valid interactions per user."""
    frame = interactions(seed=seed)
    is_valid = frame.groupby(schema.USER_IDX).cumcount() >= 8
    n_users, n_items = len(user_colours()), len(colour_of_items())
    data = TrainData(train=frame[~is_valid].reset_index(drop=True), valid=sp.csr_matrix((n_users, n_items)),
                     test=None, features=features(seed), item_ids=[f"i{i}" for i in range(n_items)],
                     user_ids=[f"u{u}" for u in range(n_users)], titles=[f"item {i}" for i in range(n_items)])
    data.valid = data.matrix(frame[is_valid])
    return data
