"""Request checks shared by every serving API: errors that name the field, limits, top-k.

Every bad input becomes a `ServeError` (HTTP status + field + reason), so the service
answers 4xx with a message a person can act on, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from fusionrec.schema import MAX_VECTOR_VALUE, NEGATIVE_EVENTS, POSITIVE_EVENTS

MAX_ID_CHARS = 256
MAX_CONTEXT_KEYS = 32
EVENTS = tuple(POSITIVE_EVENTS) + tuple(NEGATIVE_EVENTS)


class ServeError(Exception):
    """A request that cannot be served: HTTP status, the field at fault and a reason for people."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def to_dict(self) -> dict[str, Any]:
        return {"error": f"{self.field}: {self.message}", "field": self.field, "status": self.status}


def check_id(value: Any, name: str) -> str:
    """A non-empty id string of at most MAX_ID_CHARS characters."""
    if not isinstance(value, str) or not value.strip():
        raise ServeError(400, name, "must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ServeError(400, name, f"longer than {MAX_ID_CHARS} characters")
    return value


def check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ServeError(400, name, f"must be an integer in [{low}, {high}]")
    if not low <= int(value) <= high:
        raise ServeError(400, name, f"{value} is outside [{low}, {high}]")
    return int(value)


def check_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ServeError(400, name, "must be a string")
    if len(value) > limit:
        raise ServeError(413, name, f"{len(value)} characters > limit {limit}")
    return value


def decode_base64(value: str, name: str, max_bytes: int) -> bytes:
    """Decode a base64 image, refusing anything whose decoded size would pass max_bytes."""
    if len(value) > (max_bytes * 4) // 3 + 8:
        raise ServeError(413, name, f"image larger than {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(400, name, "not valid base64") from None


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """Indices of the k best scores, best first, skipping `exclude` (no copy of scores)."""
    n = len(scores)
    kk = min(n, k + len(exclude))
    if kk <= 0:
        return np.zeros(0, np.int64)
    cand = np.argpartition(-scores, kk - 1)[:kk] if kk < n else np.arange(n)
    if len(exclude):
        if kk <= 4096:  # small candidate sets: a set lookup beats np.isin's sort
            banned = set(np.asarray(exclude).tolist())
            cand = np.array([c for c in cand.tolist() if c not in banned], dtype=np.int64)
        else:
            cand = cand[~np.isin(cand, exclude)]
    cand = cand[np.isfinite(scores[cand])]
    return cand[np.argsort(-scores[cand], kind="stable")][:k]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def join_text_fields(text: str | None, fields: Mapping[str, str] | None, ingest: Any, limit: int) -> str:
    """The item's text: `text`, or `fields` joined as ingest joined the catalogue's text columns."""
    if fields:
        if not isinstance(fields, Mapping):
            raise ServeError(400, "fields", "must be an object of text columns")
        for key, value in fields.items():
            check_text(value, f"fields.{key}", limit)
        import pandas as pd

        from fusionrec.data.catalogue import join_text

        cols = [c for c in ingest.text_columns if c in fields] or list(fields)
        text = str(join_text(pd.DataFrame([dict(fields)]), cols, ingest.text_separator).iloc[0])
    return check_text(text or "", "text", limit).strip()


def check_vectors(vectors: Any, modalities: Mapping[str, tuple[int, bool]]) -> dict[str, np.ndarray]:
    """A new item's precomputed vectors by feature key, checked against the model (values as given).

    Args:
        vectors: {"audio": [...]} or {"vectors:audio": [...]}, one entry per modality given.
        modalities: the model's `vectors:` modalities: key -> (dimension, L2-normalised), as
            `inference.snapshot.model_vectors` gives them (all zeros is refused where normalised).
    """
    if not isinstance(vectors, Mapping):
        raise ServeError(400, "vectors", 'must be an object of lists of numbers, e.g. {"audio": [0.1, ...]}')
    out: dict[str, np.ndarray] = {}
    for name, values in vectors.items():
        key = name if str(name).startswith("vectors:") else f"vectors:{name}"
        if key not in modalities:
            known = ", ".join(k.split(":", 1)[1] for k in modalities) or "none"
            raise ServeError(400, f"vectors.{name}", f"not a precomputed modality of this model (it has: {known})")
        try:
            row = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ServeError(400, f"vectors.{name}", "must be a list of numbers") from None
        dim, normalised = modalities[key]
        if row.ndim != 1 or len(row) != dim:
            raise ServeError(400, f"vectors.{name}", f"{row.size} values; the model's {key} vectors have {dim}")
        bad = ~(np.abs(row) <= MAX_VECTOR_VALUE)  # NaN too
        if bad.any():
            raise ServeError(400, f"vectors.{name}", f"value {int(np.flatnonzero(bad)[0])} is not a finite number "
                                                     f"of at most {MAX_VECTOR_VALUE:g} in size")
        if normalised and not row.any():
            raise ServeError(400, f"vectors.{name}", "all zeros: the model normalises these vectors to unit length")
        out[key] = row
    return out


def open_image_checked(cfg: Any, data: bytes) -> Any:
    """Decode an image with the serve limits (bytes, then pixels from the header) -> RGB PIL image."""
    from fusionrec.data.images import ImageRejected, open_rgb_checked

    if len(data) > cfg.max_image_bytes:
        raise ServeError(413, "image", f"{len(data)} bytes > limit {cfg.max_image_bytes}")
    try:
        return open_rgb_checked(data, cfg.max_image_pixels, cfg.max_image_bytes)
    except ImageRejected as exc:
        raise ServeError(413 if exc.reason == "oversized_image" else 400, "image", exc.detail) from None
