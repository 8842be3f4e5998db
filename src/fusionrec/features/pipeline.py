"""`run_featurize`: an ingested folder -> one embedding matrix per encoder + manifest.json.

For each encoder named in the featurize section: fit it if it needs fitting (tfidf,
state reused when the corpus is unchanged), look every item's content hash up in the
cache, encode only the misses, mask items without the modality or whose image fails to
decode, write `{modality}__{slug}.npy` + mask, the encoder's state folder, and a
manifest entry with coverage, speed and the neighbour-label quality check.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import FeaturizeConfig
from fusionrec.features.cache import EmbeddingCache, image_hash, text_hash
from fusionrec.features.encoder import ENCODER_JSON, Encoder
from fusionrec.features.quality import label_matrix, neighbour_label_share
from fusionrec.features.registry import get_encoder, split_spec
from fusionrec.features.store import FeatureMatrix, feature_key, save_feature, slugify, write_manifest
from fusionrec.features.vectors import align_vectors, given_vector
from fusionrec.io import StepResult, write_json
from fusionrec.schema import (
    HAS_IMAGE,
    HAS_TEXT,
    IMAGE_PATH,
    INGESTED_ITEMS,
    ITEM_ID,
    RUNTIME_VECTORS,
    TEXT,
)

MAX_LISTED_FAILURES = 50
EncodeFn = Callable[[list[Any]], tuple[np.ndarray, np.ndarray, dict[int, str]]]


class FeaturizeError(ValueError):
    """Featurize cannot run on this input; the message names the file and what to fix."""


def load_items(ingested_dir: Path) -> pd.DataFrame:
    """items.parquet of an ingested folder, checked for the columns featurize reads."""
    path = Path(ingested_dir) / INGESTED_ITEMS
    if not path.exists():
        raise FeaturizeError(f"{path}: not found; run `fusionrec ingest DATA {ingested_dir}` first")
    items = pd.read_parquet(path)
    missing = [c for c in (ITEM_ID, TEXT, IMAGE_PATH, HAS_TEXT, HAS_IMAGE) if c not in items.columns]
    if missing:
        raise FeaturizeError(f"{path}: missing columns {missing} (written by `fusionrec ingest`)")
    items[ITEM_ID] = items[ITEM_ID].astype(str)
    return items.reset_index(drop=True)


def item_texts(items: pd.DataFrame, cfg: FeaturizeConfig) -> tuple[list[str], np.ndarray]:
    """The text of every item and whether it has one (featurize.text_columns, else ingest's text)."""
    if cfg.text_columns:
        absent = [c for c in cfg.text_columns if c not in items.columns]
        if absent:
            raise FeaturizeError(f"featurize.text_columns {absent} are not item columns: {list(items.columns)}")
        parts = items[cfg.text_columns].fillna("").astype(str).map(str.strip)
        texts = [cfg.text_separator.join(p for p in row if p) for row in parts.itertuples(index=False)]
    else:
        texts = items[TEXT].fillna("").astype(str).tolist()
    present = np.array([bool(t.strip()) for t in texts]) & items[HAS_TEXT].fillna(False).to_numpy(bool)
    return texts, present


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers): robust to a busy machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _encode_with_cache(encoder: Encoder, inputs: list[Any], keys: list[str | None], present: np.ndarray,
                       cache: EmbeddingCache, encode: EncodeFn) -> tuple[np.ndarray, np.ndarray, dict[int, str], dict[str, Any]]:
    """Cached rows where the content hash hits, `encode` for the misses; returns values, mask, errors, stats."""
    errors = {int(i): "unreadable file" for i in np.flatnonzero(present) if keys[i] is None}
    cached, hit = cache.lookup([k if p else None for k, p in zip(keys, present, strict=True)])
    todo = np.flatnonzero(present & ~hit & np.array([k is not None for k in keys]))
    t0 = time.perf_counter()
    if len(todo):
        encoder.load()  # model loading is not encoding: timed apart
    load_s = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    new_values, new_ok, new_errors = encode([inputs[i] for i in todo]) if len(todo) else (None, None, {})
    encode_s, encode_cpu_s = time.perf_counter() - t0, _cpu_seconds() - cpu0
    dim = new_values.shape[1] if new_values is not None else cached.shape[1] if cached is not None else encoder.dim
    values = cached if cached is not None else np.zeros((len(inputs), dim), np.float32)
    mask = hit.copy()
    if new_values is not None and new_ok is not None:
        values[todo] = new_values
        mask[todo] = new_ok
        errors.update({int(todo[j]): reason for j, reason in new_errors.items()})
        cache.add([keys[i] for i in todo[new_ok]], new_values[new_ok])
        cache.save()
    stats = {"encoded": int(len(todo)), "cached": int(hit.sum()), "failed": len(errors),
             "load_s": round(load_s, 3), "encode_s": round(encode_s, 3), "encode_cpu_s": round(encode_cpu_s, 3),
             "items_per_s": round(len(todo) / encode_s, 2) if len(todo) and encode_s > 0 else None}
    return values, mask, errors, stats


def _fit_state(encoder: Encoder, texts: list[str], present: np.ndarray, cache_root: Path) -> None:
    """Fit (tfidf) on the catalogue, reusing a state folder when the corpus is unchanged."""
    corpus = [t for t, p in zip(texts, present, strict=True) if p]
    key = [encoder.spec, encoder.cfg.tfidf_dim, encoder.cfg.normalize, corpus]
    h = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    state = cache_root / "state" / f"{slugify(encoder.name)}-{h}"
    if (state / ENCODER_JSON).exists():
        encoder.load_state(state)
        return
    encoder.fit(corpus)
    encoder.save_state(state)


def _failures(errors: dict[int, str], ids: list[str]) -> list[dict[str, str]]:
    return [{"item_id": ids[i], "reason": errors[i]} for i in sorted(errors)[:MAX_LISTED_FAILURES]]


def featurize_modality(spec: str, items: pd.DataFrame, cfg: FeaturizeConfig, cache_root: Path,
                       state_root: Path) -> tuple[FeatureMatrix, dict[str, Any]]:
    """Encode one text or image encoder over the catalogue (cache-aware); returns matrix and manifest entry."""
    t0 = time.perf_counter()
    encoder = get_encoder(spec, cfg)
    ids = items[ITEM_ID].tolist()
    inputs: list[Any]
    if encoder.modality == "text":
        inputs, present = item_texts(items, cfg)
        if encoder.needs_fit:
            _fit_state(encoder, inputs, present, cache_root)
        keys: list[str | None] = [text_hash(t) for t in inputs]
        encode: EncodeFn = lambda xs: (encoder.encode_texts(xs), np.ones(len(xs), bool), {})  # noqa: E731
    else:
        present = items[HAS_IMAGE].fillna(False).to_numpy(bool) & items[IMAGE_PATH].notna().to_numpy()
        inputs = [p if ok else None for p, ok in zip(items[IMAGE_PATH], present, strict=True)]
        keys = [image_hash(p) if ok else None for p, ok in zip(inputs, present, strict=True)]
        encode = encoder.encode_images_detailed
    cache = EmbeddingCache(cache_root, encoder.name, encoder.version)
    values, mask, errors, stats = _encode_with_cache(encoder, inputs, keys, present, cache, encode)
    fm = FeatureMatrix(feature_key(encoder.modality, encoder.name), encoder.modality, encoder.name, values, mask)
    info = encoder.describe(dim=fm.dim)
    state_dir = state_root / slugify(encoder.name)
    encoder.save_state(state_dir)  # fitted vocabularies, built runtime graphs: the model carries them to serving
    write_json(state_dir / ENCODER_JSON, info)
    info.pop("config")  # the manifest holds it once, at the top
    entry = {**info, "encoder": encoder.name, "state_dir": str(state_dir.relative_to(state_root.parent)),
             "items": len(ids), "present": int(mask.sum()), "coverage": round(fm.coverage, 4),
             "missing_modality": int((~present).sum()), **stats, "failures": _failures(errors, ids),
             "wall_s": round(time.perf_counter() - t0, 3)}
    return fm, entry


def featurize_vectors(spec: str, items: pd.DataFrame, cfg: FeaturizeConfig,
                      ingested_dir: Path | None = None) -> tuple[FeatureMatrix, dict[str, Any]]:
    """Align one `vectors:<path>` source to the catalogue; returns matrix and manifest entry.

    Items the file lacks take the vectors given with them when they were added while serving
    (the ingested folder's runtime_vectors.parquet), when those fit: same dimension, finite.
    """
    t0 = time.perf_counter()
    fm, report = align_vectors(spec, items[ITEM_ID].tolist(), cfg)
    given = _given_vectors(fm, items, cfg, ingested_dir / RUNTIME_VECTORS) if ingested_dir is not None else 0
    entry = {"spec": spec, "name": fm.encoder, "modality": "vectors", "encoder": fm.encoder,
             "version": "vectors", "dim": fm.dim, "normalization": "l2" if cfg.normalize else "none",
             "items": len(items), "present": int(fm.mask.sum()), "coverage": round(fm.coverage, 4), **report,
             "runtime_vectors": given, "wall_s": round(time.perf_counter() - t0, 3)}
    return fm, entry


def _given_vectors(fm: FeatureMatrix, items: pd.DataFrame, cfg: FeaturizeConfig, path: Path) -> int:
    """Fill the rows `fm` lacks from runtime_vectors.parquet (item_id, modality, vector); how many."""
    if not path.is_file():
        return 0
    given = pd.read_parquet(path)
    given = given[given["modality"] == fm.name]
    position = {item_id: i for i, item_id in enumerate(items[ITEM_ID].astype(str))}
    filled = 0
    for item_id, vector in zip(given[ITEM_ID].astype(str), given["vector"], strict=True):
        i, row = position.get(item_id), given_vector(vector, fm.dim, cfg.normalize)
        if i is None or fm.mask[i] or row is None:  # serving checks what it stores; another model's may not fit
            continue
        fm.values[i] = row
        fm.mask[i] = True
        filled += 1
    return filled


def _quality(fm: FeatureMatrix, labels: np.ndarray | None, k: int) -> dict[str, Any] | None:
    if labels is None:
        return None
    return {"check": "neighbour_label_share", **neighbour_label_share(fm.values, fm.mask, labels, k=k)}


def _all_features(items: pd.DataFrame, cfg: FeaturizeConfig, cache_root: Path, out_dir: Path,
                  ingested_dir: Path) -> Iterator[tuple[FeatureMatrix, dict[str, Any]]]:
    """Every configured encoder and vector source in turn ("none" skipped)."""
    for spec in [*cfg.text_encoders, *cfg.image_encoders]:
        if split_spec(spec)[0] != "none":
            yield featurize_modality(spec, items, cfg, cache_root, out_dir / "encoders")
    for spec in cfg.vector_sources:
        yield featurize_vectors(spec, items, cfg, ingested_dir)


def run_featurize(ingested_dir: Path, out_dir: Path, cfg: FeaturizeConfig) -> StepResult:
    """Embed every item with every configured encoder and write the features folder.

    Args:
        ingested_dir: output of `fusionrec ingest` (items.parquet).
        out_dir: the features folder (see docs/CONTRACTS.md).
        cfg: the featurize section of params.yaml.

    Returns:
        StepResult with flat metrics ("text:minilm.coverage", ".items_per_s", ".label_share", ...).
    """
    t0 = time.perf_counter()
    items = load_items(Path(ingested_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else out_dir.parent / ".feature-cache"
    label_col = cfg.quality_label_column
    labels = label_matrix(items[label_col].tolist()) if label_col and label_col in items.columns else None
    entries: dict[str, dict[str, Any]] = {}
    has_content = np.zeros(len(items), bool)
    for fm, entry in _all_features(items, cfg, cache_root, out_dir, Path(ingested_dir)):
        if fm.name in entries:
            raise FeaturizeError(f"two featurize entries produce the feature {fm.name!r}; keep one")
        entry["files"] = save_feature(out_dir, fm)
        entry["quality"] = _quality(fm, labels, cfg.quality_k)
        entries[fm.name] = entry
        has_content |= fm.mask
    wall = time.perf_counter() - t0
    content = content_report(items, has_content)
    write_manifest(out_dir, {"items": len(items), "wall_s": round(wall, 3), "ingested_dir": str(ingested_dir),
                             "config": cfg.model_dump(mode="json"), "content": content, "features": entries})
    metrics = _metrics(entries, len(items), wall)
    metrics["items_without_content"] = content["items_without_content"]
    return StepResult(metrics=metrics, outputs={"features": out_dir})


def content_report(items: pd.DataFrame, has_content: np.ndarray) -> dict[str, Any]:
    """Items that no feature covers (every modality masked): the model can serve them from interactions only.

    Ingest keeps items without text or image (their content may come as vectors: files); this is
    where it is known which of them got none from any source.
    """
    bare = ~has_content
    return {"items_with_content": int(has_content.sum()), "items_without_content": int(bare.sum()),
            "items_without_content_examples": items.loc[bare, ITEM_ID].head(10).tolist(),
            "note": "masked in every modality: ranked from their interactions alone (id embedding, graph); "
                    "one without interactions either cannot be ranked until it gets some"}


def _metrics(entries: dict[str, dict[str, Any]], n_items: int, wall: float) -> dict[str, float | int]:
    metrics: dict[str, float | int] = {"items": n_items, "wall_s": round(wall, 3)}
    for key, e in entries.items():
        metrics[f"{key}.coverage"] = e["coverage"]
        for name in ("encoded", "cached", "failed", "items_per_s"):
            if e.get(name) is not None:
                metrics[f"{key}.{name}"] = e[name]
        if e.get("quality") and e["quality"]["share"] == e["quality"]["share"]:  # skip NaN
            metrics[f"{key}.label_share"] = e["quality"]["share"]
    return metrics
