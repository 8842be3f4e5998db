"""Precomputed per-item vectors (`vectors:<path>`): audio, video, CLIP, anything a team has.

Accepted files:
- Parquet with an `item_id` column and one list/array column of floats (name it with
  `vectors:<path>#<column>` when there are several; CSV cannot hold lists);
- `.npy` matrix (n, d) with the ids, one per row, in `<stem>.ids.txt` (one per line) or
  `<stem>.ids.json` (a list) next to it.
`vectors:<name>=<path>` names the modality; otherwise the file stem is the name, and
the feature key is "vectors:<name>".

Rows are aligned to the catalogue by item_id, never by position. Documented outcomes:
- ragged rows (a wrong dimension), a non-2-D matrix, an id file of the wrong length,
  duplicate ids, no usable column: an error naming the file and the first bad item id;
- a row with NaN or inf: that item is masked and listed in the report;
- a catalogue item without a vector: masked; ids not in the catalogue: dropped and
  counted in the report; coverage below `vectors_min_coverage`: an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fusionrec.features.store import FeatureMatrix, feature_key
from fusionrec.schema import MAX_VECTOR_VALUE

if TYPE_CHECKING:
    from fusionrec.config import FeaturizeConfig


class VectorsError(ValueError):
    """Precomputed vectors that cannot be used; the message names the file and item."""


def parse_source(spec: str) -> tuple[str, Path, str | None]:
    """"vectors:audio=/x/a.parquet#emb" -> ("audio", Path("/x/a.parquet"), "emb")."""
    body = spec.split(":", 1)[1] if spec.startswith("vectors:") else spec
    name, _, rest = body.partition("=") if "=" in body.split("/")[0] else ("", "", body)
    path_str, _, column = rest.partition("#")
    path = Path(path_str).expanduser()
    return (name or path.stem), path, (column or None)


def _ids_as_str(values: Any) -> list[str]:
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # 1.0 -> "1": ids written as floats by pandas
    return [str(v) for v in arr.tolist()]


def _read_parquet(path: Path, column: str | None) -> tuple[list[str], list[Any]]:
    import pandas as pd

    df = pd.read_parquet(path)
    if "item_id" not in df.columns:
        raise VectorsError(f"{path}: no item_id column (columns: {list(df.columns)})")
    if column is None:
        candidates = [c for c in df.columns if c != "item_id" and len(df) and
                      isinstance(df[c].iloc[0], list | tuple | np.ndarray)]
        if len(candidates) != 1:
            raise VectorsError(f"{path}: expected one list column of vectors, found {candidates or 'none'}; "
                               f"name it as vectors:{path}#<column>")
        column = candidates[0]
    if column not in df.columns:
        raise VectorsError(f"{path}: no column {column!r} (columns: {list(df.columns)})")
    return _ids_as_str(df["item_id"].to_numpy()), list(df[column])


def _read_npy(path: Path) -> tuple[list[str], list[Any]]:
    matrix = np.load(path, allow_pickle=False)
    if matrix.ndim != 2:
        raise VectorsError(f"{path}: expected a 2-D matrix (items x dim), got shape {matrix.shape}")
    txt, js = path.with_suffix(".ids.txt"), path.with_suffix(".ids.json")
    if txt.exists():
        ids = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
    elif js.exists():
        ids = _ids_as_str(json.loads(js.read_text()))
    else:
        raise VectorsError(f"{path}: no id file; write the item ids, one per row, to {txt} or {js}")
    if len(ids) != matrix.shape[0]:
        raise VectorsError(f"{path}: {matrix.shape[0]} rows but {len(ids)} ids in the id file; "
                           "rows would be misaligned with items")
    return ids, list(matrix)


def given_vector(values: Any, dim: int, normalise: bool) -> np.ndarray | None:
    """A vector given with an item added while serving, as a model stores it: float32 of `dim`
    values, L2-normalised when `normalise`; None when it does not fit (another dimension, a value
    not finite or above MAX_VECTOR_VALUE, all zeros where it would be normalised)."""
    row = np.asarray(values if values is not None else (), dtype=np.float64).ravel()
    if len(row) != dim or not (np.abs(row) <= MAX_VECTOR_VALUE).all() or (normalise and not row.any()):
        return None
    return (row / np.linalg.norm(row) if normalise else row).astype(np.float32)


def read_vectors(path: Path, column: str | None = None) -> tuple[list[str], np.ndarray]:
    """Read ids and a (n, d) float32 matrix, checking dimension and duplicate ids."""
    if not path.exists():
        raise VectorsError(f"{path}: vectors file not found")
    if path.suffix == ".parquet":
        ids, rows = _read_parquet(path, column)
    elif path.suffix == ".npy":
        ids, rows = _read_npy(path)
    else:
        raise VectorsError(f"{path}: unsupported vectors file; use .parquet (item_id + list column) or .npy + ids")
    if not rows:
        raise VectorsError(f"{path}: no rows")
    dims = [len(np.ravel(r)) for r in rows]
    expected = dims[0]
    bad = [i for i, d in enumerate(dims) if d != expected]
    if bad:
        raise VectorsError(f"{path}: item {ids[bad[0]]!r} has dimension {dims[bad[0]]}, expected {expected} "
                           f"(from item {ids[0]!r}); {len(bad)} rows differ")
    seen: set[str] = set()
    dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dupes:
        raise VectorsError(f"{path}: duplicate item ids, e.g. {dupes[:5]}")
    return ids, np.stack([np.ravel(r) for r in rows]).astype(np.float32)


def align_vectors(spec: str, catalogue_ids: Sequence[str], cfg: FeaturizeConfig) -> tuple[FeatureMatrix, dict[str, Any]]:
    """Load `vectors:<path>` and align it to the catalogue's item order.

    Returns:
        The FeatureMatrix (row = item_idx) and a report for the manifest.
    """
    name, path, column = parse_source(spec)
    ids, matrix = read_vectors(path, column)
    position = {item_id: i for i, item_id in enumerate(catalogue_ids)}
    values = np.zeros((len(catalogue_ids), matrix.shape[1]), np.float32)
    mask = np.zeros(len(catalogue_ids), bool)
    finite = np.isfinite(matrix).all(axis=1)
    unknown = [i for i in ids if i not in position]
    nonfinite = [ids[r] for r in np.flatnonzero(~finite) if ids[r] in position]
    for r, item_id in enumerate(ids):
        if item_id in position and finite[r]:
            values[position[item_id]] = matrix[r]
            mask[position[item_id]] = True
    coverage = float(mask.mean()) if len(mask) else 0.0
    if coverage < cfg.vectors_min_coverage:
        raise VectorsError(
            f"{path}: vectors cover {coverage:.1%} of the catalogue (< vectors_min_coverage "
            f"{cfg.vectors_min_coverage:.0%}); file ids e.g. {ids[:3]}, catalogue ids e.g. {list(catalogue_ids[:3])}"
        )
    if cfg.normalize:
        values /= np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    report = {"source": str(path), "column": column, "rows_in_file": len(ids),
              "unknown_ids": len(unknown), "unknown_id_examples": unknown[:10],
              "nonfinite_items": len(nonfinite), "nonfinite_examples": nonfinite[:10]}
    return FeatureMatrix(feature_key("vectors", name), "vectors", name, values, mask), report
