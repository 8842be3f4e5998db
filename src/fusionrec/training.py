"""Training: the fit loop with early stopping, the EASE blend, `run_train`.

`train(data, cfg, callback)` knows nothing of optuna: the AutoML search passes a
callback that reports each epoch's validation metrics and may raise to prune. The data it
reads is a `fusionrec.data.train_data.TrainData`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from fusionrec import schema
from fusionrec.config import TrainConfig
from fusionrec.data.train_data import TrainData, valid_sample
from fusionrec.io import StepResult

if TYPE_CHECKING:
    from fusionrec.models.network import FusionNet
    from fusionrec.models.objective import Batch
    from fusionrec.models.recommender import Recommender

log = logging.getLogger(__name__)
Callback = Callable[[int, dict[str, float]], None]
EVAL_KS = (10, 20)


@dataclass
class TrainResult:
    recommender: Recommender
    best_epoch: int
    valid_metrics: dict[str, float]
    history: list[dict[str, float]]
    seconds: float = 0.0


def select_features(data: TrainData, cfg: TrainConfig) -> list[str]:
    """Feature keys the config asks for, checked against the features folder."""
    wanted = [f"text:{cfg.text_encoder}" if cfg.text_encoder != "none" else "",
              f"image:{cfg.image_encoder}" if cfg.image_encoder != "none" else ""]
    wanted += [m if ":" in m else f"vectors:{m}" for m in cfg.extra_modalities]
    keys = [k for k in wanted if k]
    missing = [k for k in keys if k not in data.features]
    if missing:
        raise ValueError(
            f"train config asks for features {missing}, but the features folder has "
            f"{sorted(data.features) or 'none'}; featurize with those encoders or set train.text_encoder / "
            "train.image_encoder to one that exists (or 'none')"
        )
    return keys


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # Adam's tiny second moments as denormals slow the CPU several-fold


def build_model(data: TrainData, cfg: TrainConfig, keys: list[str], context_dim: int) -> FusionNet:
    """The FusionNet for this data: features, graphs (LightGCN, kNN) and trained-item mask."""
    from fusionrec.models.graph import knn_graph, normalized_adjacency
    from fusionrec.models.network import FusionNet

    train = data.train_matrix
    feats = [data.features[k][0] for k in keys]
    mask = np.stack([data.features[k][1].astype(bool) for k in keys], 1) if keys else np.zeros((data.n_items, 0), bool)
    trained = np.asarray(train.sum(axis=0)).ravel() > 0
    # recent (and explored / organic) interactions weigh more in the graph as in the loss
    weighted = data.is_weighted(cfg.recency_half_life, cfg.origin_weights)
    adj = (normalized_adjacency(data.recency_matrix(cfg.recency_half_life, cfg.origin_weights), weighted)
           if cfg.n_layers > 0 else None)
    knn = None
    if cfg.knn_k > 0 and cfg.knn_weight > 0 and keys:
        knn = knn_graph([data.features[k] for k in keys], cfg.knn_k)
    return FusionNet(cfg, data.n_users, feats, mask, trained, context_dim, adj, knn)


def neural_scorer(model: FusionNet) -> Callable[[np.ndarray], np.ndarray]:
    """A score function user_idx (b,) -> (b, n_items) of the current model (cosine, untrained at -inf)."""
    import torch

    model.eval()
    with torch.no_grad():
        out = model(train=False)
        users = model.user_head(out["users"]).numpy()  # (U, D)
        items = out["items"].numpy()  # (n, D)
    model.train()
    untrained = ~model.trained.numpy()

    def score(user_idx: np.ndarray) -> np.ndarray:
        s = users[user_idx] @ items.T  # (b, D) x (D, n) -> (b, n)
        s[:, untrained] = -np.inf
        return s

    return score


def user_rows(cfg: TrainConfig, ctx: np.ndarray | None) -> bool:
    """Full softmax without per-interaction context trains on user rows (see objective.py)."""
    return cfg.loss == "softmax" and ctx is None


def iter_batches(data: TrainData, cfg: TrainConfig, ctx: np.ndarray | None, train_m: sp.csr_matrix,
                 rng: np.random.Generator) -> Iterator[Batch]:
    """Shuffled batches: users with (weighted) multi-hot targets, or interactions (+ context)."""
    import torch

    from fusionrec.models.objective import Batch

    if user_rows(cfg, ctx):
        users = rng.permutation(np.flatnonzero(np.diff(train_m.indptr) > 0))
        for start in range(0, len(users), cfg.batch_size):
            b = users[start : start + cfg.batch_size]
            targets = torch.from_numpy(train_m[b].toarray())  # (B, n) multi-hot
            yield Batch(users=torch.from_numpy(b.astype(np.int64)), targets=targets)
        return
    users = data.train[schema.USER_IDX].to_numpy(np.int64)
    items = data.train[schema.ITEM_IDX].to_numpy(np.int64)
    order = rng.permutation(len(users))
    for start in range(0, len(order), cfg.batch_size):
        b = order[start : start + cfg.batch_size]
        yield Batch(users=torch.from_numpy(users[b]), pos=torch.from_numpy(items[b]),
                    context=torch.from_numpy(ctx[b]) if ctx is not None else None)


def batches_per_step(n_rows: int, cfg: TrainConfig) -> int:
    """Consecutive batches that share an optimizer step: enough to keep an epoch within cfg.max_steps_per_epoch."""
    n_batches = -(-n_rows // cfg.batch_size)
    return max(1, -(-n_batches // cfg.max_steps_per_epoch)) if cfg.max_steps_per_epoch > 0 else 1


def run_epoch(model: FusionNet, opt: Any, batches: Iterator[Batch], gen: Any, group: int = 1) -> dict[str, float]:
    """One pass over the batches, `group` batches per optimizer step; mean loss parts.

    The model's forward pass (the graph over every user and item, as costly for one user as for
    many) runs once per step. With group > 1 each batch's loss is backpropagated in turn to
    detached copies of that pass's outputs, and their summed gradient goes back through the pass
    once: the step's loss is the batches' losses weighted by what each averages (positives or
    interactions), the loss of one batch `group` times larger without its (B, n_items) logits
    in memory at once.
    """
    sums: dict[str, float] = {}
    n_batches = 0

    def add(parts: dict[str, float]) -> None:
        nonlocal n_batches
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n_batches += 1

    step: list[Batch] = []
    for batch in batches:
        step.append(batch)
        if len(step) < group:
            continue
        _step(model, opt, step, gen, add)
        step = []
    if step:
        _step(model, opt, step, gen, add)
    return {f"loss_{k}": v / max(n_batches, 1) for k, v in sums.items()}


def _step(model: FusionNet, opt: Any, step: list[Batch], gen: Any, add: Callable[[dict[str, float]], None]) -> None:
    """One optimizer step over the batches in `step` (see run_epoch)."""
    import torch

    from fusionrec.models.objective import batch_loss, batch_weight

    opt.zero_grad()
    if len(step) == 1:
        loss, parts = batch_loss(model, step[0], gen)
        loss.backward()
        add(parts)
    else:
        out = model(train=True)
        shared = {k: v.detach().requires_grad_() if v.requires_grad else v for k, v in out.items()}
        total = sum(batch_weight(b) for b in step) or 1.0
        for b in step:
            loss, parts = batch_loss(model, b, gen, out=shared)
            (loss * (batch_weight(b) / total)).backward()
            add(parts)
        grads = [(out[k], v.grad) for k, v in shared.items() if v.grad is not None]
        if grads:
            torch.autograd.backward([t for t, _ in grads], [g for _, g in grads])
    opt.step()


def fit(data: TrainData, cfg: TrainConfig, callback: Callback | None = None
        ) -> tuple[FusionNet, int, list[dict[str, float]], dict[str, Any]]:
    """The fit loop: epochs, validation NDCG@20, early stopping, best weights restored."""
    import torch

    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.models.context import context_dim, encode_context, fit_context

    seed_everything(cfg.seed)
    keys = select_features(data, cfg)
    spec = fit_context(data.train, cfg.context_columns) if cfg.context_columns else []
    ctx = encode_context(spec, data.train) if spec else None
    model = build_model(data, cfg, keys, context_dim(spec))
    cold = [p for n, p in model.named_parameters() if n.startswith("cold.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("cold.")]
    groups: list[dict[str, Any]] = [{"params": rest}, {"params": cold, "weight_decay": cfg.cold_weight_decay}]
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    train_m = data.train_matrix
    target_m = data.recency_matrix(cfg.recency_half_life, cfg.origin_weights)  # the softmax targets (binary when off)
    valid = valid_sample(data.valid, cfg)
    n_rows = int((np.diff(target_m.indptr) > 0).sum()) if user_rows(cfg, ctx) else len(data.train)
    group = batches_per_step(n_rows, cfg)
    if group > 1:
        log.info("%d batches of %d rows per optimizer step (train.max_steps_per_epoch %d)", group, cfg.batch_size,
                 cfg.max_steps_per_epoch)
    best, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = iter_batches(data, cfg, ctx, target_m, rng)
        row: dict[str, float] = {"epoch": epoch, **run_epoch(model, opt, batches, gen, group)}
        metrics = evaluate_scores(neural_scorer(model), train_m, valid, ks=EVAL_KS)
        row.update({k: float(v) for k, v in metrics.items() if "@" in k}, seconds=time.perf_counter() - t0)
        history.append(row)
        log.info("epoch %d  loss %.4f  valid ndcg@20 %.4f  recall@20 %.4f  (%.1fs)", epoch,
                 row.get("loss_main", 0.0), row["ndcg@20"], row["recall@20"], row["seconds"])
        if callback is not None:
            callback(epoch, {k: v for k, v in row.items() if k != "epoch"})
        if row["ndcg@20"] > best:
            best, best_epoch = row["ndcg@20"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            log.info("early stop: no validation NDCG@20 gain for %d epochs (best %d)", cfg.patience, best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, best_epoch, history, {"keys": keys, "context_spec": spec}


AUTO_THREADS_MIN_ROWS = 1_000_000  # train.threads 0: fewer training interactions train on one thread


def training_threads(cfg: TrainConfig, n_rows: int) -> int:
    """Torch threads for a training on n_rows interactions: train.threads, or with 0 the automatic choice.

    Automatic: one thread below AUTO_THREADS_MIN_ROWS, where a training takes seconds to minutes
    and one thread keeps its result independent of the machine's core count (more threads sum
    in another order: on the demo data early stopping ended 3 epochs sooner on 2), else every
    CPU the process may use (`fusionrec.cpus.usable_cpus`: its affinity, capped by a pod's CPU
    limit and by a search worker's share; torch's own default counts the node's cores).
    """
    from fusionrec.cpus import usable_cpus

    if cfg.threads > 0:
        return cfg.threads
    return 1 if n_rows < AUTO_THREADS_MIN_ROWS else usable_cpus()


def train(data: TrainData, cfg: TrainConfig, callback: Callback | None = None) -> TrainResult:
    """Choose recency weighting, train the model, choose the EASE blend on validation, package a Recommender.

    Args:
        data: the training data (see `TrainData.from_dirs`).
        cfg: the train config.
        callback: called as callback(epoch, metrics) after each epoch's validation;
            an exception it raises (e.g. optuna.TrialPruned) propagates.
    """
    import torch

    from fusionrec.models.assemble import assemble_recommender
    from fusionrec.models.recency import choose_recency

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads(cfg, len(data.train)))
    try:
        half_life, probe = choose_recency(data, cfg)  # recency weighting: validation decides (models/recency.py)
        cfg = cfg.model_copy(update={"recency_half_life": half_life})
        model, best_epoch, history, info = fit(data, cfg, callback)
        rec, valid_metrics = assemble_recommender(model, data, cfg, info, best_epoch)
        if probe:
            rec.meta["recency_probe"] = probe
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    rec.meta["train_seconds"] = seconds
    return TrainResult(rec, best_epoch, valid_metrics, history, seconds)


def run_train(ingested_dir: Path, features_dir: Path, split_dir: Path, out_dir: Path, cfg: TrainConfig
              ) -> StepResult:
    """The `train` step: read the folders, train, evaluate on test, write the model folder."""
    import shutil

    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.io import write_json

    data = TrainData.from_dirs(ingested_dir, features_dir, split_dir)
    result = train(data, cfg)
    rec = result.recommender
    metrics: dict[str, float | int] = {f"valid_{k}": v for k, v in result.valid_metrics.items()}
    if data.test is not None and data.test.nnz:
        test = evaluate_scores(rec.score_users, data.train_matrix, data.test, ks=EVAL_KS, exclude=[data.valid])
        rec.meta["test_metrics"] = {k: float(v) for k, v in test.items() if "@" in k}
        metrics.update({f"test_{k}": v for k, v in rec.meta["test_metrics"].items()})
    from fusionrec.features.store import read_manifest

    entries = read_manifest(features_dir)["features"]  # serving checks a new item's vectors the same way
    rec.meta["vectors"] = {key: {"normalization": entries[key].get("normalization", "l2")}
                           for key in rec.modalities if key.startswith("vectors:") and key in entries}
    out_dir = Path(out_dir)
    rec.save(out_dir)
    from fusionrec.inference.ann import build_for_model  # large catalogues: approximate top-k in <model>/ann/

    ann = build_for_model(rec, out_dir, cfg)
    if (Path(features_dir) / "encoders").is_dir():  # fitted encoder state that serving needs
        shutil.copytree(Path(features_dir) / "encoders", out_dir / "encoders", dirs_exist_ok=True)
    write_json(out_dir / "history.json", result.history)
    metrics.update(best_epoch=result.best_epoch, train_seconds=round(result.seconds, 2),
                   ease_blend=rec.ease_blend)
    if ann:
        metrics.update(ann_build_seconds=ann["build_seconds"])
    return StepResult(metrics=metrics, outputs={"model": out_dir})
