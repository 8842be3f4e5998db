"""Encoders chosen by name: the registry (the interface every encoder follows is in encoder.py).

A spec names an encoder in params.yaml (`featurize.text_encoders`, `image_encoders`):

    text:  minilm | tfidf | hf:<local HF folder> | none
    image: effnet-lite0 | tv:<torchvision model>[@<weights file> | @random] | color | none

`get_encoder(spec, cfg, state_dir)` builds one; `load_encoder(state_dir)` rebuilds the one
that featurize used from its state folder (`<features>/encoders/<slug>/`: encoder.json
with spec, version and config, plus fitted arrays). Featurize and serving both go through
here, so a new item is embedded exactly as the catalogue was: the encoder applies its own
preprocessing and normalisation, and fitted state (tfidf) is JSON + .npy, never pickle.
Models load lazily on the first encode, so building an encoder (and importing this
module) stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fusionrec.features.encoder import ENCODER_JSON, Encoder, EncoderError

if TYPE_CHECKING:
    from fusionrec.config import FeaturizeConfig


def split_spec(spec: str) -> tuple[str, str]:
    """"tv:resnet50@w.pt" -> ("tv", "resnet50@w.pt"); "minilm" -> ("minilm", "")."""
    spec = spec.strip()
    if ":" in spec:
        kind, arg = spec.split(":", 1)
        return kind.strip().lower(), arg.strip()
    return spec.lower(), ""


def _factories() -> dict[str, Callable[[str, str, FeaturizeConfig], Encoder]]:
    from fusionrec.features import image, text  # light modules: heavy imports sit in their functions

    return {
        "minilm": text.MiniLMEncoder.build,
        "tfidf": text.TfidfEncoder.build,
        "hf": text.HFTextEncoder.build,
        "effnet-lite0": image.EffNetLite0Encoder.build,
        "tv": image.TorchvisionEncoder.build,
        "color": image.ColorEncoder.build,
    }


class NoneEncoder(Encoder):
    """"none": the modality is off. Encodes to (n, 0) and masks every image."""

    name = "none"

    @property
    def dim(self) -> int:
        return 0

    def _base_version(self) -> str:
        return "none"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)

    def encode_images_detailed(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        return np.zeros((len(images), 0), np.float32), np.zeros(len(images), bool), {}


NONE = "none"
TEXT_ENCODERS = ("minilm", "tfidf", "hf:<folder>", NONE)
IMAGE_ENCODERS = ("effnet-lite0", "tv:<name>[@weights]", "color", NONE)


def get_encoder(spec: str, cfg: FeaturizeConfig | None = None, state_dir: Path | str | None = None) -> Encoder:
    """Build the encoder a spec names.

    Args:
        spec: e.g. "minilm", "tfidf", "hf:/models/e5", "effnet-lite0", "tv:resnet50@w.pth", "color".
        cfg: the featurize section (normalisation, batch size, limits); defaults when None.
        state_dir: a folder written by `Encoder.save_state` (featurize writes
            `<features>/encoders/<slug>/`); needed by fitted encoders such as tfidf.

    Returns:
        An Encoder; "none" gives a NoneEncoder (dim 0) that featurize skips.
    """
    from fusionrec.config import FeaturizeConfig

    cfg = cfg or FeaturizeConfig()
    kind, arg = split_spec(spec)
    if kind == NONE:
        return NoneEncoder(spec, cfg)
    factories = _factories()
    if kind not in factories:
        raise EncoderError(
            f"unknown encoder {spec!r}; text: {', '.join(TEXT_ENCODERS)}; image: {', '.join(IMAGE_ENCODERS)}; "
            "precomputed vectors go in featurize.vector_sources as vectors:<path>"
        )
    encoder = factories[kind](spec, arg, cfg)
    if state_dir is not None:
        state = Path(state_dir)
        if not state.is_dir():
            raise EncoderError(f"{spec}: state folder {state} does not exist")
        encoder.load_state(state)
    return encoder


def load_encoder(state_dir: Path | str, **overrides: Any) -> Encoder:
    """Rebuild the encoder that wrote a state folder, with the featurize config it used.

    This is how serving embeds a new item: `load_encoder(<features or model>/encoders/minilm)`.

    Args:
        state_dir: `<features>/encoders/<slug>/` (or its copy in a model folder).
        overrides: config fields to change that do not alter outputs, e.g. num_workers=0.
    """
    from fusionrec.config import FeaturizeConfig

    info_path = Path(state_dir) / ENCODER_JSON
    if not info_path.exists():
        raise EncoderError(f"{info_path}: not found; expected a folder written by `fusionrec featurize`")
    info = json.loads(info_path.read_text())
    cfg = FeaturizeConfig(**{**info.get("config", {}), **overrides})
    return get_encoder(info["spec"], cfg, state_dir)


def encoder_modality(spec: str) -> str:
    """"text" or "image" for a spec, without building the encoder."""
    kind, _ = split_spec(spec)
    return "text" if kind in ("minilm", "tfidf", "hf") else "image"


__all__ = [  # Encoder, EncoderError and ENCODER_JSON live in encoder.py; the registry's callers meet them here
    "ENCODER_JSON", "IMAGE_ENCODERS", "NONE", "TEXT_ENCODERS", "Encoder", "EncoderError", "NoneEncoder",
    "encoder_modality", "get_encoder", "load_encoder", "split_spec",
]
