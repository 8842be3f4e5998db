"""BERT-style text encoders on ONNX Runtime: export, fuse, smooth, quantize, cache the graph.

Why: on a 2-core AVX2 machine the PyTorch int8 path spends much of its time outside the
matrix products (one Python call per op, unfused LayerNorm/GELU/attention). ONNX Runtime
runs a whole batch in one call with fused kernels, and releases the GIL while it does,
so two batches can run at once on the two cores.

The graph is built once per (weights, recipe, library versions) and reused:

1. `torch.onnx.export` of the model without its pooler (mean pooling reads
   last_hidden_state), eager attention (ORT's fusion recognises that pattern, not SDPA's),
   batch and sequence length dynamic.
2. `onnxruntime.transformers.optimizer` (model type bert): EmbedLayerNormalization,
   Attention, SkipLayerNormalization and BiasGelu kernels.
3. int8 only: SmoothQuant as in quantize.py (alpha 0.7 on CALIBRATION_TEXTS): a `Mul` by
   1/s before every MatMul / Attention and the weight rows times s; then ORT dynamic
   quantization, per output channel, 7-bit weights (`reduce_range`: the AVX2 u8 x s8
   kernel cannot overflow), activations u8 per batch. The word embeddings stay fp32.

Every step is deterministic, so featurize and serving, building the graph apart, get
the same file; a built graph is also copied into the encoder's state folder, and a state
folder that holds one is used as is (graphs.py: the cache both ONNX runtimes share).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.features import graphs
from fusionrec.features.encoder import EncoderError, file_digest
from fusionrec.features.graphs import GRAPH_FILE, copy_graph, default_graph_root
from fusionrec.features.quantize import CALIBRATION_TEXTS, SMOOTH_ALPHA, input_absmax

OPSET = 17
RECIPE = f"onnx{OPSET}-bertfused"
INT8_RECIPE = f"{RECIPE}-smooth{SMOOTH_ALPHA}f64-int8-w7a8-perchannel-fp32emb"


def recipe(int8: bool) -> str:
    """The recipe tag with the library versions that shape the graph (part of the encoder version)."""
    import onnxruntime

    return f"{INT8_RECIPE if int8 else RECIPE}-ort{onnxruntime.__version__}"


def graph_key(folder: Path, int8: bool) -> str:
    """Hash of what the graph is built from: the model's config, its weights and the recipe."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            h.update(file_digest(folder / name).encode())
    h.update(recipe(int8).encode())
    return h.hexdigest()[:16]


def cached_graph(folder: Path, int8: bool, root: Path, state_dir: Path | None = None) -> Path:
    """The graph for this model and recipe: from the state folder, the cache, or built now.

    Args:
        folder: the Hugging Face model folder.
        int8: quantize (True) or keep fp32.
        root: the graph cache (one sub-folder per graph key).
        state_dir: an encoder state folder that may hold the graph (a model's encoders/minilm).
    """
    return graphs.cached(graph_key(folder, int8), root, state_dir, lambda work: build_graph(folder, int8, work))


def build_graph(folder: Path, int8: bool, work: Path) -> dict[str, Any]:
    """Export, fuse and (int8) smooth + quantize the model in `folder` into `work/model.onnx`.

    Returns:
        what graph.json records about it (graphs.cached writes it, then renames `work` into place).
    """
    model, tokenizer, config = _torch_model(folder)
    amax: dict[str, np.ndarray] = {}
    if int8:  # before the export, which leaves tracing state behind; float64 so no last bit varies
        exact = copy.deepcopy(model).double()
        amax = {k: v.numpy() for k, v in input_absmax(exact, _calibration(exact, tokenizer)).items()}
    _export(model, tokenizer, work / "exported.onnx")
    fused = _fuse(work / "exported.onnx", config)
    if int8:
        _smooth(fused, amax, config)
        _save(fused, work / "smoothed.onnx")
        _quantize(work / "smoothed.onnx", work / GRAPH_FILE)
    else:
        _save(fused, work / GRAPH_FILE)
    for name in ("exported.onnx", "smoothed.onnx"):
        (work / name).unlink(missing_ok=True)
    return {"recipe": recipe(int8), "model": str(folder)}


def _torch_model(folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoModel, AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise EncoderError(f"{folder}: the onnx text runtime fuses BERT models; this is a "
                           f"{config.get('model_type')!r} model (set featurize.text_runtime: torch)")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    model.pooler = None  # mean pooling reads last_hidden_state
    return model, tokenizer, config


def _calibration(model: Any, tokenizer: Any) -> Callable[[], object]:
    batch = tokenizer(list(CALIBRATION_TEXTS), padding=True, return_tensors="pt")
    return lambda: model(**batch)


def _export(model: Any, tokenizer: Any, path: Path) -> None:
    import warnings

    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model  # node names start with /m/: _smooth maps them back to module names

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)

    sample = tokenizer(["a short text", "a cat"], padding=True, return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python bools in the mask code
        torch.onnx.export(LastHidden(), (sample["input_ids"], sample["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
                          opset_version=OPSET, dynamo=False)


def _fuse(path: Path, config: dict[str, Any]) -> Any:
    """The ORT transformer fusions; checks that every layer's attention fused (else int8 would miss it)."""
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=int(config["num_attention_heads"]),
                                     hidden_size=int(config["hidden_size"]), opt_level=0, use_gpu=False)
    layers = int(config["num_hidden_layers"])
    attention = sum(n.op_type == "Attention" for n in fused.model.graph.node)  # fused: an OnnxModel wrapper
    if attention != layers:
        raise EncoderError(f"onnx export: {attention} of {layers} attention blocks fused; "
                           "set featurize.text_runtime: torch")
    return fused


def _smooth(fused: Any, amax: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """Insert x * (1/s) before every weight MatMul / Attention and scale the weight rows by s (in place).

    s_j = max|x_j|^alpha / max|W_j:|^(1-alpha), as in quantize.py; the graph's output is unchanged.
    """
    from onnx import helper, numpy_helper

    graph = fused.model.graph
    weights = {t.name: t for t in graph.initializer}
    attention_layer = iter(range(int(config["num_hidden_layers"])))  # Attention nodes come in layer order
    nodes = []
    for node in graph.node:
        if node.op_type == "Attention":
            module = f"encoder.layer.{next(attention_layer)}.attention.self.query"  # Q, K, V share the input
        elif node.op_type == "MatMul" and node.input[1] in weights:
            module = node.name.removeprefix("/m/").removesuffix("/MatMul").replace("/", ".")
        else:
            nodes.append(node)
            continue
        if module not in amax:
            raise EncoderError(f"onnx export: no calibration statistics for {node.name} ({module})")
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)  # (in, out)
        s = np.maximum(amax[module], 1e-5) ** SMOOTH_ALPHA / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - SMOOTH_ALPHA)
        s = s.astype(np.float32).astype(np.float64)  # the graph holds 1/s in fp32; w * s from the same s
        weights[node.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), node.input[1]))
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), f"{node.name}/smooth_inv"))
        nodes.append(helper.make_node("Mul", [node.input[0], f"{node.name}/smooth_inv"], [f"{node.name}/smoothed"],
                                      name=f"{node.name}/smooth"))
        node.input[0] = f"{node.name}/smoothed"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _save(fused: Any, path: Path) -> None:
    fused.save_model_to_file(str(path))  # also records the com.microsoft opset of the fused kernels


def _quantize(src: Path, dst: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled = True  # its advice to pre-process is for static quantization
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"],  # embeddings stay fp32: cosine 0.9922 -> 0.9928
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().disabled = False


class OrtTextModel:
    """A built graph in an ONNX Runtime session: padded token ids -> mean-pooled vectors.

    Batches run `threads` at a time, each on one core (intra-op threads 1): a batch of 16
    texts is too small to split well across cores, and the session releases the GIL.
    """

    def __init__(self, graph: Path, threads: int, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.graph, self.threads = graph, max(1, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # a shared machine: sleep, not spin
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def embed(self, ids: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
        """Mean-pooled last hidden states of one batch of token id lists -> (B, H) float32."""
        longest = max(len(x) for x in ids)
        input_ids = np.full((len(ids), longest), pad_id, np.int64)  # (B, T)
        mask = np.zeros((len(ids), longest), np.int64)  # (B, T)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)], mask[row, : len(x)] = x, 1
        hidden = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]  # (B, T, H)
        weights = mask[..., None].astype(np.float32)  # (B, T, 1)
        return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)  # (B, H)

    def embed_batches(self, batches: list[list[list[int]]], pad_id: int) -> list[np.ndarray]:
        """`embed` over many batches, `threads` at a time; results in batch order."""
        if self.threads == 1 or len(batches) == 1:
            return [self.embed(b, pad_id) for b in batches]
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda b: self.embed(b, pad_id), batches))


__all__ = ["GRAPH_FILE", "OrtTextModel", "build_graph", "cached_graph", "copy_graph", "default_graph_root",
           "graph_key", "recipe"]
