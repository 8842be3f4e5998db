"""Serving fixtures: one tiny trained model per session (tfidf text + colour image encoders).

Imported by tests/serving/conftest.py and tests/test_inference.py; the model is trained
once per process (functools.cache), whichever module asks first.

The model is small and fast (a few epochs on the 150-item demo) so every serving test,
in-process or over HTTP, shares it. Tests that mutate a model copy it first.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import FeaturizeConfig, ServeConfig, TrainConfig

TOKEN = "test-token"
TINY_FEATURES = FeaturizeConfig(text_encoders=["tfidf"], image_encoders=["color"], tfidf_dim=32, num_workers=0)
TINY_TRAIN = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, epochs=4, patience=2,
                         n_layers=1, knn_k=5, batch_size=512)


def _featurize_by_hand(ingested: Path, out: Path) -> None:
    """What `run_featurize` writes, for when the features room's step is not importable."""
    from fusionrec.features.registry import get_encoder
    from fusionrec.features.store import FeatureMatrix, feature_key, save_feature, slugify, write_manifest

    items = pd.read_parquet(ingested / "items.parquet")
    entries = {}
    text = get_encoder("tfidf", TINY_FEATURES)
    texts = items["text"].fillna("").tolist()
    text.fit(texts)
    text.save_state(out / "encoders" / slugify(text.name))
    image = get_encoder("color", TINY_FEATURES)
    paths = [p if isinstance(p, str) else None for p in items["image_path"]]
    img_values, img_mask = image.encode_images([p or b"" for p in paths])
    for enc, values, mask in ((text, text.encode_texts(texts), items["has_text"].to_numpy(bool)),
                              (image, img_values, img_mask & np.array([p is not None for p in paths]))):
        key = feature_key(enc.modality, enc.name)
        files = save_feature(out, FeatureMatrix(key, enc.modality, enc.name, values, mask))
        entries[key] = {"modality": enc.modality, "encoder": enc.name, "files": files}
    write_manifest(out, {"features": entries})


@pytest.fixture(scope="session")
def features_dir(ingested_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _featurize_once(ingested_dir, tmp_path_factory.getbasetemp() / "tiny-features")


@functools.cache
def _featurize_once(ingested_dir: Path, out: Path) -> Path:
    try:
        from fusionrec.features.pipeline import run_featurize
    except ImportError:
        _featurize_by_hand(ingested_dir, out)
    else:
        run_featurize(ingested_dir, out, TINY_FEATURES)
    return out


@pytest.fixture(scope="session")
def model_dir(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    """A tiny trained model folder (read-only: copy it before changing it)."""
    return _train_once(ingested_dir, features_dir, split_dir, tmp_path_factory.getbasetemp() / "tiny-model")


@functools.cache
def _train_once(ingested_dir: Path, features_dir: Path, split_dir: Path, out: Path) -> Path:
    from fusionrec.training import run_train

    run_train(ingested_dir, features_dir, split_dir, out, TINY_TRAIN)
    return out


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ServeConfig().token_env, TOKEN)
    return TOKEN


@pytest.fixture
def engine(model_dir: Path, tmp_path: Path, token: str):
    """An InferenceEngine over the tiny model with a fresh feedback store."""
    from fusionrec.inference import InferenceEngine
    from fusionrec.monitoring.store import FeedbackStore

    eng = InferenceEngine(model_dir, ServeConfig(), FeedbackStore(tmp_path / "feedback.db"))
    yield eng
    eng.close()


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model-copy"))


@pytest.fixture
def bentoml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return home
