"""Item catalogue validation for ingest: ids, joined text and checked images.

A catalogue may hold any content: text columns, images, neither (its content comes as
featurize `vectors:` files: audio, video, CLIP embeddings), or only ids. Ingest therefore
keeps every item with a valid id, whatever content it has, and masks what is missing:

- an item with no text and no usable image is kept with both modalities masked. Its content
  is whatever `vectors:` sources featurize aligns to it (the features manifest counts the
  items that end up with no content at all); without any, the model serves it from the
  interactions alone (id embedding, graph), like any item of a catalogue without content;
- a bad value for a modality (unreadable, oversized, missing or escaping image) masks that
  modality and is a row of rejected.parquet with its reason;
- where the file has text columns, an item whose text cells are all empty is a row too:
  `empty_text` when it has an image, `empty_item` when it has nothing else either (kept);
- a modality the file does not have at all (no text column, no image column nor images/
  folder) is not a per-row rejection: the report gives each modality's coverage.

Ingest does not read the `vectors:` files: which items they cover is checked where they are
read, by featurize (alignment by item id, coverage limit, masks).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.config import IngestConfig
from fusionrec.data.images import ImageRejected, default_image_path, image_names, open_image_checked
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


def _image_candidate(folder: Path, root: Path, item_id: str, value: str, real: _Resolver, names: set[str]
                     ) -> tuple[Path | None, str, str]:
    """(path, reason, detail) of an item's image before decoding; reason "" when it may be used."""
    if value:
        path = real(folder / value)
        if not path.is_relative_to(root):
            return None, "image_outside_dataset", f"image {value!r} resolves outside {root}"
        if not path.is_file():
            return None, "missing_image", f"image {value!r} not found under {folder}"
        return path, "", ""
    found = default_image_path(folder, schema.IMAGES_DIR, item_id, names)
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
    names = image_names(folder / schema.IMAGES_DIR)  # one listing, not four stats per item
    candidates = [
        _image_candidate(folder, root, i, v, real, names) for i, v in zip(items[schema.ITEM_ID], values, strict=True)
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
    """Validated catalogue in source order: ids, text, image_path, has_text, has_image.

    No item with a valid id is dropped for lacking content (see the module doc).
    """
    items = clean_item_ids(items, source, rejects)
    text_columns = [c for c in cfg.text_columns if c in items.columns]
    for c in text_columns:
        items[c] = as_text(items[c])
    items[schema.TEXT] = join_text(items, text_columns, cfg.text_separator)
    items[schema.IMAGE_PATH] = check_images(items, folder, source, cfg, rejects)
    items[schema.HAS_TEXT] = items[schema.TEXT] != ""
    items[schema.HAS_IMAGE] = items[schema.IMAGE_PATH].notna()
    if text_columns:  # the file has text: an item whose text cells are all empty is worth a row
        bare = ~items[schema.HAS_TEXT] & ~items[schema.HAS_IMAGE]
        rejects.add_frame(items[bare], source, "empty_item", [
            f"no text in {text_columns} and no usable image; kept with both masked "
            "(content from vectors: features only, else from interactions)"] * int(bare.sum()))
        no_text = ~items[schema.HAS_TEXT] & items[schema.HAS_IMAGE]
        rejects.add_frame(
            items[no_text], source, "empty_text", [f"no text in {text_columns}; text masked"] * int(no_text.sum())
        )
    return items


def finish_items(items: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """items.parquet: rows in item_idx order, item_idx first, private columns dropped."""
    items = items.set_index(schema.ITEM_ID).loc[order].reset_index()
    items.insert(0, schema.ITEM_IDX, np.arange(len(items), dtype=np.int32))
    return items.drop(columns=[ROW])
