"""Column names and on-disk layouts shared by every step.

Everything that crosses a step boundary is named here, so a grep for a column
finds every reader and writer. Ids are strings on the way in; ingest adds dense
integer indices (`user_idx`, `item_idx`) and keeps the mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# --- raw dataset contract (a folder) -------------------------------------------------
INTERACTIONS_STEM = "interactions"  # interactions.csv or interactions.parquet
ITEMS_STEM = "items"  # items.csv or items.parquet
USERS_STEM = "users"  # optional users.csv / users.parquet
IMAGES_DIR = "images"  # default image location: images/{item_id}.jpg|png
RUNTIME_VECTORS = "runtime_vectors.parquet"  # item_id, modality ("vectors:audio"), vector: given with /add_item
MAX_VECTOR_VALUE = 1e30  # a given vector's values: finite in float32, and their squares sum in float64

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"  # optional; raw: unix s/ms, ISO-8601 or datetime (data/timestamps.py); ingested: unix seconds
RATING = "rating"  # optional float
EVENT = "event"  # optional string: view / click / like / purchase / dislike ...
# optional string, written by the feedback merge: how the interaction came about (ORIGINS); empty before serving
ORIGIN = "origin"
ORIGINS = ("served", "explored", "organic")  # the model's own pick / shown from beyond its top-k / found without it
IMAGE = "image"  # optional item column: image path relative to the dataset folder

REQUIRED_INTERACTION_COLUMNS = (USER_ID, ITEM_ID)  # without a timestamp only untimed splits work
REQUIRED_ITEM_COLUMNS = (ITEM_ID,)

# --- ingested folder (output of `fusionrec ingest`) -----------------------------------
USER_IDX = "user_idx"  # dense int32, 0..n_users-1
ITEM_IDX = "item_idx"  # dense int32, 0..n_items-1; row order of items.parquet
TEXT = "text"  # the joined text fed to text encoders (columns set in params.yaml)
IMAGE_PATH = "image_path"  # absolute path of a validated image, or null
HAS_TEXT = "has_text"
HAS_IMAGE = "has_image"

INGESTED_INTERACTIONS = "interactions.parquet"  # user_id,item_id,user_idx,item_idx[,timestamp],rating,event[,origin][,context...]
INGESTED_ITEMS = "items.parquet"  # item_idx,item_id,<text cols>,text,image_path,has_text,has_image
INGESTED_USERS = "users.parquet"  # user_idx,user_id[,context...]
REJECTED = "rejected.parquet"  # source,row,item_id,user_id,reason,detail
REPORT = "report.json"

# rejected.parquet columns
REJ_SOURCE = "source"  # file name the row came from
REJ_ROW = "row"  # 0-based data row number in that file (header excluded)
REJ_REASON = "reason"  # one of REASONS
REJ_DETAIL = "detail"  # human-readable detail (column, value, limit)

REASONS = (
    "missing_column",
    "unparseable_value",
    "duplicate_interaction",
    "duplicate_item",
    "unknown_item",
    "empty_item",  # text columns empty and no usable image: kept, both masked
    "empty_text",  # text columns empty, image present: kept, text masked
    "missing_image",
    "unreadable_image",
    "oversized_image",
    "image_outside_dataset",
)

# --- split folder (output of `fusionrec split`, or external) -------------------------
SPLIT_PARTS = ("train", "valid", "test")  # {part}.parquet (ingested columns) or {part}.csv (original ids)
COLD_ITEMS = "cold_items.json"  # list of item_id held out of train (cold-items protocol)

# --- features folder (output of `fusionrec featurize`) -------------------------------
FEATURES_MANIFEST = "manifest.json"
# Each encoder writes {modality}__{encoder_slug}.npy (float32, n_items x dim, row = item_idx)
# and {modality}__{encoder_slug}.mask.npy (bool, n_items; False = missing, row is zeros).
MODALITIES = ("text", "image", "vectors")

# --- model folder (output of `fusionrec train`) -------------------------------------
MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
MODEL_ITEMS = "items.parquet"  # item_idx,item_id[,title]: the id map the model scores
MODEL_USERS = "users.parquet"  # user_idx,user_id

# --- feedback (serving -> monitoring) ------------------------------------------------
FEEDBACK_TABLE = "feedback"
SERVED_TABLE = "served"
POSITIVE_EVENTS = ("click", "like", "purchase", "view", "add_to_cart", "rating")
NEGATIVE_EVENTS = ("dislike", "skip", "dismiss")


def is_negative(frame: pd.DataFrame) -> np.ndarray:
    """(n,) bool: rows whose event is negative (never a positive); all False without an event column."""
    import numpy as np

    if EVENT not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[EVENT].astype(str).str.lower().isin(NEGATIVE_EVENTS).to_numpy()
