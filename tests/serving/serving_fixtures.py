"""Serving fixtures: one tiny trained model per session (tfidf text + colour image encoders).

Registered for every suite by tests/conftest.py (pytest_plugins); session-scoped, so the
features and the model are built once per test run, whichever test asks first.

The model is small and fast (a few epochs on the 150-item demo) so every serving test,
in-process or over HTTP, shares it. Tests that mutate a model copy it first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fusionrec.config import FeaturizeConfig, ServeConfig, TrainConfig

TOKEN = "test-token"
TINY_FEATURES = FeaturizeConfig(text_encoders=["tfidf"], image_encoders=["color"], tfidf_dim=32, num_workers=0)
TINY_TRAIN = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, epochs=4, patience=2,
                         n_layers=1, knn_k=5, batch_size=512)


@pytest.fixture(scope="session")
def features_dir(ingested_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo featurized with cheap encoders (TF-IDF text, colour histograms); read-only."""
    from fusionrec.features.pipeline import run_featurize

    out = tmp_path_factory.getbasetemp() / "tiny-features"
    run_featurize(ingested_dir, out, TINY_FEATURES)
    return out


@pytest.fixture(scope="session")
def model_dir(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    """A tiny trained model folder (read-only: copy it before changing it)."""
    from fusionrec.training import run_train

    out = tmp_path_factory.getbasetemp() / "tiny-model"
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


def versioned_copy(model_dir: Path, out: Path, version: str) -> Path:
    """A copy of the model that reports another version (what a retraining promotes; it also
    publishes under its own name, which holds the version)."""
    copy = Path(shutil.copytree(model_dir, out))
    config = json.loads((copy / "config.json").read_text())
    config["meta"]["version"] = version
    (copy / "config.json").write_text(json.dumps(config))
    return copy
