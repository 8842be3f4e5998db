"""Interaction context (e.g. hour of day, device) encoded as a small dense vector.

Numeric columns are standardised; other columns are one-hot over their most frequent
values (the rest share an "other" slot). The fitted spec is plain JSON, stored in the
model's config.json, so serving encodes a request's context exactly as training did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MAX_CATEGORIES = 32


def fit_context(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Fit the encoding spec of the given columns of the training interactions."""
    spec: list[dict[str, Any]] = []
    for col in columns:
        if col not in frame.columns:
            raise ValueError(
                f"context column {col!r} is not in the training interactions "
                f"(columns: {', '.join(map(str, frame.columns))}); keep it at ingest (ingest.context_columns)"
            )
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            v = values.astype(float)
            spec.append({"name": col, "kind": "numeric", "mean": float(v.mean()), "std": float(v.std() or 1.0)})
        else:
            top = values.astype(str).value_counts().index[:MAX_CATEGORIES].tolist()
            spec.append({"name": col, "kind": "categorical", "values": top})
    return spec


def context_dim(spec: Sequence[Mapping[str, Any]]) -> int:
    """Width of the encoded vector."""
    return sum(1 if s["kind"] == "numeric" else len(s["values"]) + 1 for s in spec)


def encode_context(spec: Sequence[Mapping[str, Any]], frame: pd.DataFrame) -> np.ndarray:
    """Encode rows of context: (b, C) float32. A missing column or value is the mean / "other"."""
    out = np.zeros((len(frame), context_dim(spec)), dtype=np.float32)
    pos = 0
    for s in spec:
        col = s["name"]
        present = col in frame.columns
        if s["kind"] == "numeric":
            if present:
                v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
                out[:, pos] = np.nan_to_num((v - s["mean"]) / s["std"], nan=0.0)
            pos += 1
            continue
        lookup = {v: i for i, v in enumerate(s["values"])}
        other = len(s["values"])
        codes = [lookup.get(str(v), other) for v in frame[col]] if present else [other] * len(frame)
        out[np.arange(len(frame)), pos + np.asarray(codes, dtype=np.int64)] = 1.0
        pos += other + 1
    return out
