"""The interface every encoder follows, and the helpers encoders share.

`Encoder` is a frozen feature extractor for one modality; text.py and image.py implement it,
registry.py builds one from a spec. This module imports only numpy at the top, so the
encoder modules and the registry can all depend on it without depending on each other.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fusionrec.config import FeaturizeConfig

ENCODER_JSON = "encoder.json"  # written to every state folder: spec, name, version, dim


class EncoderError(ValueError):
    """An encoder spec or state that cannot be used; the message says which and why."""


class Encoder:
    """A frozen feature extractor for one modality.

    Subclasses set `name`, `modality` and implement `_encode_texts` or `_encode_images`;
    outputs are float32 and L2-normalised when `cfg.normalize` is set.
    """

    name: str = ""  # canonical name used in feature keys: "minilm", "tv:resnet50"
    modality: str = ""  # "text" or "image"
    needs_fit: bool = False  # True: `fit(texts)` (or a state folder) before encoding

    def __init__(self, spec: str, cfg: FeaturizeConfig) -> None:
        self.spec = spec
        self.cfg = cfg

    # --- identity ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Output dimension (may load the model)."""
        raise NotImplementedError

    @property
    def version(self) -> str:
        """Changes whenever the outputs could change (weights, fitted state, normalisation)."""
        return f"{self._base_version()}|norm={self.normalization}"

    def _base_version(self) -> str:
        raise NotImplementedError

    @property
    def normalization(self) -> str:
        return "l2" if self.cfg.normalize else "none"

    def describe(self, dim: int | None = None) -> dict[str, Any]:
        """What a manifest or a state folder records: identity plus the featurize config used.

        Args:
            dim: the output dimension when already known (spares loading the model).
        """
        return {"spec": self.spec, "name": self.name, "modality": self.modality, "version": self.version,
                "dim": self.dim if dim is None else dim, "normalization": self.normalization,
                "config": self.cfg.model_dump(mode="json")}

    def load(self) -> None:
        """Load the model now (it otherwise loads on the first encode); no-op without one."""

    # --- fitted state -----------------------------------------------------------------
    def fit(self, texts: Sequence[str]) -> None:
        """Fit on the catalogue (only encoders with `needs_fit`)."""

    def save_state(self, state_dir: Path) -> None:
        """Write what is needed to rebuild this encoder (encoder.json + fitted arrays)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / ENCODER_JSON).write_text(json.dumps(self.describe(), indent=2) + "\n")

    def load_state(self, state_dir: Path) -> None:
        """Read fitted state written by `save_state`, and check it was made by this very encoder.

        A state folder whose recorded version differs (other weights, other normalisation)
        is an error: embedding new items with another model than the catalogue's would
        silently put them in a different space.
        """
        info_path = state_dir / ENCODER_JSON
        if not info_path.exists():
            return
        recorded = json.loads(info_path.read_text()).get("version")
        if recorded and recorded != self.version:
            raise EncoderError(f"{self.spec}: {state_dir} was written by version {recorded!r}, but this "
                               f"environment builds {self.version!r}; rerun featurize or align the weights/config")

    # --- encoding ---------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts -> (n, dim) float32."""
        if self.modality != "text":
            raise EncoderError(f"{self.spec} is an image encoder; use encode_images")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._finish(self._encode_texts(list(texts)))

    def encode_images(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Embed images (paths, bytes or PIL images) -> ((n, dim) float32, (n,) bool mask).

        An image that cannot be decoded (corrupt, too large) gets mask False and a zero row.
        """
        values, mask, _ = self.encode_images_detailed(images)
        return values, mask

    def encode_images_detailed(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Like `encode_images`, plus {position: reason} for every image that failed."""
        if self.modality != "image":
            raise EncoderError(f"{self.spec} is a text encoder; use encode_texts")
        if not images:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool), {}
        values, mask, errors = self._encode_images(list(images))
        values = self._finish(values)
        values[~mask] = 0.0
        return values, mask, errors

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _encode_images(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        raise NotImplementedError

    def _finish(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        if self.cfg.normalize:
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            values = values / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(values, dtype=np.float32)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits): ties a version to exact weights."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int, chunk: int = 1 << 20) -> str:  # size/mtime: cache key
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def prepare_torch(threads: int) -> Any:
    """Import torch for CPU inference and set its thread count.

    Idle OpenMP threads are told to sleep rather than spin (unless the environment says
    otherwise): on a small machine shared with other jobs, spinning threads made batches
    several times slower. This only takes effect if torch was not imported before.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch


__all__ = ["ENCODER_JSON", "Encoder", "EncoderError", "file_digest", "prepare_torch"]
