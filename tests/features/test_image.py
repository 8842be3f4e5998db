"""Image encoders: EfficientNet-Lite0, torchvision backbones, colour histogram, bad images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.features.feature_samples import cosine

from fusionrec.config import FeaturizeConfig
from fusionrec.features.registry import EncoderError, get_encoder

CFG = FeaturizeConfig(num_workers=0, batch_size=4)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_effnet_lite0_cat_is_closer_to_cat_than_to_coffee(images: dict[str, Image.Image]) -> None:
    enc = get_encoder("effnet-lite0", CFG)
    values, mask = enc.encode_images([images["cat"], images["cat2"], images["coffee"]])
    assert values.shape == (3, 1280) and mask.all() and enc.dim == 1280
    assert cosine(values[0], values[1]) > cosine(values[0], values[2]) + 0.1
    again, _ = enc.encode_images([_jpeg(images["cat"])])  # bytes in, same vector (up to JPEG loss)
    assert cosine(again[0], values[0]) > 0.95


def test_corrupt_and_oversized_images_are_masked_with_a_reason(images: dict[str, Image.Image], tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    enc = get_encoder("color", FeaturizeConfig(max_image_pixels=100 * 100))
    good = images["red"]
    values, mask, errors = enc.encode_images_detailed([good, tmp_path / "bad.jpg", images["cat"], tmp_path / "nope.jpg"])
    assert mask.tolist() == [True, False, False, False] and np.all(values[1:] == 0)
    assert set(errors) == {1, 2, 3} and "oversized" in errors[2] and "not found" in errors[3]


def test_tv_resnet18_random_weights_and_weights_file(images: dict[str, Image.Image], tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    batch = [images["cat"], images["coffee"], images["red"]]
    rand = get_encoder("tv:resnet18@random", CFG)
    a, mask = rand.encode_images(batch)
    assert a.shape == (3, 512) and mask.all() and rand.name == "tv:resnet18"
    assert np.allclose(a, get_encoder("tv:resnet18@random", CFG).encode_images(batch)[0], atol=1e-5)
    torch.manual_seed(1)
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    from_file = get_encoder(f"tv:resnet18@{tmp_path / 'r18.pth'}", CFG)
    b, _ = from_file.encode_images(batch)
    assert b.shape == (3, 512) and not np.allclose(a, b) and from_file.version != rand.version


def test_tv_errors_are_actionable(tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    with pytest.raises(EncoderError, match="no model 'resnet9000'"):
        get_encoder("tv:resnet9000")
    with pytest.raises(EncoderError, match="not found"):
        get_encoder(f"tv:resnet18@{tmp_path / 'missing.pth'}").load()
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(EncoderError, match="does not fit resnet34"):
        get_encoder(f"tv:resnet34@{tmp_path / 'r18.pth'}").load()


def test_tv_without_weights_never_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(EncoderError, match="@random"):
        get_encoder("tv:resnet18").load()


def test_color_histogram_separates_colours(images: dict[str, Image.Image]) -> None:
    enc = get_encoder("color", CFG)
    dark_red = Image.new("RGB", (40, 40), (180, 30, 25))
    values, mask = enc.encode_images([images["red"], dark_red, images["blue"]])
    assert values.shape == (3, 128) and mask.all()
    assert cosine(values[0], values[1]) > cosine(values[0], values[2])
