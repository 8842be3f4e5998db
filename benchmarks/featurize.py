"""Featurize benchmark: encoder throughput, wall time, peak memory and warm rerun on ml100k-mm.

    python -m benchmarks.featurize [--data ../shared/datasets/ml100k-mm]

Ingests ml100k-mm into a temporary folder (not timed), runs `run_featurize` with a cold
cache (minilm, tfidf, effnet-lite0, color), then again with the warm cache, and checks
the encoders against the reference features shipped with the dataset. Text is
"title. overview" (featurize.text_columns), as for the reference features, so the
neighbour-genre check is comparable (ingest's default text includes the genres, which
would leak the labels into the check). Writes benchmarks/reports/featurize.{json,md};
skips (exit 0, a note) when ml100k-mm is absent.

Variants: MiniLM and EffNet-Lite0 also run over the whole catalogue as the fp32 reference
(fp32 torch, batches of 64, BatchNorm unfolded), the previous defaults (MiniLM int8 on
torch, EffNet-Lite0 folded on torch) and the fast paths, back to back in this process. The report gives each one's
speed (wall and per CPU-second, which a busy machine distorts less), the per-item cosine
to the reference and the genre-neighbour share, and a goal table for the default.
`TRIED` lists what was measured while choosing the fast path, kept or dropped.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write_report
from fusionrec.config import FeaturizeConfig, IngestConfig
from fusionrec.data.ingest import run_ingest
from fusionrec.features.pipeline import _cpu_seconds, item_texts, load_items, run_featurize
from fusionrec.features.quality import label_matrix, neighbour_label_share
from fusionrec.features.registry import get_encoder
from fusionrec.features.store import load_features, read_manifest
from fusionrec.schema import HAS_IMAGE, IMAGE_PATH

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml100k-mm"
REFERENCE = {"text:minilm": ("text_feat_minilm.npy", 0.51), "image:effnet-lite0": ("image_feat_effnetlite0.npy", 0.44)}


# Measured while choosing the fast path (2 cores, load average 2.3-3.7 from other jobs; subsets
# of ml100k-mm: 96-256 texts, 256 posters; speeds per CPU-second, cosine vs the fp32 path).
TRIED: list[dict[str, str]] = [
    {"what": "MiniLM: batches of 16 sorted by token count (was 64 sorted by characters)", "kept": "yes",
     "numbers": "16-17 -> 23-27 texts per CPU-second; identical vectors (fp32)"},
    {"what": "MiniLM: int8 Linear layers, 7-bit weights per row, 8-bit activations, SmoothQuant alpha 0.7",
     "kept": "yes", "numbers": "23-27 -> 33-37 texts per CPU-second (batches of 16); cosine mean 0.996, min 0.988"},
    {"what": "MiniLM: PyTorch quantize_dynamic, per-tensor weights (stock)", "kept": "no",
     "numbers": "cosine mean 0.934, min 0.866: fails the 0.99 agreement"},
    {"what": "MiniLM: quantize_dynamic, per-channel weights", "kept": "no",
     "numbers": "cosine mean 0.975, min 0.946; int8 only in attention (QKV + out): 0.996 but a small speed-up"},
    {"what": "MiniLM: SmoothQuant alpha 0.5 / 0.3 / none", "kept": "no",
     "numbers": "cosine mean 0.984 / 0.814 / 0.991 (alpha 0.7: 0.996)"},
    {"what": "MiniLM: batches of 8 or 32 (token-sorted)", "kept": "no",
     "numbers": "int8: 8 -> 33-37, 32 -> 25-28 texts per CPU-second; 16 is as fast as 8 with fewer calls"},
    {"what": "MiniLM int8: torch_threads 1 vs 2", "kept": "2",
     "numbers": "op time for 128 texts 3.3 s vs 1.9 s (profile, load average 1.2)"},
    {"what": "MiniLM int8: OMP_WAIT_POLICY ACTIVE vs PASSIVE", "kept": "PASSIVE",
     "numbers": "23-38 vs 31-42 texts per CPU-second: spinning threads lose on a shared machine"},
    {"what": "MiniLM: drop the unused BERT pooler (tanh(dense(CLS)))", "kept": "yes",
     "numbers": "37 -> 36 int8 matrix products per batch (~3%); identical last_hidden_state"},
    {"what": "ONNX Runtime (fp32 or int8)", "kept": "measured below",
     "numbers": "first note: 120 texts/s in fp32 needs ~190 GFLOP/s (77 tokens x 21 MFLOP each), about the AVX2 "
                "peak of 2 cores, so only int8 can get there"},
    # ONNX Runtime 1.32 (256 ml100k-mm texts, batches of 16, load average 4-7 from other jobs; cosine vs fp32 torch)
    {"what": "MiniLM to ONNX with SDPA attention (the transformers default)", "kept": "no",
     "numbers": "ORT's BERT fusion finds 0 of 6 attention blocks in that graph; exported with eager attention: "
                "6 Attention, 12 SkipLayerNormalization, 6 BiasGelu, 1 EmbedLayerNormalization"},
    {"what": "ORT fp32, fused graph", "kept": "no (int8 below)", "numbers": "27.8 texts per CPU-second (torch fp32: 23-27)"},
    {"what": "ORT int8, stock quantize_dynamic (per-tensor weights, embeddings int8)", "kept": "no",
     "numbers": "cosine mean 0.953, min 0.897"},
    {"what": "ORT int8, per-channel weights / + 7-bit weights (reduce_range) / u8 weights", "kept": "7-bit",
     "numbers": "cosine mean 0.9908 / 0.9913 / 0.9924, min 0.980 / 0.982 / 0.983; 7-bit weights cannot overflow "
                "the AVX2 u8 x s8 kernel"},
    {"what": "ORT int8: SmoothQuant folded into the LayerNorms before the MatMuls", "kept": "no",
     "numbers": "wrong (cosine 0.00): in post-LN BERT the LayerNorm output is also the residual; a Mul by 1/s "
                "before each MatMul / Attention instead"},
    {"what": "ORT int8: SmoothQuant Muls, alpha 0.7 / 0.5", "kept": "0.7",
     "numbers": "cosine mean 0.9922 / 0.9873 (none: 0.9913); 49.9 vs 50.0 texts per CPU-second (the Muls cost "
                "nothing measurable)"},
    {"what": "ORT int8: word embeddings left fp32 (only MatMul and Attention quantized)", "kept": "yes",
     "numbers": "cosine mean 0.9922 -> 0.9928, min 0.983 -> 0.985; graph 23 -> 66 MB, same speed"},
    {"what": "ORT int8: FFN output MatMuls (after GELU) left fp32", "kept": "no",
     "numbers": "cosine mean 0.9951, min 0.992, but 41.8 vs 50 texts per CPU-second"},
    {"what": "ORT int8: batches of 8 / 16 / 32 / 64 (2 intra-op threads)", "kept": "16",
     "numbers": "43.9 / 40.7 / 36.4 / 33.6 texts per CPU-second; one thread: 8 -> 48.0, 16 -> 48.8"},
    {"what": "ORT int8: one batch on 2 intra-op threads vs 2 batches at once on 1 thread each", "kept": "2 batches",
     "numbers": "39.5-40.7 vs 48-53 texts per CPU-second (same runs): a batch of 16 splits poorly over 2 "
                "cores, and the session releases the GIL so two Python threads each keep a core busy"},
    {"what": "torch int8 (previous default), same run as the ORT numbers", "kept": "no",
     "numbers": "41.6 texts per CPU-second, cosine mean 0.9927, min 0.982"},
    {"what": "EffNet-Lite0: BatchNorm folded into the convolutions", "kept": "yes",
     "numbers": "11.3 -> 14.2 images per CPU-second (batches of 64); cosine 1.0000"},
    {"what": "EffNet-Lite0: batches of 16 (was 64)", "kept": "yes",
     "numbers": "folded: 12-13 -> 21-26 images per CPU-second (64 images x 32 x 112 x 112 floats outgrow the cache); "
                "8: 23-24, 4: 26-27 (within noise of 16)"},
    {"what": "EffNet-Lite0: decode in the main process (num_workers 0) vs 2 DataLoader workers", "kept": "no change",
     "numbers": "11.3 vs 10.6 images per CPU-second, wall 12.1 vs 12.6/s: posters are 92 x 138, so decoding "
                "is small next to the network; a worker pool has little to win"},
    {"what": "PIL draft mode (JPEG decoded at reduced size)", "kept": "no",
     "numbers": "not applicable: posters (92 x 138) are upscaled to 224 x 224, draft only helps when shrinking"},
    {"what": "torch.fx conv+BN fusion", "kept": "no", "numbers": "folds 0 of 49 BatchNorms (EfficientNet-Lite's "
                                                                "padded Conv2d subclass is a leaf to fx)"},
    # Second round (ORT 1.32, load average 1.6-4.0 from another engineer's benchmark on the same 2 cores; EffNet:
    # 256 posters decoded beforehand, batches of 16; MiniLM: 384-512 texts; per CPU-second unless said otherwise)
    {"what": "EffNet-Lite0 (torch, folded): channels-last vs NCHW", "kept": "channels-last",
     "numbers": "19.5 vs 15.1 images per CPU-second (in the code since the folding change, first measured here)"},
    {"what": "EffNet-Lite0 on ONNX Runtime: the folded fp32 net exported, ORT_ENABLE_ALL (NCHWc convolutions)",
     "kept": "yes", "numbers": "one batch on 2 intra-op threads 53.8, 2 batches at once on 1 thread each 67.5, vs "
                               "torch channels-last 19.5 (same run); cosine to torch 1.0000"},
    {"what": "EffNet-Lite0 ORT: ORT_ENABLE_EXTENDED (no NCHWc layout transform)", "kept": "no",
     "numbers": "24.5 vs 53.8 (ENABLE_ALL, 2 threads)"},
    {"what": "EffNet-Lite0 ORT: batches of 4 / 8 / 16 / 32 (1 thread)", "kept": "16",
     "numbers": "70.3 / 71.7 / 72.5 / 75.1: within noise (batch_size is shared with MiniLM, where 16 wins)"},
    {"what": "EffNet-Lite0 ORT int8, static QDQ, per-channel s8 weights, u8 activations (64 other posters to "
             "calibrate)", "kept": "no",
     "numbers": "MinMax: 110 (fp32: 75) but cosine mean 0.894, min 0.596; percentile + 7-bit weights: 112, cosine "
                "0.9635 / 0.881: the depthwise convolutions do not survive int8"},
    {"what": "EffNet-Lite0 ORT, whole catalogue: decode in 0 / 1 / 2 DataLoader workers", "kept": "2",
     "numbers": "24.7 / 49.3 / 48.3 (load 2.7-4.0); decode + bicubic resize + normalise alone: 250 per CPU-second, "
                "so in the main process it stalls the two inference threads"},
    {"what": "MiniLM int8 ORT: 2 / 3 / 4 batches at once, 1 thread each", "kept": "2",
     "numbers": "51.7 / 47.7 / 49.9 (512 texts, load 2.5-2.9): more threads than cores only take a larger share "
                "of a contended machine (4: 84.8 texts/s wall at 49.9 per CPU-second)"},
    {"what": "MiniLM: tokenizer cost (outside ORT)", "kept": "-",
     "numbers": "3,400 texts per CPU-second (mean 74.9 tokens): under 1.5% of the time, nothing to win"},
    {"what": "MiniLM int8 ORT profile (1 thread, 128 texts)", "kept": "-",
     "numbers": "DynamicQuantizeMatMul 45%, QAttention 34%, SkipLayerNormalization 9%, BiasGelu 6.5%, "
                "SmoothQuant Mul 4.2%, DynamicQuantizeLinear 0.5%: the matrix products are already int8"},
    {"what": "MiniLM: MatMulNBits (blockwise weights, accuracy_level 4 = int8 compute), hand-packed (the ORT "
             "quantizer needs onnx_ir, not installed)", "kept": "no",
     "numbers": "one 1200 x 384 x 1536 product on 1 thread: 4-bit 72, 8-bit 50 GFLOP/s vs DynamicQuantizeMatMul "
                "153, fp32 MatMul 79: no fast int8 path on AVX2 without VNNI"},
    {"what": "MiniLM: static int8 activation scales (QuantizeLinear + MatMulIntegerToFloat) instead of dynamic",
     "kept": "no (not built)",
     "numbers": "same products, ms: 384x384 2.29 vs 2.37, 384x1536 8.94 vs 8.94, 1536x384 11.25 vs 13.85: at most "
                "~6% of the graph (only the FFN output gains, whose GELU input is where a fixed per-tensor scale "
                "clips most), far from the 1.2x still missing"},
    {"what": "MiniLM: FastGelu (tanh approximation) for BiasGelu", "kept": "no",
     "numbers": "48.3 / 50.5 vs 47.5 / 51.3 (two rounds), cosine mean 0.9928 either way: no gain"},
    {"what": "MiniLM ORT session options: ENABLE_ALL / EXTENDED / BASIC / spinning on / ORT_PARALLEL", "kept": "ALL, no spin",
     "numbers": "46.1-47.0 / 40.9-51.5 / 47.5-50.9 / 45.9-50.6 / 43.9-49.2 (two rounds, load 2.9): within noise; "
                "the graph is fused when built, so no level adds kernels"},
    {"what": "MiniLM int8: Attention left fp32 (only the MatMuls int8) / fused as Q, K, V MatMuls (int8) + "
             "MultiHeadAttention (fp32) instead of QAttention", "kept": "no",
     "numbers": "three interleaved rounds of 384 texts, 1 thread, load 2.2: QAttention 48.4 / 55.6 / 45.6, fp32 "
                "Attention 45.6 / 48.2 / 46.3, MultiHeadAttention 52.6 / 49.9 / 54.3 texts per CPU-second, cosine "
                "mean 0.9930 / 0.9935 / 0.9930: within noise. Profile of the MultiHeadAttention graph: int8 products "
                "58%, the attention core alone 17%, SkipLayerNormalization 12%, BiasGelu 7%, SmoothQuant Mul 5%"},
    {"what": "MiniLM: FFN neurons pruned (fp32; per layer the lowest mean absolute GELU output x norm of the output "
             "weight column on the calibration texts)", "kept": "no",
     "numbers": "10% / 25% / 40% of the 1,536 neurons removed: cosine mean 0.936 / 0.853 / 0.746, min 0.853 / 0.664 "
                "/ 0.533 (whole catalogue, against fp32): the vectors do not survive cutting the products"},
    {"what": "MiniLM: LayerNorm outside the products (one op on 16 x 76 x 384, 1 thread)", "kept": "no (not built)",
     "numbers": "ORT SkipLayerNormalization 3.0 ms (156 M elements/s), Add + LayerNormalization 3.0, torch "
                "LayerNorm 3.2, Add alone 0.18; decomposed into ORT primitives with the row means as MatMuls by a "
                "ones vector 2.0 ms (same values to 3e-6). 12 per text: about 0.8 of 21 ms a text, 4%. With "
                "FastGelu for BiasGelu (3.0 vs 4.0 ms on 16 x 76 x 1536; no gain in the whole graph above), what "
                "the elementwise ops can give is about 6%, against the 26% still missing"},
    {"what": "MiniLM: the ceiling on these cores", "kept": "-",
     "numbers": "1.58 GFLOP of weight products per text (74.5 tokens x 10.6M multiply-adds x 2); at the 153 GFLOP/s "
                "one core reaches on a large int8 product that is 10.3 ms per text, 97 texts per CPU-second if "
                "nothing else ran; measured 47.7. 120 texts/s on 2 cores needs 60 per CPU-second: everything besides "
                "the products (about 45% of the graph, none of it larger than 17%) would have to shrink to about 25%"},
]


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (DataLoader workers), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main_mb": round(own, 1), "largest_child_mb": round(child, 1)}


def reference_parity(features_dir: Path, data: Path) -> dict[str, float]:
    """Mean and min cosine between our rows and the dataset's reference features (present rows)."""
    feats = load_features(features_dir)
    out: dict[str, float] = {}
    for key, (file, _) in REFERENCE.items():
        ref = np.load(data / "features" / file)
        ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
        fm = feats[key]
        both = fm.mask & (np.abs(ref).sum(axis=1) > 0)
        cos = np.sum(fm.values[both] * ref[both], axis=1)
        out[f"{key}.cos_mean"] = round(float(cos.mean()), 4)
        out[f"{key}.cos_median"] = round(float(np.median(cos)), 4)
    return out


def _timed(fn: Any) -> tuple[Any, float, float]:
    """fn() -> (result, wall seconds, CPU seconds of this process and its finished children)."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    out = fn()
    return out, time.perf_counter() - start, _cpu_seconds() - cpu


def _torch_effnet(cfg: FeaturizeConfig) -> Any:
    """EffNet-Lite0 on torch (BatchNorm folded, channels-last): the previous default."""
    return get_encoder("effnet-lite0", cfg.model_copy(update={"image_runtime": "torch"}))


def _plain_effnet(cfg: FeaturizeConfig) -> Any:
    """EffNet-Lite0 as it ran before BatchNorm folding (same weights, torch, channels-last)."""
    import torch

    enc = _torch_effnet(cfg)
    model, _ = enc._build_model()
    enc._model = model.eval().to(memory_format=torch.channels_last)
    return enc


def _onnx_effnet_intra_op(cfg: FeaturizeConfig) -> Any:
    """The default onnx EffNet-Lite0, but one batch at a time on intra-op threads."""
    from fusionrec.features.ort_image import OrtImageModel

    enc: Any = get_encoder("effnet-lite0", cfg)
    enc.load()
    enc._model = OrtImageModel(enc._model.graph, threads=1, intra_op_threads=cfg.torch_threads)
    return enc


def _onnx_intra_op(cfg: FeaturizeConfig) -> Any:
    """The default onnx MiniLM, but one batch at a time on intra-op threads (the alternative to 2 batches at once)."""
    from fusionrec.features.ort import OrtTextModel

    enc: Any = get_encoder("minilm", cfg)
    enc.load()
    enc._model = OrtTextModel(enc._model.graph, threads=1, intra_op_threads=cfg.torch_threads)
    return enc


TARGETS = {"text:minilm": 120.0, "image:effnet-lite0": 40.0}  # items/s on a quiet 2-core machine


def variants(cfg: FeaturizeConfig) -> dict[str, list[tuple[str, Any]]]:
    """Per encoder: (label, build) pairs; the first is the fp32 reference, the last the default."""
    ref = cfg.model_copy(update={"batch_size": 64, "text_int8": False, "text_runtime": "torch"})
    torch_int8 = cfg.model_copy(update={"text_runtime": "torch"})
    return {
        "text:minilm": [("fp32 torch, batches of 64 (reference)", lambda: get_encoder("minilm", ref)),
                        ("int8 torch, SmoothQuant, batches of 16 (previous default)",
                         lambda: get_encoder("minilm", torch_int8)),
                        ("int8 onnx, one batch on 2 intra-op threads", lambda: _onnx_intra_op(cfg)),
                        ("int8 onnx, 2 batches at once, 1 thread each (default)", lambda: get_encoder("minilm", cfg))],
        "image:effnet-lite0": [("fp32 torch, BatchNorm unfolded, batches of 64 (reference)", lambda: _plain_effnet(ref)),
                               ("torch, BatchNorm folded, channels-last, batches of 16 (previous default)",
                                lambda: _torch_effnet(cfg)),
                               ("onnx fp32, folded, one batch on 2 intra-op threads", lambda: _onnx_effnet_intra_op(cfg)),
                               ("onnx fp32, folded, 2 batches at once, 1 thread each (default)",
                                lambda: get_encoder("effnet-lite0", cfg))],
    }


def _encode_all(enc: Any, key: str, texts: list[str], paths: list[str], n_items: int,
                rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """One whole-catalogue pass -> ((items, dim) values, mask, wall s, CPU s)."""
    if key.startswith("text"):
        values, wall, cpu = _timed(lambda: enc.encode_texts(texts))
        ok = np.ones(len(values), bool)
    else:
        (values, ok), wall, cpu = _timed(lambda: enc.encode_images(paths))
    full = np.zeros((n_items, values.shape[1]), np.float32)
    mask = np.zeros(n_items, bool)
    full[rows], mask[rows] = values, ok
    return full, mask, wall, cpu


def before_after(work: Path, cfg: FeaturizeConfig) -> dict[str, Any]:
    """Reference and fast variants of MiniLM / EffNet-Lite0 over the whole catalogue, back to back."""
    items = load_items(work / "ingested")
    labels = label_matrix(items["genres"].tolist())
    texts, has_text = item_texts(items, cfg)
    has_image = items[HAS_IMAGE].fillna(False).to_numpy(bool)
    paths = [p for p, ok in zip(items[IMAGE_PATH], has_image, strict=True) if ok]
    present_texts = [t for t, ok in zip(texts, has_text, strict=True) if ok]
    out: dict[str, Any] = {}
    for key, builds in variants(cfg).items():
        rows = np.flatnonzero(has_text if key.startswith("text") else has_image)
        runs: list[dict[str, Any]] = []
        reference: tuple[np.ndarray, np.ndarray] | None = None
        for label, build in builds:
            enc = build()
            enc.load()
            full, mask, wall, cpu = _encode_all(enc, key, present_texts, paths, len(items), rows)
            reference = reference or (full, mask)
            both = reference[1] & mask
            cos = np.sum(reference[0][both] * full[both], axis=1)  # rows are L2-normalised
            runs.append({"label": label, "items_per_s": round(len(rows) / wall, 1),
                         "items_per_cpu_s": round(len(rows) / cpu, 1), "cpu_per_wall": round(cpu / wall, 2),
                         "label_share": neighbour_label_share(full, mask, labels, k=10)["share"],
                         "cos_mean": round(float(cos.mean()), 4), "cos_min": round(float(cos.min()), 4),
                         "batch_size": enc.cfg.batch_size, "version": enc.version,
                         "load_average_1m": round(os.getloadavg()[0], 2)})
        ref, default = runs[0], runs[-1]
        delta = round(default["label_share"] - ref["label_share"], 4)
        out[key] = {"runs": runs, "target_items_per_s": TARGETS[key], "label_share_delta": delta,
                    "speedup_wall": round(default["items_per_s"] / ref["items_per_s"], 2),
                    "agrees": default["cos_mean"] >= 0.99 and abs(delta) <= 0.01,
                    "met": default["items_per_s"] >= TARGETS[key] and default["cos_mean"] >= 0.99 and abs(delta) <= 0.01,
                    "threads": cfg.torch_threads}
    return out


def run(data: Path, work: Path) -> dict[str, Any]:
    """Ingest, featurize cold, featurize warm; returns the measured numbers."""
    run_ingest(data, work / "ingested", IngestConfig())
    cfg = FeaturizeConfig(text_encoders=["minilm", "tfidf"], image_encoders=["effnet-lite0", "color"],
                          text_columns=["title", "overview"], cache_dir=str(work / "cache"))
    start = time.perf_counter()
    run_featurize(work / "ingested", work / "cold", cfg)
    cold = time.perf_counter() - start
    load_before = round(os.getloadavg()[0], 2)
    compared = before_after(work, cfg)
    memory = peak_rss_mb()
    start = time.perf_counter()
    warm_metrics = run_featurize(work / "ingested", work / "warm", cfg).metrics
    warm = time.perf_counter() - start
    entries = read_manifest(work / "cold")["features"]
    names = ("dim", "present", "coverage", "encoded", "load_s", "encode_s", "encode_cpu_s", "items_per_s", "failed", "wall_s")
    encoders = {key: {name: e.get(name) for name in names}
                | {"items_per_cpu_s": round(e["encoded"] / e["encode_cpu_s"], 2) if e.get("encode_cpu_s") else None}
                | {"label_share": e["quality"]["share"], "label_share_random": e["quality"]["random"],
                   "reference_label_share": REFERENCE.get(key, (None, None))[1]}
                for key, e in entries.items()}
    return {"dataset": data.name, "items": int(warm_metrics["items"]), "config": cfg.model_dump(mode="json"),
            "cold_wall_s": round(cold, 2), "warm_wall_s": round(warm, 2),
            "warm_encoded": sum(int(v) for k, v in warm_metrics.items() if k.endswith(".encoded")),
            "peak_memory": memory, "encoders": encoders, "reference_parity": reference_parity(work / "cold", data),
            "before_after": compared, "before_after_load_average_start": load_before, "tried": TRIED}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Featurize benchmark\n\nDataset `{r['dataset']}`: {r['items']:,} items, text = title + overview, "
             "posters 92 x 138. Cold cache, then a warm rerun.\n",
             "| encoder | dim | coverage | items/s (wall) | items per CPU-second | model load s "
             "| genre-neighbour share@10 (reference / random) |",
             "|---|---|---|---|---|---|---|"]
    for key, e in r["encoders"].items():
        ref = e["reference_label_share"]
        lines.append(f"| `{key}` | {e['dim']} | {e['coverage']:.3f} | {e['items_per_s']} | {e['items_per_cpu_s']} "
                     f"| {e['load_s']} | "
                     f"{e['label_share']:.3f} ({ref if ref is not None else '-'} / {e['label_share_random']:.2f}) |")
    p = r["reference_parity"]
    lines += ["", f"- cold wall time {r['cold_wall_s']} s; warm rerun {r['warm_wall_s']} s "
                  f"({r['warm_encoded']} items encoded)",
              f"- peak memory {r['peak_memory']['main_mb']} MiB (largest DataLoader worker "
              f"{r['peak_memory']['largest_child_mb']} MiB)",
              f"- parity with the dataset's reference features (cosine, mean / median): minilm "
              f"{p['text:minilm.cos_mean']} / {p['text:minilm.cos_median']} (the reference strips the year "
              f"from titles), effnet-lite0 {p['image:effnet-lite0.cos_mean']} / {p['image:effnet-lite0.cos_median']}",
              "- images/s include JPEG decoding (DataLoader workers); model load time is reported apart. "
              "Items per CPU-second (this process + its workers) is the number that survives a busy machine: "
              "an idle 2-core machine reaches up to about twice it in wall-clock items/s.",
              "- **Shared machine**: measured on 2 CPU cores shared with other engineers' jobs running in "
              "parallel (see the load average below); on an idle machine expect higher throughput."]
    return "\n".join(lines + before_after_markdown(r))


def before_after_markdown(r: dict[str, Any]) -> list[str]:
    """The goal table, every variant measured back to back, and the list of what was tried."""
    lines = ["", "## Goal (2 cores, whole catalogue; vectors vs the fp32 reference)", "",
             "| encoder | target items/s | measured items/s (per CPU-s) | cosine per item mean / min "
             "| genre share@10 reference -> default | met |", "|---|---|---|---|---|---|"]
    for key, e in r["before_after"].items():
        ref, d = e["runs"][0], e["runs"][-1]
        verdict = "yes" if e["met"] else ("speed not met, agreement held" if e["agrees"] else "no: vectors disagree")
        lines.append(f"| `{key}` | {e['target_items_per_s']:.0f} | {d['items_per_s']} ({d['items_per_cpu_s']}) "
                     f"| {d['cos_mean']} / {d['cos_min']} | {ref['label_share']:.4f} -> {d['label_share']:.4f} "
                     f"| {verdict} |")
    lines += ["", "Measured items/s is wall clock, which other jobs on the machine lower (load average per run "
              "below); items per CPU-second is what the encoder itself costs. An idle machine runs the 2-batch "
              "default at up to 2x its per-CPU-second rate (its CPU/wall ratio shows how much of the second core "
              "it got).", "",
              "## Variants (whole catalogue, back to back, same process)", "",
              "| encoder | variant | items/s | items per CPU-s | CPU/wall | cosine mean / min | genre share@10 "
              "| load avg |", "|---|---|---|---|---|---|---|---|"]
    for key, e in r["before_after"].items():
        for run in e["runs"]:
            lines.append(f"| `{key}` | {run['label']} | {run['items_per_s']} | {run['items_per_cpu_s']} "
                         f"| {run['cpu_per_wall']} | {run['cos_mean']} / {run['cos_min']} | {run['label_share']:.4f} "
                         f"| {run['load_average_1m']} |")
    lines += ["", "## Tried", "", "| what | kept | numbers |", "|---|---|---|"]
    lines += [f"| {t['what']} | {t['kept']} | {t['numbers']} |" for t in r["tried"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not (args.data / "items.csv").exists():
        print(f"skipped: ml100k-mm not found at {args.data}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.data, Path(tmp))
    paths = write_report("featurize", result, markdown(result))
    print(markdown(result))
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
