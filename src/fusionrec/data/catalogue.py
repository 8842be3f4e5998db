"""Item catalogue validation for ingest: ids, joined text and checked images.

An item missing one modality is kept with that modality masked (and the reason is
still a row of rejected.parquet); an item with neither usable text nor a usable image
is dropped as `empty_item`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.config import IngestConfig
from fusionrec.data.images import ImageRejected, default_image_path, open_image_checked
from fusionrec.data.tables import ROW, Rejects, as_id_strings, as_text


def join_text(items: pd.DataFrame, columns: list[str], separator: str) -> pd.Series:
    """The text modality: the non-empty text columns joined with separator ("" when none)."""
    if not columns:
        return pd.Series([""] * len(items), index=items.index, dtype=object)
    parts = [as_text(items[c]) for c in columns]
    joined = [separator.join(p for p in row if p) for row in zip(*parts, strict=True)]
    return pd.Series(joined, index=items.index, dtype=object)


def clean_item_ids(items: pd.DataFrame, source: str, rejects: Rejects) -> pd.DataFrame:
    """Drop rows with an empty item_id (unparseable) and later duplicates (first kept)."""
    items = items.copy()
    items[schema.ITEM_ID] = as_id_strings(items[schema.ITEM_ID])
    empty = items[schema.ITEM_ID] == ""
    rejects.add_frame(items[empty], source, "unparseable_value", ["empty item_id"] * int(empty.sum()))
    items = items[~empty]
    dup = items.duplicated(schema.ITEM_ID, keep="first")
    details = [f"item_id {i!r} repeated; the first row is kept" for i in items.loc[dup, schema.ITEM_ID]]
    rejects.add_frame(items[dup], source, "duplicate_item", details)
    return items[~dup]


class _Resolver:
    """realpath of files, resolving each parent folder once (1,700 full resolves cost ~1 s)."""

    def __init__(self) -> None:
        self.parents: dict[Path, Path] = {}

    def __call__(self, path: Path) -> Path:
        if ".." in path.parts or path.is_symlink():
            return path.resolve()
        parent = self.parents.get(path.parent)
        if parent is None:
            parent = self.parents[path.parent] = path.parent.resolve()
        return parent / path.name


def _image_candidate(folder: Path, root: Path, item_id: str, value: str, real: _Resolver) -> tuple[Path | None, str, str]:
    """(path, reason, detail) of an item's image before decoding; reason "" when it may be used."""
    if value:
        path = real(folder / value)
        if not path.is_relative_to(root):
            return None, "image_outside_dataset", f"image {value!r} resolves outside {root}"
        if not path.is_file():
            return None, "missing_image", f"image {value!r} not found under {folder}"
        return path, "", ""
    found = default_image_path(folder, schema.IMAGES_DIR, item_id)
    if found is None:
        return None, "", ""  # no image at all: masked, counted in the report, not a rejection
    path = real(found)
    if not path.is_relative_to(root):  # a symlink pointing out of the dataset
        return None, "image_outside_dataset", f"{found} resolves outside {root}"
    return path, "", ""


def check_images(items: pd.DataFrame, folder: Path, source: str, cfg: IngestConfig, rejects: Rejects) -> pd.Series:
    """Absolute paths of the usable images (None where absent or rejected), decoded when configured."""
    root = folder.resolve()
    values = as_text(items[schema.IMAGE]) if schema.IMAGE in items else pd.Series([""] * len(items), dtype=object)
    real = _Resolver()
    candidates = [
        _image_candidate(folder, root, i, v, real) for i, v in zip(items[schema.ITEM_ID], values, strict=True)
    ]

    def check(path: Path | None) -> tuple[str, str]:
        if path is None:
            return "", ""
        try:
            open_image_checked(path, cfg.max_image_pixels, cfg.max_image_bytes, decode=cfg.check_images).close()
        except ImageRejected as exc:
            return exc.reason, exc.detail
        return "", ""

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        outcomes = list(pool.map(check, [c[0] for c in candidates]))
    paths: list[str | None] = []
    for (row, item_id), (path, reason, detail), (bad, why) in zip(
        zip(items[ROW], items[schema.ITEM_ID], strict=True), candidates, outcomes, strict=True
    ):
        reason, detail = (reason, detail) if reason else (bad, why)
        if reason:
            rejects.add(source, row, reason, f"{detail}; image masked", item_id=item_id)
        paths.append(None if reason or path is None else str(path))
    return pd.Series(paths, index=items.index, dtype=object)


def prepare_items(items: pd.DataFrame, folder: Path, source: str, cfg: IngestConfig, rejects: Rejects) -> pd.DataFrame:
    """Validated catalogue in source order: ids, text, image_path, has_text, has_image."""
    items = clean_item_ids(items, source, rejects)
    text_columns = [c for c in cfg.text_columns if c in items.columns]
    for c in text_columns:
        items[c] = as_text(items[c])
    items[schema.TEXT] = join_text(items, text_columns, cfg.text_separator)
    items[schema.IMAGE_PATH] = check_images(items, folder, source, cfg, rejects)
    items[schema.HAS_TEXT] = items[schema.TEXT] != ""
    items[schema.HAS_IMAGE] = items[schema.IMAGE_PATH].notna()
    empty = ~items[schema.HAS_TEXT] & ~items[schema.HAS_IMAGE]
    rejects.add_frame(
        items[empty], source, "empty_item", [f"no text in {text_columns} and no usable image"] * int(empty.sum())
    )
    no_text = ~items[schema.HAS_TEXT] & items[schema.HAS_IMAGE]
    rejects.add_frame(
        items[no_text], source, "empty_text", [f"no text in {text_columns}; text masked"] * int(no_text.sum())
    )
    return items[~empty]


def finish_items(items: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """items.parquet: rows in item_idx order, item_idx first, private columns dropped."""
    items = items.set_index(schema.ITEM_ID).loc[order].reset_index()
    items.insert(0, schema.ITEM_IDX, np.arange(len(items), dtype=np.int32))
    return items.drop(columns=[ROW])
