"""The fast torch paths (int8 MiniLM, token-length buckets, folded BatchNorm) agree with the plain ones (onnx: test_onnx.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tests.features.feature_samples import TEXTS

from fusionrec.config import FeaturizeConfig
from fusionrec.features.cache import EmbeddingCache
from fusionrec.features.fold import fold_batchnorm
from fusionrec.features.registry import get_encoder
from fusionrec.features.text import token_length_order


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def fp32_and_int8():  # noqa: ANN201
    fp32 = get_encoder("minilm", FeaturizeConfig(text_int8=False, batch_size=64, text_runtime="torch"))
    int8 = get_encoder("minilm", FeaturizeConfig(text_int8=True, batch_size=2, text_runtime="torch"))
    return fp32, int8


def test_int8_minilm_agrees_with_fp32(fp32_and_int8) -> None:  # noqa: ANN001
    fp32, int8 = fp32_and_int8
    a, b = fp32.encode_texts(TEXTS), int8.encode_texts(TEXTS)
    assert _cos_rows(a, b).min() >= 0.99
    assert not np.allclose(a, b, atol=1e-4)  # the int8 path really ran
    sims_a, sims_b = a @ a.T, b @ b.T  # neighbours are the same items
    assert np.array_equal(np.argsort(-sims_a, axis=1)[:, 1], np.argsort(-sims_b, axis=1)[:, 1])


def test_int8_changes_the_version_and_so_the_cache_folder(tmp_path) -> None:  # noqa: ANN001
    fp32 = get_encoder("minilm", FeaturizeConfig(text_int8=False, text_runtime="torch"))
    int8 = get_encoder("minilm", FeaturizeConfig(text_int8=True, text_runtime="torch"))
    onnx = get_encoder("minilm", FeaturizeConfig(text_int8=True))
    assert len({fp32.version, int8.version, onnx.version}) == 3 and "int8" in int8.version and "onnx" in onnx.version
    folders = {EmbeddingCache(tmp_path, "minilm", e.version).folder for e in (fp32, int8, onnx)}
    assert len(folders) == 3


def test_bucketed_batches_return_rows_in_input_order(fp32_and_int8) -> None:  # noqa: ANN001
    fp32, int8 = fp32_and_int8
    for enc in (fp32, int8):
        enc.cfg = enc.cfg.model_copy(update={"batch_size": 1})  # one text per batch: its vector is exact
        alone = np.concatenate([enc.encode_texts([t]) for t in TEXTS])
        enc.cfg = enc.cfg.model_copy(update={"batch_size": 3})
        mixed = enc.encode_texts(TEXTS[::-1])[::-1]
        assert _cos_rows(alone, mixed).min() > 0.995  # row i is text i, whatever it was batched with


def test_token_length_order_is_stable() -> None:
    assert token_length_order([[1, 2, 3], [1], [4, 5], [6], []]).tolist() == [4, 1, 3, 2, 0]


class _ConvNet(torch.nn.Module):
    """conv -> BN -> ReLU, twice, and a BN registered after a conv but applied before it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)
        self.c2, self.b2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))  # (B, 3, H, W) -> (B, 8, H, W)
        return torch.relu(self.b2(self.c2(x))).mean(dim=(2, 3))  # -> (B, 8)


def _random_stats(net: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return net.eval()


def test_fold_batchnorm_keeps_the_function() -> None:
    net = _random_stats(_ConvNet())
    folded, n = fold_batchnorm(net, torch.randn(2, 3, 16, 16))
    x = torch.randn(4, 3, 16, 16)
    assert n == 2 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_fold_batchnorm_keeps_the_original_when_the_guess_is_wrong() -> None:
    class BnFirst(_ConvNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.c1(x))
            return self.c2(self.b2(self.b1(x))).mean(dim=(2, 3))  # b2 normalises c1's output, not c2's

    net = _random_stats(BnFirst())
    folded, n = fold_batchnorm(net, torch.randn(2, 3, 16, 16))
    assert folded is net and n == 0


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_effnet_with_folded_batchnorm_matches_the_plain_network(runtime: str, images: dict[str, Image.Image]) -> None:
    enc: Any = get_encoder("effnet-lite0", FeaturizeConfig(num_workers=0, batch_size=2))
    enc.onnx_export = runtime == "onnx"
    values, mask = enc.encode_images([images["cat"], images["coffee"], images["red"]])
    if runtime == "torch":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc._model.modules())
    else:  # the exported graph is the folded network
        import onnx

        ops = {n.op_type for n in onnx.load(str(enc._model.graph)).graph.node}
        assert "Conv" in ops and "BatchNormalization" not in ops
    assert mask.all()
    plain, _ = enc._build_model()
    transform = enc.transform()
    x = torch.stack([transform(images[k]) for k in ("cat", "coffee", "red")])  # (3, 3, 224, 224)
    with torch.inference_mode():
        ref = plain.eval()(x).numpy()
    assert _cos_rows(values, ref).min() > 0.9999
