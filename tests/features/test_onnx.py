"""MiniLM on ONNX Runtime: agrees with fp32 torch, the graph is cached and reused, serving embeds like featurize.

The int8 graph is built once per machine (user cache) the first time any test needs it
(about 20-50 s on 2 cores); every later run reuses it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.features.feature_samples import TEXTS, write_catalogue

from fusionrec.config import FeaturizeConfig
from fusionrec.features import ort
from fusionrec.features.pipeline import item_texts, load_items, run_featurize
from fusionrec.features.registry import get_encoder
from fusionrec.features.store import load_features
from fusionrec.features.text import minilm_folder
from fusionrec.inference.snapshot import encoder_for


@pytest.fixture(scope="module")
def onnx_minilm():  # noqa: ANN201
    enc = get_encoder("minilm", FeaturizeConfig(batch_size=2))  # the defaults: onnx, int8
    enc.load()
    return enc


def test_onnx_int8_agrees_with_fp32_torch(onnx_minilm) -> None:  # noqa: ANN001
    fp32 = get_encoder("minilm", FeaturizeConfig(text_int8=False, text_runtime="torch"))
    a, b = fp32.encode_texts(TEXTS), onnx_minilm.encode_texts(TEXTS)
    assert isinstance(onnx_minilm._model, ort.OrtTextModel) and "onnx" in onnx_minilm.version
    assert np.sum(a * b, axis=1).min() >= 0.99
    assert not np.allclose(a, b, atol=1e-4)  # the int8 graph really ran
    assert np.array_equal(np.argsort(-(a @ a.T), axis=1)[:, 1], np.argsort(-(b @ b.T), axis=1)[:, 1])


def test_rows_come_back_in_input_order_whatever_the_batching(onnx_minilm) -> None:  # noqa: ANN001
    alone = np.concatenate([onnx_minilm.encode_texts([t]) for t in TEXTS])
    batched = onnx_minilm.encode_texts(TEXTS[::-1])[::-1]  # 3 batches, run 2 at a time
    assert np.sum(alone * batched, axis=1).min() > 0.998  # int8 activation scales are per batch: not bit-equal


def test_the_graph_is_reused_from_the_cache_and_from_a_state_folder(onnx_minilm, tmp_path: Path) -> None:  # noqa: ANN001
    graph = onnx_minilm._model.graph
    built = graph.stat().st_mtime_ns
    assert ort.cached_graph(minilm_folder(), True, graph.parent.parent) == graph
    assert graph.stat().st_mtime_ns == built  # found, not rebuilt
    onnx_minilm.save_state(tmp_path / "state")  # a model's encoders/minilm carries its graph
    assert ort.cached_graph(minilm_folder(), True, tmp_path / "empty-cache", tmp_path / "state") == tmp_path / "state" / "model.onnx"
    assert not (tmp_path / "empty-cache").exists()
    (tmp_path / "state" / "graph.json").write_text('{"key": "another model"}')  # a stale graph is not used
    assert ort.cached_graph(minilm_folder(), True, graph.parent.parent, tmp_path / "state") == graph


def _seed_graph_cache(cache_dir: Path, onnx_minilm) -> None:  # noqa: ANN001
    """Put the machine's built graph where featurize with this cache_dir looks, so the test does not rebuild it."""
    shutil.copytree(onnx_minilm._model.graph.parent, cache_dir / "graphs" / ort.graph_key(minilm_folder(), True))


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_serving_embeds_a_text_as_featurize_did(runtime: str, onnx_minilm, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = FeaturizeConfig(text_encoders=["minilm"], image_encoders=["none"], text_runtime=runtime,
                          cache_dir=str(tmp_path / "cache"), num_workers=0, quality_k=2)
    _seed_graph_cache(tmp_path / "cache", onnx_minilm)
    ingested = write_catalogue(tmp_path / "ingested")
    run_featurize(ingested, tmp_path / "features", cfg)
    featurized = load_features(tmp_path / "features")["text:minilm"]
    model = SimpleNamespace(encoders={}, model_dir=tmp_path / "model")  # what encoder_for reads of a Snapshot
    shutil.copytree(tmp_path / "features" / "encoders", model.model_dir / "encoders")  # as training does
    served = encoder_for(model, "text:minilm")  # built with a default config, then the state's settings
    assert served.cfg.text_runtime == runtime
    assert (model.model_dir / "encoders" / "minilm" / "model.onnx").is_file() == (runtime == "onnx")  # no rebuild
    texts, present = item_texts(load_items(ingested), cfg)
    again = served.encode_texts([t for t, ok in zip(texts, present, strict=True) if ok])
    assert np.array_equal(again, featurized.values[present])  # same batches: the very same vectors
    one = served.encode_texts([texts[0]])[0]  # add_item embeds one text alone
    assert float(one @ featurized.values[0]) > 0.998  # alone: its own int8 activation scales
