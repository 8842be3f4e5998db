"""Content-hash cache of item embeddings, so a rerun encodes only new or changed items.

The key of a row is (encoder name, encoder version, hash of the item's content): the
text itself, or the image file's bytes. A new model file, a refitted tfidf or another
normalisation changes the version and so starts a fresh cache; a changed text or image
changes only that item's key. Storage is one folder per (encoder, version) holding
`keys.npy` (fixed-width strings) and `values.npy` (float32): no pickle, atomic writes.
Only successful encodings are cached: a corrupt image is retried (and reported) each run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.features.store import slugify


def text_hash(text: str) -> str:
    """Content hash of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def image_hash(source: Any) -> str | None:
    """Content hash of an image (file bytes, raw bytes or PIL pixels); None if unreadable."""
    h = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        h.update(bytes(source))
    elif isinstance(source, str | Path):
        try:
            h.update(Path(source).read_bytes())
        except OSError:
            return None
    else:  # a PIL image: hash its pixels and geometry
        h.update(f"{source.mode}{source.size}".encode())
        h.update(source.tobytes())
    return h.hexdigest()[:32]


class EmbeddingCache:
    """Embeddings of one encoder version, keyed by content hash."""

    def __init__(self, root: Path, encoder_name: str, version: str) -> None:
        digest = hashlib.sha256(version.encode()).hexdigest()[:12]
        self.folder = Path(root) / f"{slugify(encoder_name)}-{digest}"
        self.version = version
        self._rows: dict[str, np.ndarray] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        keys_path, values_path = self.folder / "keys.npy", self.folder / "values.npy"
        if not (keys_path.exists() and values_path.exists()):
            return
        try:
            keys = np.load(keys_path, allow_pickle=False)
            values = np.load(values_path, allow_pickle=False)
        except (OSError, ValueError):
            return  # a damaged cache is only a slower run, never an error
        if len(keys) == len(values):
            self._rows = {str(k): v for k, v in zip(keys, values, strict=True)}

    def lookup(self, keys: list[str | None]) -> tuple[np.ndarray | None, np.ndarray]:
        """Cached rows for keys -> ((n, dim) values or None if nothing hit, (n,) hit mask)."""
        self._load()
        hit = np.array([k is not None and k in self._rows for k in keys], dtype=bool)
        if not hit.any():
            return None, hit
        dim = len(next(iter(self._rows.values())))
        values = np.zeros((len(keys), dim), np.float32)
        for i in np.flatnonzero(hit):
            values[i] = self._rows[keys[i]]  # type: ignore[index]
        return values, hit

    def add(self, keys: list[str | None], values: np.ndarray) -> None:
        """Remember rows (keys that are None are skipped)."""
        self._load()
        for key, row in zip(keys, values, strict=True):
            if key is not None:
                self._rows[key] = np.asarray(row, np.float32)

    def __len__(self) -> int:
        self._load()
        return len(self._rows)

    def save(self) -> None:
        """Write the cache atomically (a crash mid-write leaves the previous cache)."""
        if not self._rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._rows), dtype="U32")
        values = np.stack(list(self._rows.values())).astype(np.float32)
        for name, arr in (("values.npy", values), ("keys.npy", keys)):
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, self.folder / name)
        (self.folder / "version.txt").write_text(self.version + "\n")
