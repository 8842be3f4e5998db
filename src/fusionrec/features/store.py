"""The features folder: one float32 matrix + bool mask per encoder, and manifest.json.

Layout (see docs/CONTRACTS.md): `{modality}__{slug}.npy` (n_items x dim, row = item_idx,
zeros where masked), `{modality}__{slug}.mask.npy` (n_items, True = present) and
`manifest.json`, whose `features` entry maps each key ("text:minilm",
"image:effnet-lite0", "vectors:audio") to its files and statistics. Downstream steps
read the folder only through `load_features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.io import read_json, write_json
from fusionrec.schema import FEATURES_MANIFEST, MODALITIES


class FeatureStoreError(ValueError):
    """A features folder that cannot be read; the message names the file."""


@dataclass(frozen=True)
class FeatureMatrix:
    """One modality's item embeddings.

    Attributes:
        name: the key, e.g. "text:minilm" or "vectors:audio".
        modality: "text", "image" or "vectors".
        encoder: the encoder name, e.g. "minilm", "tv:resnet50", "audio".
        values: (n_items, dim) float32, row = item_idx, zeros where mask is False.
        mask: (n_items,) bool, False where the item lacks this modality.
    """

    name: str
    modality: str
    encoder: str
    values: np.ndarray
    mask: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def coverage(self) -> float:
        """Share of items that have this modality."""
        return float(self.mask.mean()) if len(self.mask) else 0.0


def feature_key(modality: str, encoder: str) -> str:
    """The dictionary key of a feature matrix: "text:minilm", "vectors:audio"."""
    return f"{modality}:{encoder}"


def slugify(name: str) -> str:
    """A file-name-safe form of an encoder name ("tv:resnet50" -> "tv-resnet50")."""
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return out.strip("-.") or "unnamed"


def matrix_files(modality: str, encoder: str) -> tuple[str, str]:
    """File names of the matrix and its mask for one encoder."""
    stem = f"{modality}__{slugify(encoder)}"
    return f"{stem}.npy", f"{stem}.mask.npy"


def save_feature(out_dir: Path, fm: FeatureMatrix) -> dict[str, str]:
    """Write one matrix and its mask; masked rows are zeroed so nothing fake leaks out.

    Returns:
        {"values": file name, "mask": file name} for the manifest.
    """
    values = np.ascontiguousarray(fm.values, dtype=np.float32)
    mask = np.asarray(fm.mask, dtype=bool)
    if values.ndim != 2 or mask.shape != (values.shape[0],):
        raise FeatureStoreError(f"{fm.name}: values {values.shape} and mask {mask.shape} do not match")
    values = np.where(mask[:, None], values, np.float32(0.0)).astype(np.float32)
    values_file, mask_file = matrix_files(fm.modality, fm.encoder)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / values_file, values, allow_pickle=False)
    np.save(out_dir / mask_file, mask, allow_pickle=False)
    return {"values": values_file, "mask": mask_file}


def read_manifest(features_dir: Path) -> dict[str, Any]:
    """The manifest of a features folder (an error naming the folder if absent)."""
    path = Path(features_dir) / FEATURES_MANIFEST
    if not path.exists():
        raise FeatureStoreError(f"{path}: no manifest; run `fusionrec featurize` first")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        raise FeatureStoreError(f"{path}: expected a 'features' mapping")
    return data


def write_manifest(features_dir: Path, manifest: dict[str, Any]) -> Path:
    return write_json(Path(features_dir) / FEATURES_MANIFEST, manifest)


def _load_one(features_dir: Path, key: str, entry: dict[str, Any]) -> FeatureMatrix:
    modality, encoder = entry["modality"], entry["encoder"]
    if modality not in MODALITIES:
        raise FeatureStoreError(f"{features_dir / FEATURES_MANIFEST}: {key}: unknown modality {modality!r}")
    values_path = features_dir / entry["files"]["values"]
    mask_path = features_dir / entry["files"]["mask"]
    try:
        values = np.load(values_path, allow_pickle=False)
        mask = np.load(mask_path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise FeatureStoreError(f"{key}: missing file {exc.filename}; rerun `fusionrec featurize`") from None
    if values.ndim != 2 or mask.shape != (values.shape[0],):
        raise FeatureStoreError(f"{values_path}: shape {values.shape} does not match mask {mask_path} {mask.shape}")
    return FeatureMatrix(key, modality, encoder, values.astype(np.float32, copy=False), mask.astype(bool))


def load_features(features_dir: Path | str, keys: list[str] | None = None) -> dict[str, FeatureMatrix]:
    """Load every feature matrix of a features folder (or only `keys`).

    Args:
        features_dir: the output folder of `fusionrec featurize`.
        keys: e.g. ["text:minilm", "image:effnet-lite0"]; None loads all.

    Returns:
        {key: FeatureMatrix}, all with the same number of rows (= items, row = item_idx).
    """
    features_dir = Path(features_dir)
    entries: dict[str, Any] = read_manifest(features_dir)["features"]
    wanted = list(entries) if keys is None else keys
    unknown = [k for k in wanted if k not in entries]
    if unknown:
        raise FeatureStoreError(
            f"{features_dir}: no features {unknown}; available: {sorted(entries)} "
            "(add the encoder to params.yaml featurize and rerun)"
        )
    out = {key: _load_one(features_dir, key, entries[key]) for key in wanted}
    rows = {k: fm.values.shape[0] for k, fm in out.items()}
    if len(set(rows.values())) > 1:
        raise FeatureStoreError(f"{features_dir}: feature matrices disagree on the number of items: {rows}")
    return out
