"""Items added while serving, written into a dataset's items table and images folder.

Retraining's merge calls `add_runtime_items` before it merges the feedback, so events on
those items are merged like any other and the next model trains on the items' content.
Each item is written once (an item id already in the catalogue is left alone), the table
atomically; ingest then checks the new rows and images like the rest of the catalogue.

Text: an item given as `fields` keeps them in their columns, so ingest joins the same text the
service encoded; an item given as one `text` gets its title in the title column and the text
in the first other text column the table has (else the last of ingest's, e.g. `overview`). Images go to `images/<item_id>.<ext>` (the dataset's own
convention); an id that is not a safe file name gets a hashed file name, named in the `image`
column. Precomputed vectors given with an item (`vectors:` modalities, which no encoder can
make again) go to `runtime_vectors.parquet` (item_id, modality, vector); ingest carries that
file along and featurize fills those items' rows from it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fusionrec.io import find_table, read_table
from fusionrec.schema import IMAGE, IMAGES_DIR, ITEM_ID, ITEMS_STEM, RUNTIME_VECTORS

TITLE = "title"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"}


@dataclass
class NewItemsResult:
    """What one merge wrote into the catalogue."""

    added: int  # runtime items new to the catalogue
    images: int  # of which with an image file
    already_there: int  # runtime items whose id the catalogue has already (an earlier merge)
    vectors: int = 0  # of the new ones, with precomputed vectors (rows in runtime_vectors.parquet)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _text_cells(item: Any, text_columns: Sequence[str], present: Sequence[str]) -> dict[str, str]:
    """{column: value} of one item's text, so that joining the text columns gives what was served."""
    fields = item.fields if isinstance(item.fields, dict) else None
    if fields and any(key in text_columns for key in fields):
        cells = {key: str(value) for key, value in fields.items() if key in text_columns or key in present}
        if item.title and TITLE in present and TITLE not in cells and TITLE not in text_columns:
            cells[TITLE] = item.title  # a display-only title column: no effect on the joined text
        return cells
    others = [c for c in text_columns if c != TITLE]
    target = next((c for c in others if c in present), others[-1] if others else TITLE)
    cells = {target: item.text} if item.text else {}
    if item.title and target != TITLE:
        cells[TITLE] = item.title
    return cells


def _image_name(item_id: str) -> str:
    if _SAFE_NAME.fullmatch(item_id):
        return item_id
    return "runtime-" + hashlib.sha256(item_id.encode()).hexdigest()[:16]


def add_runtime_items(data_dir: Path, runtime_items: pd.DataFrame, text_columns: Sequence[str]) -> NewItemsResult:
    """Append the runtime items the dataset's catalogue lacks, with their images.

    Args:
        data_dir: a dataset folder (items.csv|parquet, images/).
        runtime_items: `fusionrec.monitoring.state.ServingState.items_frame()` (item_id, title, text,
            fields, image, image_format, ...).
        text_columns: ingest's text columns (IngestConfig.text_columns), joined into the text modality.
    """
    data_dir = Path(data_dir)
    items_path = find_table(data_dir, ITEMS_STEM)
    if items_path is None or runtime_items is None or runtime_items.empty:
        return NewItemsResult(0, 0, 0)
    items = read_table(items_path, dtype={ITEM_ID: str})
    known = set(items[ITEM_ID].astype(str))
    new = [it for it in runtime_items.itertuples(index=False) if str(it.item_id) not in known]
    if not new:
        return NewItemsResult(0, 0, len(runtime_items))
    with_vectors = _write_vectors(data_dir, new)  # before the items table: a crash between the two repeats both
    rows, images = [], 0
    for item in new:
        row: dict[str, Any] = {ITEM_ID: str(item.item_id), **_text_cells(item, text_columns, list(items.columns))}
        data = item.image if isinstance(item.image, bytes | bytearray | memoryview) else None
        if data:
            stem = _image_name(str(item.item_id))
            name = stem + _SUFFIX.get(str(item.image_format), ".png")
            folder = data_dir / IMAGES_DIR
            folder.mkdir(exist_ok=True)
            _atomic_write(folder / name, lambda tmp, data=bytes(data): Path(tmp).write_bytes(data))
            if IMAGE in items.columns or stem != str(item.item_id):  # else found by images/<item_id>.<ext>
                row[IMAGE] = f"{IMAGES_DIR}/{name}"
            images += 1
        rows.append(row)
    merged = pd.concat([items, pd.DataFrame(rows)], ignore_index=True)
    if items_path.suffix == ".parquet":
        _atomic_write(items_path, lambda tmp: merged.to_parquet(tmp, index=False))
    else:
        _atomic_write(items_path, lambda tmp: merged.to_csv(tmp, index=False))
    return NewItemsResult(len(new), images, len(runtime_items) - len(new), with_vectors)


def _write_vectors(data_dir: Path, new: Sequence[Any]) -> int:
    """Append the new items' given vectors to runtime_vectors.parquet; returns how many items had some."""
    rows = [{ITEM_ID: str(item.item_id), "modality": key, "vector": [float(x) for x in values]}
            for item in new if isinstance(getattr(item, "vectors", None), dict)
            for key, values in item.vectors.items()]
    if not rows:
        return 0
    path = data_dir / RUNTIME_VECTORS
    frame = pd.DataFrame(rows)
    if path.is_file():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    frame = frame.drop_duplicates([ITEM_ID, "modality"], keep="last")
    _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return len({row[ITEM_ID] for row in rows})
