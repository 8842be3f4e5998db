"""Text encoders: MiniLM offline, hf:<folder>, TF-IDF fitted state without pickle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tests.features.feature_samples import cosine

from fusionrec.config import FeaturizeConfig
from fusionrec.features.registry import EncoderError, NoneEncoder, encoder_modality, get_encoder
from fusionrec.features.text import minilm_folder

SENTENCES = ["A cat sleeps on the sofa.", "A kitten is napping on the couch.",
             "The central bank raised interest rates again."]


@pytest.fixture(scope="module")
def minilm():  # noqa: ANN201
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # nothing may come from the network
    return get_encoder("minilm", FeaturizeConfig())


def test_minilm_shape_determinism_and_similarity(minilm) -> None:  # noqa: ANN001
    a = minilm.encode_texts(SENTENCES)
    b = minilm.encode_texts(list(reversed(SENTENCES)))[::-1]  # order and batching do not matter
    assert a.shape == (3, 384) and a.dtype == np.float32 and minilm.dim == 384
    assert np.allclose(a, b, atol=1e-5)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert cosine(a[0], a[1]) > cosine(a[0], a[2]) + 0.3


def test_hf_folder_is_mean_pooled_like_minilm(minilm) -> None:  # noqa: ANN001
    hf = get_encoder(f"hf:{minilm_folder()}", FeaturizeConfig())
    assert hf.name == "hf:model" and hf.dim == 384
    assert np.allclose(hf.encode_texts(SENTENCES[:2]), minilm.encode_texts(SENTENCES[:2]), atol=1e-5)


def test_hf_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="no config.json"):
        get_encoder(f"hf:{tmp_path}")
    with pytest.raises(EncoderError, match="needs a folder"):
        get_encoder("hf:")


def test_tfidf_state_round_trip_without_pickle(tmp_path: Path) -> None:
    corpus = ["red apples and green pears", "green pears in a bowl", "stock markets fell sharply",
              "markets rallied after the bank news", "a bowl of red apples"]
    cfg = FeaturizeConfig(tfidf_dim=3)
    enc = get_encoder("tfidf", cfg)
    with pytest.raises(EncoderError, match="not fitted"):
        enc.encode_texts(corpus)
    enc.fit(corpus)
    enc.save_state(tmp_path / "tfidf")
    assert sorted(p.suffix for p in (tmp_path / "tfidf").iterdir()) == [".json", ".json", ".npy", ".npy"]
    again = get_encoder("tfidf", cfg, state_dir=tmp_path / "tfidf")  # how serving embeds a new item
    new = ["green apples", "bank markets"]
    assert np.array_equal(enc.encode_texts(new), again.encode_texts(new))
    assert again.version == enc.version and enc.encode_texts(corpus).shape == (5, 3)


def test_state_from_another_normalisation_is_refused(tmp_path: Path) -> None:
    enc = get_encoder("tfidf", FeaturizeConfig(tfidf_dim=2))
    enc.fit(["apple pear plum", "pear plum fig", "plum fig kiwi", "fig kiwi lime"])
    enc.save_state(tmp_path)
    with pytest.raises(EncoderError, match="was written by version"):
        get_encoder("tfidf", FeaturizeConfig(tfidf_dim=2, normalize=False), state_dir=tmp_path)


def test_registry_errors_and_none() -> None:
    with pytest.raises(EncoderError, match="unknown encoder 'bert'.*minilm"):
        get_encoder("bert")
    none = get_encoder("none")
    assert isinstance(none, NoneEncoder) and none.encode_texts(["x"]).shape == (1, 0)
    assert encoder_modality("hf:/x") == "text" and encoder_modality("tv:resnet18") == "image"
    with pytest.raises(EncoderError, match="text encoder; use encode_texts"):
        get_encoder("tfidf").encode_images([b"x"])
