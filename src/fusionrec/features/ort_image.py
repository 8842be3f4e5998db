"""Image backbones on ONNX Runtime: the BatchNorm-folded fp32 network, exported once and cached.

Why: on a 2-core AVX2 machine ORT's NCHWc convolution kernels (the layout transformer of
ORT_ENABLE_ALL) ran EfficientNet-Lite0 about 3x faster per CPU-second than torch with
channels-last (ml100k-mm posters, batches of 16: 54-75 vs 19.5 images per CPU-second),
with the same vectors (cosine 1.0000). Two batches at once on one intra-op thread each
beat one batch on two threads (67.5 vs 53.8), as for MiniLM: the session releases the GIL.

The graph is fp32: static int8 (QDQ, per-channel weights) ran 1.5x faster still but moved
vectors too far (cosine mean 0.89-0.96). What ORT makes of the graph at load (NCHWc,
fused activations) depends on the CPU, so the cache keeps the portable export and ORT
optimizes it each time a session opens (well under a second).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fusionrec.features.graphs import GRAPH_FILE

OPSET = 17
RECIPE = f"onnx{OPSET}-fp32-bnfolded"
INPUT, OUTPUT = "pixels", "features"
Tag = TypeVar("Tag")


def image_recipe() -> str:
    """The recipe tag with the exporter's version (torch shapes the exported graph)."""
    import torch

    return f"{RECIPE}-torch{torch.__version__.split('+')[0]}"


def image_graph_key(identity: str) -> str:
    """Hash of what the graph is built from: the encoder's identity (weights) and the recipe."""
    return hashlib.sha256(f"{identity}|{image_recipe()}".encode()).hexdigest()[:16]


def export_image_graph(model: Any, work: Path, size: int = 224) -> dict[str, Any]:
    """Export an eval-mode torch module (B, 3, size, size) -> (B, D) to `work/model.onnx`, batch dynamic.

    Returns:
        what graph.json records about it.
    """
    import warnings

    import torch

    model = model.to(memory_format=torch.contiguous_format)  # the exporter traces NCHW; ORT picks its own layout
    sample = torch.zeros(2, 3, size, size)  # (B, 3, H, W)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about the padding arithmetic
        torch.onnx.export(model, (sample,), str(work / GRAPH_FILE), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET, dynamo=False)
    return {"recipe": image_recipe(), "input_size": size}


class OrtImageModel:
    """A built image graph in an ONNX Runtime session: (B, 3, H, W) float32 -> (B, D) float32.

    Batches run `threads` at a time, each on one core (intra-op threads 1), with idle
    threads sleeping rather than spinning (a shared machine).
    """

    def __init__(self, graph: Path, threads: int, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.graph, self.threads = graph, max(1, threads)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # NCHWc: extended ran 2.2x slower
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """One batch: (B, 3, H, W) -> (B, D)."""
        return np.asarray(self.session.run(None, {INPUT: np.ascontiguousarray(pixels, np.float32)})[0])

    def map_batches(self, batches: Iterable[tuple[np.ndarray | None, Tag]]) -> Iterator[tuple[np.ndarray | None, Tag]]:
        """`run` over (pixels or None, tag) pairs, `threads` at a time; yields (features or None, tag) in order.

        At most 2 x threads batches are held at once, so a long stream of decoded images
        (a DataLoader) is not buffered whole in memory.
        """
        if self.threads == 1:
            yield from ((None if x is None else self.run(x), tag) for x, tag in batches)
            return
        with ThreadPoolExecutor(self.threads) as pool:
            pending: deque[tuple[Future[np.ndarray] | None, Tag]] = deque()
            for x, tag in batches:
                pending.append((None if x is None else pool.submit(self.run, x), tag))
                if len(pending) >= 2 * self.threads:
                    future, done = pending.popleft()
                    yield (None if future is None else future.result()), done
            while pending:
                future, done = pending.popleft()
                yield (None if future is None else future.result()), done


__all__ = ["OrtImageModel", "export_image_graph", "image_graph_key", "image_recipe"]
