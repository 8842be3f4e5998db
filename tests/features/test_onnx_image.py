"""EfficientNet-Lite0 on ONNX Runtime: same vectors as torch, graph cached and carried, batches in order.

The graph is exported once per machine (user cache, a few seconds on 2 cores) the first
time a test needs it; later runs reuse it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tests.features.feature_samples import write_catalogue

from fusionrec.config import FeaturizeConfig
from fusionrec.features import graphs
from fusionrec.features.ort_image import INPUT, OUTPUT, OrtImageModel
from fusionrec.features.pipeline import load_items, run_featurize
from fusionrec.features.registry import get_encoder
from fusionrec.features.store import load_features
from fusionrec.inference.snapshot import encoder_for
from fusionrec.schema import HAS_IMAGE, IMAGE_PATH

CFG = FeaturizeConfig(num_workers=0, batch_size=2)


@pytest.fixture(scope="module")
def onnx_effnet() -> Any:
    enc = get_encoder("effnet-lite0", CFG)  # the default runtime: onnx
    enc.load()
    return enc


def test_onnx_effnet_agrees_with_torch(onnx_effnet: Any, images: dict[str, Image.Image]) -> None:
    batch = [images["cat"], images["cat2"], images["coffee"], images["red"], images["blue"]]  # 3 batches of 2
    torch_enc: Any = get_encoder("effnet-lite0", CFG)
    torch_enc.onnx_export = False  # the torch path of the same encoder
    a, mask_a = torch_enc.encode_images(batch)
    b, mask_b = onnx_effnet.encode_images(batch)
    assert isinstance(onnx_effnet._model, OrtImageModel) and not isinstance(torch_enc._model, OrtImageModel)
    assert mask_a.all() and mask_b.all() and b.shape == (5, 1280)
    assert np.sum(a * b, axis=1).min() > 0.9999
    assert torch_enc.version == onnx_effnet.version  # same function: cached rows stay valid


def test_a_broken_image_in_a_batch_is_masked_on_onnx(onnx_effnet: Any, images: dict[str, Image.Image]) -> None:
    values, mask, errors = onnx_effnet.encode_images_detailed([b"not an image", images["cat"], b"nor this", b"!"])
    assert mask.tolist() == [False, True, False, False] and set(errors) == {0, 2, 3}
    assert np.all(values[~mask] == 0) and abs(float(np.linalg.norm(values[1])) - 1.0) < 1e-5


def test_the_graph_is_carried_by_the_state_folder(onnx_effnet: Any, images: dict[str, Image.Image],
                                                  tmp_path: Path) -> None:
    state = tmp_path / "state"
    onnx_effnet.save_state(state)  # a model's encoders/effnet-lite0 carries its graph
    assert (state / graphs.GRAPH_FILE).is_file()
    served: Any = get_encoder("effnet-lite0", CFG.model_copy(update={"cache_dir": str(tmp_path / "empty")}), state)
    served.load()
    assert served._model.graph == state / graphs.GRAPH_FILE and not (tmp_path / "empty").exists()
    one, _ = served.encode_images([images["cat"]])  # add_item embeds one image alone
    assert float(one[0] @ onnx_effnet.encode_images([images["cat"]])[0][0]) > 0.9999


def test_a_stale_graph_in_the_state_folder_is_not_used(onnx_effnet: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    onnx_effnet.save_state(state)
    (state / graphs.INFO_FILE).write_text('{"key": "another network"}')
    cache = tmp_path / "cache"
    shutil.copytree(onnx_effnet._model.graph.parent, cache / "graphs" / onnx_effnet._model.graph.parent.name)
    served: Any = get_encoder("effnet-lite0", CFG.model_copy(update={"cache_dir": str(cache)}), state)
    served.load()
    assert served._model.graph == cache / "graphs" / onnx_effnet._model.graph.parent.name / graphs.GRAPH_FILE


def _mean_graph(path: Path) -> Path:
    """A tiny graph (B, 3, H, W) -> (B, 3): the mean over pixels."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", [INPUT], [OUTPUT], axes=[2, 3], keepdims=0)
    graph = helper.make_graph([node], "mean", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["b", 3, 4, 4])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["b", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_map_batches_keeps_order_and_reads_ahead_only_a_little(threads: int, tmp_path: Path) -> None:
    model = OrtImageModel(_mean_graph(tmp_path / "mean.onnx"), threads)
    consumed: list[int] = []

    def stream() -> Any:
        for i in range(12):
            consumed.append(i)
            yield (None if i % 5 == 3 else np.full((i % 3 + 1, 3, 4, 4), float(i), np.float32)), i

    seen = []
    for out, tag in model.map_batches(stream()):
        assert len(consumed) <= tag + 1 + 2 * threads  # a DataLoader is not drained into memory
        assert (out is None) == (tag % 5 == 3)
        if out is not None:
            assert out.shape == (tag % 3 + 1, 3) and np.all(out == tag)
        seen.append(tag)
    assert seen == list(range(12))


def test_serving_embeds_an_image_as_featurize_did(onnx_effnet: Any, tmp_path: Path) -> None:
    cfg = FeaturizeConfig(text_encoders=["none"], image_encoders=["effnet-lite0"], cache_dir=str(tmp_path / "cache"),
                          num_workers=0, quality_k=2)
    built = onnx_effnet._model.graph.parent
    shutil.copytree(built, tmp_path / "cache" / "graphs" / built.name)  # featurize finds it, does not re-export
    ingested = write_catalogue(tmp_path / "ingested")
    run_featurize(ingested, tmp_path / "features", cfg)
    featurized = load_features(tmp_path / "features")["image:effnet-lite0"]
    model = SimpleNamespace(encoders={}, model_dir=tmp_path / "model")  # what encoder_for reads of a Snapshot
    shutil.copytree(tmp_path / "features" / "encoders", model.model_dir / "encoders")  # as training does
    served = encoder_for(model, "image:effnet-lite0")  # built with a default config, then the state
    state_graph = model.model_dir / "encoders" / "effnet-lite0" / graphs.GRAPH_FILE
    items = load_items(ingested)
    row = int(items[HAS_IMAGE].fillna(False).to_numpy(bool).argmax())
    one, ok = served.encode_images([Image.open(items[IMAGE_PATH].iloc[row]).convert("RGB")])  # add_item: a PIL image
    assert served._model.graph == state_graph and ok.all()
    assert float(one[0] @ featurized.values[row]) > 0.9999
