"""Fixtures of the features tests (data built in feature_samples.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tests.features.feature_samples import sample_images, write_catalogue

from fusionrec.config import FeaturizeConfig


@pytest.fixture()
def catalogue(tmp_path: Path) -> Path:
    """A fresh tiny ingested folder (the test may modify it)."""
    return write_catalogue(tmp_path / "ingested")


@pytest.fixture(scope="session")
def images() -> dict[str, Image.Image]:
    return sample_images()


@pytest.fixture()
def fast_cfg(tmp_path: Path) -> FeaturizeConfig:
    """Only the fast encoders, a private cache, no worker processes."""
    return FeaturizeConfig(text_encoders=["tfidf"], image_encoders=["color"], num_workers=0,
                           cache_dir=str(tmp_path / "cache"), quality_k=2)
