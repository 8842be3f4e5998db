"""Scale benchmark: the default pipeline on a synthetic catalogue of 200,000 items and 10M interactions.

    python -m benchmarks.scale [--items 200000] [--interactions 10000000] [--epochs 2]
                               [--max-batches N] [--threads N] [--keep-data] [--work work/bench/scale]
                               [--max-rss-gib 20]
                               [--quality-seeds 2026,2027,2028]
    python -m benchmarks.scale --evaluate [--rank-users N]

- a synthetic catalogue: items in latent topics with power-law popularity inside each topic,
  users with tastes over a few topics (plus popularity draws), precomputed item vectors that
  are noisy views of the topic (the `vectors:` featurize source; no text or image encoder);
- ingest, split (random-811), featurize and train (default TrainConfig, the vectors as the
  only modality, a few epochs) each run in a child process: wall time and peak RSS of the
  child and its children, sampled every 0.2 s; train is split into its parts (graphs,
  item-item component, each epoch, blend choice) by the times the child records;
- a stage whose process tree passes --max-rss-gib is stopped and reported as not fitting;
- `--threads N` trains with train.threads N (0: automatic, the default) instead of the default config's;
- `--max-batches N` cuts each epoch to its first N batches (the report says so); `--keep-data`
  keeps the catalogue and the finished ingest / split / featurize of the last run in --work and
  trains again;
- `--quality-seeds`: on ml100k-mm (random-811), the exact EASE against the sparse EASE
  (forced) on the same trained network per seed, EASE alone and blended, test metrics;
- `--evaluate` runs the evaluate step on the model --work holds; with `--rank-users N` only the
  model's full ranking over its first N test users is timed (no baselines).
Writes benchmarks/reports/scale.{json,md} (sections not rerun are kept from the last report).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import REPORTS, write_report

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "split", "featurize", "train")
log = logging.getLogger("benchmarks.scale")


# --- the synthetic catalogue ---------------------------------------------------------------
def generate(root: Path, n_items: int, n_interactions: int, topics: int = 512, dim: int = 32,
             seed: int = 0) -> dict[str, Any]:
    """Write items.parquet, interactions.parquet and vectors.npy (+ ids) under root.

    Each item belongs to one topic and has a Zipf popularity inside it; each user likes three
    topics (Dirichlet weights) and makes a heavy-tailed number of interactions (mean
    n_interactions / users), 85% from their topics and 15% by global popularity. Vectors are
    the topic's direction plus noise, so content carries the taste signal.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n_users = max(10, n_interactions // 100)
    topic = rng.integers(0, topics, n_items)  # (n,)
    pop = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.9  # Zipf-like, random ranks
    order = np.argsort(topic, kind="stable")
    starts = np.searchsorted(topic[order], np.arange(topics + 1))  # topic t: order[starts[t]:starts[t+1]]
    cdf_in_topic = np.zeros(n_items)
    for t in range(topics):
        w = pop[order[starts[t] : starts[t + 1]]]
        cdf_in_topic[starts[t] : starts[t + 1]] = np.cumsum(w) / w.sum()
    global_cdf = np.cumsum(pop) / pop.sum()

    activity = np.maximum(3, rng.pareto(2.0, n_users) + 1.0)
    likes = rng.integers(0, topics, (n_users, 3))
    weights = np.cumsum(rng.dirichlet(np.ones(3), n_users), axis=1)
    frame = pd.DataFrame({"u": np.zeros(0, np.int64), "i": np.zeros(0, np.int64)})
    want = int(n_interactions * 1.15)
    for _ in range(8):  # duplicates are dropped: draw again until there are enough
        counts = np.round(activity * want / activity.sum()).astype(np.int64)
        users = np.repeat(np.arange(n_users), counts)  # (m,)
        pick = (rng.random(len(users))[:, None] > weights[users]).sum(1).clip(0, 2)  # (m,) which liked topic
        t = likes[users, pick]
        pos = starts[t] + np.minimum(_search_in_topic(cdf_in_topic, starts, t, rng.random(len(users))),
                                     starts[t + 1] - starts[t] - 1)
        items = order[pos]
        popular = rng.random(len(users)) < 0.15
        items[popular] = np.minimum(np.searchsorted(global_cdf, rng.random(int(popular.sum()))), n_items - 1)
        frame = pd.concat([frame, pd.DataFrame({"u": users, "i": items})]).drop_duplicates()
        if len(frame) >= n_interactions:
            break
        want = int((n_interactions - len(frame)) * 1.5)
    frame = frame.iloc[np.sort(rng.permutation(len(frame))[:n_interactions])].sort_values("u", kind="stable")
    ts = 1_700_000_000 + rng.integers(0, 180 * 86400, len(frame))
    pd.DataFrame({"user_id": "u" + frame["u"].astype(str), "item_id": "i" + frame["i"].astype(str),
                  "timestamp": ts}).to_parquet(root / "interactions.parquet", index=False)
    ids = np.char.add("i", np.arange(n_items).astype(str))
    pd.DataFrame({"item_id": ids}).to_parquet(root / "items.parquet", index=False)
    directions = rng.normal(size=(topics, dim))
    vectors = directions[topic] + 0.8 * rng.normal(size=(n_items, dim))  # (n, dim)
    vec_dir = root.parent / "vectors"
    vec_dir.mkdir(parents=True, exist_ok=True)
    np.save(vec_dir / "content.npy", vectors.astype(np.float32))
    (vec_dir / "content.ids.txt").write_text("\n".join(ids.tolist()) + "\n")
    return {"items": n_items, "users": int(frame["u"].nunique()), "interactions": len(frame),
            "topics": topics, "vector_dim": dim, "vectors": str(vec_dir / "content.npy")}


def _search_in_topic(cdf: np.ndarray, starts: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Position inside topic t[j] of the first item whose in-topic CDF reaches u[j] (grouped by topic)."""
    out = np.zeros(len(t), dtype=np.int64)
    by_topic = np.argsort(t, kind="stable")
    bounds = np.searchsorted(t[by_topic], np.arange(len(starts)))
    for k in range(len(starts) - 1):
        rows = by_topic[bounds[k] : bounds[k + 1]]
        if len(rows):
            out[rows] = np.searchsorted(cdf[starts[k] : starts[k + 1]], u[rows])
    return out


# --- stages in child processes -------------------------------------------------------------
class _Marks:
    """Part start/stop times the train child records (wall clock, for the parent's RSS samples)."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def wrap(self, module: Any, name: str, label: str) -> None:
        fn = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.parts.append({"part": label, "start": t0, "stop": time.time()})

        setattr(module, name, timed)


def run_stage(stage: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One stage in this (child) process; returns its metrics and, for train, its timed parts."""
    from fusionrec.config import FeaturizeConfig, IngestConfig, SplitConfig, TrainConfig

    d = {k: work / k for k in ("data", "ingested", "split", "features", "model")}
    if stage == "ingest":
        from fusionrec.data.ingest import run_ingest

        return {"metrics": run_ingest(d["data"], d["ingested"], IngestConfig(context_columns=[])).metrics}
    if stage == "split":
        from fusionrec.data.splits import run_split

        return {"metrics": run_split(d["ingested"], d["split"], SplitConfig(protocol="random-811")).metrics}
    if stage == "featurize":
        from fusionrec.features.pipeline import run_featurize

        cfg = FeaturizeConfig(text_encoders=["none"], image_encoders=["none"],
                              vector_sources=[f"vectors:{work / 'vectors' / 'content.npy'}"],
                              cache_dir=str(work / "cache"))
        return {"metrics": run_featurize(d["ingested"], d["features"], cfg).metrics}
    if stage == "evaluate":
        return _evaluate_stage(d, work, args)
    import fusionrec.models.assemble as assemble
    import fusionrec.models.ease as ease
    import fusionrec.models.graph as graph
    import fusionrec.models.recency as recency
    import fusionrec.training as training
    from fusionrec.data.train_data import TrainData

    full = training.iter_batches
    counts: list[int] = []  # batches per epoch

    def counted_batches(*a: Any, **kw: Any) -> Any:
        counts.append(0)
        for batch in full(*a, **kw):
            if 0 < args.max_batches <= counts[-1]:  # a bounded epoch: its first max_batches batches
                return
            counts[-1] += 1
            yield batch

    training.iter_batches = counted_batches  # type: ignore[assignment]
    marks = _Marks()
    marks.wrap(training, "run_epoch", "batches")
    marks.wrap(graph, "normalized_adjacency", "graph: user-item adjacency")
    marks.wrap(graph, "knn_graph", "graph: item kNN over content")
    marks.wrap(recency, "choose_recency", "recency probe (EASE per half-life)")
    marks.wrap(ease, "item_item_arrays", "item-item component (EASE)")
    marks.wrap(assemble, "choose_blend", "blend weight on validation")
    t0 = time.time()
    data = TrainData.from_dirs(d["ingested"], d["features"], d["split"])
    marks.parts.append({"part": "load data", "start": t0, "stop": time.time()})
    cfg = TrainConfig(text_encoder="none", image_encoder="none", extra_modalities=["content"], epochs=args.epochs,
                      patience=args.epochs, **({"batch_size": args.batch_size} if args.batch_size else {}),
                      **({"threads": args.threads} if args.threads >= 0 else {}))
    epoch_ends: list[float] = []
    result = training.train(data, cfg, callback=lambda epoch, row: epoch_ends.append(time.time()))
    batch_parts = [p for p in marks.parts if p["part"] == "batches"]
    marks.parts = [p for p in marks.parts if p["part"] != "batches"]
    for e, row in enumerate(result.history):  # an epoch: its batches and its validation
        marks.parts.append({"part": f"epoch {e + 1}", "start": epoch_ends[e] - row["seconds"], "stop": epoch_ends[e],
                            "valid_ndcg@20": row["ndcg@20"]})
        b = batch_parts[e]
        marks.parts.append({"part": f"epoch {e + 1}: {counts[e]} batches", "start": b["start"], "stop": b["stop"],
                            "batches": counts[e], "batch_s": (b["stop"] - b["start"]) / max(counts[e], 1)})
    rec = result.recommender
    t1 = time.time()
    rec.save(d["model"])
    marks.parts.append({"part": "save model", "start": t1, "stop": time.time()})
    settings = {k: getattr(cfg, k) for k in ("ease_max_items", "ease_head_items", "ease_topk", "valid_max_users",
                                               "knn_k", "n_layers", "dim", "batch_size", "max_steps_per_epoch",
                                               "threads")}
    settings["blend_max_users"] = assemble.BLEND_MAX_USERS
    return {"metrics": {"train_seconds": round(result.seconds, 1), "ease_blend": rec.ease_blend, "settings": settings,
                        "valid": result.valid_metrics, "ease_nnz": int(len(rec.arrays.get("ease_data", []))),
                        "model_mib": round(sum(f.stat().st_size for f in d["model"].iterdir()) / 2**20, 1)},
            "parts": marks.parts}


def _evaluate_stage(d: dict[str, Path], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`run_evaluate` on the trained model with the default baselines (trained ones under the budget)."""
    if args.rank_users:
        return _rank_stage(d, args.rank_users)
    import fusionrec.evaluation.evaluator as evaluator
    import fusionrec.evaluation.report as report
    from fusionrec.config import EvaluateConfig

    marks = _Marks()
    marks.wrap(evaluator, "load_holdout", "load the holdout")
    marks.wrap(evaluator, "fit_baselines", "fit the baselines")
    marks.wrap(evaluator, "evaluate_all", "rank every item for every test user, each model")
    marks.wrap(report, "write_reports", "reports and plots")
    cfg = EvaluateConfig(baseline_budget_s=args.eval_budget_s)
    evaluator.run_evaluate(d["ingested"], d["features"], d["split"], d["model"], work / "evaluation", cfg)
    run = json.loads((work / "evaluation" / "evaluation.json").read_text())
    metrics = json.loads((work / "evaluation" / "metrics.json").read_text())
    models = {"fusionrec": metrics.get("model", {}), **metrics.get("baselines", {})}
    return {"metrics": {"baselines": cfg.baselines, "budget_s": cfg.baseline_budget_s, "n_users": run["n_users"],
                        "fit_seconds": run["fit_seconds"], "baseline_training": run["baseline_training"],
                        "test_ndcg@20": {n: m.get("test", {}).get("ndcg@20") for n, m in models.items()}},
            "parts": marks.parts}


def _rank_stage(d: dict[str, Path], n: int) -> dict[str, Any]:
    """The evaluate step's full ranking for the trained model alone, over its first n test users."""
    import scipy.sparse as sp
    import torch

    from fusionrec.evaluation.evaluator import load_holdout, load_model
    from fusionrec.evaluation.metrics import evaluate_scores

    t0 = time.time()
    holdout = load_holdout(d["ingested"], d["split"])
    t1 = time.time()
    model = load_model(d["model"], *holdout.train.shape)
    t2 = time.time()
    tested = np.flatnonzero(np.diff(holdout.test.indptr))  # users with test items
    keep = np.zeros(holdout.test.shape[0])
    keep[tested[:n]] = 1
    test = sp.csr_matrix(sp.diags(keep) @ holdout.test)
    res = evaluate_scores(model.score_users, holdout.train, test, exclude=[holdout.valid])
    t3 = time.time()
    ranked = int(res["n_users"])
    parts = [{"part": "load the holdout", "start": t0, "stop": t1},
             {"part": "load the model", "start": t1, "stop": t2},
             {"part": f"rank every item for the first {ranked:,} test users", "start": t2, "stop": t3}]
    rank_s = t3 - t2
    return {"metrics": {"rank_users": ranked, "test_users": len(tested), "rank_s": round(rank_s, 1),
                        "s_per_512": round(rank_s * 512 / ranked, 2),
                        "all_users_s": round(rank_s * len(tested) / ranked),
                        "ease_blend": getattr(model, "ease_blend", None),
                        "torch_threads": torch.get_num_threads()},
            "parts": parts}


def _tree_rss(proc: Any) -> int:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except Exception:  # the child ended between two samples
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(Exception):
            total += p.memory_info().rss
    return total


def run_child(stage: str, work: Path, argv: list[str], max_rss: int) -> dict[str, Any]:
    """Run a stage in a child process, sampling the RSS of its process tree; stop it past max_rss."""
    import psutil

    out = work / f"stage-{stage}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--stage", stage, "--work", str(work), *argv]
    t0 = time.time()
    child = subprocess.Popen(cmd, cwd=REPO)
    proc = psutil.Process(child.pid)
    samples: list[tuple[float, int]] = []
    killed = False
    while child.poll() is None:
        rss = _tree_rss(proc)
        samples.append((time.time(), rss))
        if rss > max_rss and not killed:
            log.error("%s: process tree RSS %.1f GiB passed the limit; stopping it", stage, rss / 2**30)
            child.kill()
            killed = True
        time.sleep(0.2)
    wall = time.time() - t0
    row: dict[str, Any] = {"stage": stage, "wall_s": round(wall, 1), "returncode": child.returncode,
                           "peak_rss_gib": round(max((s for _, s in samples), default=0) / 2**30, 2),
                           "stopped_over_memory": killed}
    if out.is_file():
        done = json.loads(out.read_text())
        row["metrics"] = done.get("metrics", {})
        row["parts"] = [_part_row(p, samples) for p in done.get("parts", [])]
    return row


def _part_row(part: dict[str, Any], samples: list[tuple[float, int]]) -> dict[str, Any]:
    inside = [s for t, s in samples if part["start"] <= t <= part["stop"]]
    row = {k: v for k, v in part.items() if k not in ("start", "stop")}
    row.update(wall_s=round(part["stop"] - part["start"], 1),
               peak_rss_gib=round(max(inside, default=0) / 2**30, 2) if inside else None)
    return row


# --- ml100k-mm: exact vs sparse EASE on the same network -----------------------------------
def quality_side_by_side(seeds: list[int], variants: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per seed: train the default config once (exact EASE), then swap in each sparse variant.

    The network is the same, so the differences are the item-item component's alone; the blend
    weight is chosen again on validation for each variant, as training would.
    """
    import scipy.sparse as sp
    import torch

    from benchmarks.quality import METRICS, _round, _test
    from benchmarks.search import DEFAULT_DATA, prepare
    from fusionrec.config import TrainConfig
    from fusionrec.data.train_data import TrainData
    from fusionrec.models.assemble import choose_blend
    from fusionrec.models.ease import EASE_KEYS, item_item_arrays
    from fusionrec.models.recommender import Recommender
    from fusionrec.training import train

    torch.set_num_threads(1)
    ingested, features, split, _ = prepare(DEFAULT_DATA, REPO / "work" / "bench" / "search")
    data = TrainData.from_dirs(ingested, features, split)
    runs = []
    for seed in seeds:
        cfg = TrainConfig(seed=seed)
        rec = train(data, cfg).recommender
        a = rec.arrays
        hist = sp.csr_matrix((a.get("hist_data", np.ones(len(a["hist_indices"]), np.float32)), a["hist_indices"],
                              a["hist_indptr"]), shape=(rec.n_users, rec.n_items))
        rows: dict[str, Any] = {"seed": seed}
        for name, over in {"exact": {}, **variants}.items():
            arrays = {k: v for k, v in a.items() if k not in EASE_KEYS}
            t0 = time.perf_counter()
            weighted = "hist_data" in a  # the model's history is weighted (recency, origin)
            arrays.update(item_item_arrays(hist, cfg.with_overrides(**over), weighted) if over else
                          {k: a[k] for k in EASE_KEYS if k in a} or item_item_arrays(hist, cfg, weighted))
            fit_s = time.perf_counter() - t0 if over else None
            variant = Recommender(cfg, arrays, rec.state, rec.item_ids, rec.user_ids, dict(rec.meta), rec.titles)
            blend, _ = choose_blend(variant, data.train_matrix, data.valid)
            blended = _round(_test(variant.score_users, data))
            variant.meta["ease_blend"] = 1.0  # EASE alone (z-scores of it only)
            alone = _round(_test(variant.score_users, data))
            rows[name] = {"blend": blend, "test": blended, "ease_alone": alone, "fit_s": fit_s,
                          "nnz": int(len(arrays["ease_data"])) if "ease_data" in arrays else rec.n_items ** 2}
            log.info("seed %d %s: blend %.1f ndcg@20 %.4f (EASE alone %.4f)", seed, name, blend,
                     blended["ndcg@20"], alone["ndcg@20"])
        runs.append(rows)
    names = ["exact", *variants]
    mean = {n: {part: {m: round(float(np.mean([r[n][part][m] for r in runs])), 4) for m in METRICS}
                for part in ("test", "ease_alone")} for n in names}
    return {"seeds": seeds, "variants": {"exact": {}, **variants}, "runs": runs, "mean": mean,
            "n_items": int(data.n_items)}


# --- report --------------------------------------------------------------------------------
def markdown(data: dict[str, Any]) -> str:
    lines = []
    for key in sorted((k for k in data if k.startswith("synthetic")), key=lambda k: (k != "synthetic", k)):
        lines += _synthetic_lines(data[key])
    lines += _evaluate_lines(data.get("evaluate"))
    lines += _rank_lines(data.get("rank"))
    lines += _quality_lines(data.get("quality"))
    return "\n".join(lines)


def _evaluate_lines(ev: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if ev:
        g, m = ev["catalogue"], ev.get("metrics", {})
        lines += [f"## Evaluate on the synthetic catalogue: {g['items']:,} items, {g['users']:,} users", "",
                  f"`run_evaluate` on the model the train stage above wrote, default baselines "
                  f"({', '.join(m.get('baselines', []))}); each trained baseline under evaluate.baseline_budget_s "
                  f"{m.get('budget_s', 0):.0f} s; {m.get('n_users', 0):,} test users ranked over every item.", "",
                  "| stage / part | wall s | peak RSS GiB | note |", "|---|---|---|---|"]
        note = "stopped: over the memory limit" if ev["stopped_over_memory"] else (
            f"exit code {ev['returncode']}" if ev["returncode"] else "")
        lines.append(f"| **evaluate** | {ev['wall_s']} | {ev['peak_rss_gib']} | {note} |")
        lines += [f"| &nbsp;&nbsp;{p['part']} | {p['wall_s']} | {p['peak_rss_gib']} | |" for p in ev.get("parts", [])]
        lines += ["", "| model | fit s | epochs run | test ndcg@20 |", "|---|---|---|---|"]
        for name, ndcg in m.get("test_ndcg@20", {}).items():
            t = m.get("baseline_training", {}).get(name)
            run = f"{t['epochs_run']:.2f} of {t['epochs']}" + (" (budget)" if t["cut"] else "") if t else "-"
            fit = m.get("fit_seconds", {}).get(name)
            lines.append(f"| {name} | {fit:.1f} | {run} | {ndcg:.4f} |" if fit is not None else
                         f"| {name} | - | {run} | {ndcg:.4f} |")
        lines.append("")
    return lines


def _rank_lines(rank: dict[str, Any] | None) -> list[str]:
    if not rank:
        return []
    g, m = rank["catalogue"], rank.get("metrics", {})
    if rank["returncode"]:
        return [f"## Ranking on the synthetic catalogue: exit code {rank['returncode']}", ""]
    lines = [f"## Ranking on the synthetic catalogue: {g['items']:,} items", "",
             f"On the model the last train run in the work folder wrote (how long it trained does not change "
             f"what ranking costs). The evaluate step's full ranking (`evaluate_scores`, blocks of 512 users, "
             f"train and valid items excluded) for the model alone over its first {m['rank_users']:,} of "
             f"{m['test_users']:,} test users; "
             f"EASE blend weight {m['ease_blend']}, {m['torch_threads']} torch threads.", "",
             "| part | wall s | peak RSS GiB |", "|---|---|---|"]
    lines += [f"| {p['part']} | {p['wall_s']} | {p['peak_rss_gib']} |" for p in rank.get("parts", [])]
    lines += ["", f"{m['s_per_512']} s per 512 users; all {m['test_users']:,} test users at that rate: "
                  f"{m['all_users_s']:,} s (extrapolated).", ""]
    return lines


def _synthetic_lines(syn: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if syn:
        g = syn["catalogue"]
        lines += [f"## Synthetic catalogue: {g['items']:,} items, {g['interactions']:,} interactions, "
                  f"{g['users']:,} users", "",
                  f"Default TrainConfig, content = {g['vector_dim']}-d precomputed vectors, {syn['epochs']} epoch(s), "
                  f"batch size {syn.get('batch_size') or 'default'}"
                  f"{'; each epoch cut to its first {} batches'.format(syn['max_batches']) if syn.get('max_batches') else ''}"
                  f"; memory limit {syn['max_rss_gib']} GiB "
                  "(process tree RSS, sampled every 0.2 s).", "",
                  "| stage / part | wall s | peak RSS GiB | note |", "|---|---|---|---|",
                  f"| generate (not a pipeline stage) | {syn['generate_s']} | - | |"]
        for st in syn["stages"]:
            note = "stopped: over the memory limit" if st["stopped_over_memory"] else (
                f"exit code {st['returncode']}" if st["returncode"] else "")
            lines.append(f"| **{st['stage']}** | {st['wall_s']} | {st['peak_rss_gib']} | {note} |")
            for p in st.get("parts", []):
                extra = (f"valid ndcg@20 {p['valid_ndcg@20']:.4f}" if "valid_ndcg@20" in p else
                         f"{p['batch_s']:.2f} s a batch" if "batch_s" in p else "")
                lines.append(f"| &nbsp;&nbsp;{p['part']} | {p['wall_s']} | {p['peak_rss_gib']} | {extra} |")
            if st.get("parts"):
                rest = st["wall_s"] - sum(p["wall_s"] for p in st["parts"] if "batch_s" not in p)
                lines.append(f"| &nbsp;&nbsp;rest (imports, model setup, final validation metrics) | {rest:.1f} | - | |")
        if syn.get("note"):
            lines += ["", syn["note"]]
        lines.append("")
    return lines


def _quality_lines(q: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if q:
        lines += [f"## ml100k-mm random-811: exact EASE vs sparse EASE (test, mean of seeds "
                  f"{', '.join(map(str, q['seeds']))})", "",
                  "Same trained network per seed; only the item-item component differs; blend chosen on valid.", "",
                  "| item-item component | blended ndcg@20 | blended recall@20 | EASE alone ndcg@20 | "
                  "EASE alone recall@20 | mean blend | nnz |", "|---|---|---|---|---|---|---|"]
        for name, over in q["variants"].items():
            m = q["mean"][name]
            blend = np.mean([r[name]["blend"] for r in q["runs"]])
            nnz = q["runs"][0][name]["nnz"]
            label = "exact EASE (dense)" if not over else (
                f"sparse: head {over['ease_head_items']}, top-{over['ease_topk']}")
            lines.append(f"| {label} | {m['test']['ndcg@20']:.4f} | {m['test']['recall@20']:.4f} | "
                         f"{m['ease_alone']['ndcg@20']:.4f} | {m['ease_alone']['recall@20']:.4f} | "
                         f"{blend:.2f} | {nnz:,} |")
        lines.append(f"\n{q['n_items']} items; head >= items means every item is a regressor (only pruning differs).")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=0, help="train batch size (0: the default config's)")
    parser.add_argument("--threads", type=int, default=-1, help="train.threads (-1: the default config's)")
    parser.add_argument("--max-batches", type=int, default=0, help="batches per epoch (0: the whole epoch)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench" / "scale")
    parser.add_argument("--max-rss-gib", type=float, default=20.0)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--keep-data", action="store_true",
                        help="reuse the catalogue and the finished stages in --work from the last run (train again)")
    parser.add_argument("--quality-seeds", default="", help="ml100k-mm exact vs sparse EASE on these seeds")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/reports)")
    parser.add_argument("--evaluate", action="store_true",
                        help="run only the evaluate step on the model --work holds (after a run; see --eval-budget-s)")
    parser.add_argument("--eval-budget-s", type=float, default=1800.0,
                        help="evaluate.baseline_budget_s: seconds each trained baseline may train")
    parser.add_argument("--rank-users", type=int, default=0,
                        help="with --evaluate: time only the model's full ranking, over its first N test users")
    parser.add_argument("--stage", choices=(*STAGES, "evaluate"), default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.stage:
        result = run_stage(args.stage, args.work, args)
        (args.work / f"stage-{args.stage}.json").write_text(json.dumps(result, default=float))
        return 0
    old = REPORTS / "scale.json" if args.out is None else args.out / "scale.json"
    data: dict[str, Any] = json.loads(old.read_text())["data"] if old.is_file() else {}
    if args.evaluate:
        row = run_child("evaluate", args.work, ["--eval-budget-s", str(args.eval_budget_s),
                                                "--rank-users", str(args.rank_users)], int(args.max_rss_gib * 2**30))
        done = json.loads((args.work / "done.json").read_text())
        data["rank" if args.rank_users else "evaluate"] = {"catalogue": done["catalogue"], **row}
    elif not args.skip_synthetic:
        full = (args.items, args.interactions) == (200_000, 10_000_000)
        data["synthetic" if full else f"synthetic_{args.items}x{args.interactions}"] = synthetic(args)
    if args.quality_seeds:
        variants = {"head2048_top64": {"ease_max_items": 0, "ease_head_items": 2048, "ease_topk": 64},
                    "head512_top64": {"ease_max_items": 0, "ease_head_items": 512, "ease_topk": 64},
                    "head2048_top256": {"ease_max_items": 0, "ease_head_items": 2048, "ease_topk": 256}}
        data["quality"] = quality_side_by_side([int(s) for s in args.quality_seeds.split(",")], variants)
    text = markdown(data)
    write_report("scale", data, text, args.out)
    print(text)
    return 0


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    work: Path = args.work
    done_file = work / "done.json"  # the catalogue and the rows of the stages that finished
    done: dict[str, Any] = json.loads(done_file.read_text()) if args.keep_data and done_file.is_file() else {}
    if done.get("requested") != [args.items, args.interactions]:  # another size: generate again
        done = {}
    if not done:
        if work.exists():
            shutil.rmtree(work)
        t0 = time.time()
        catalogue = generate(work / "data", args.items, args.interactions)
        done = {"requested": [args.items, args.interactions], "catalogue": catalogue,
                "generate_s": round(time.time() - t0, 1), "stages": {}}
        done_file.write_text(json.dumps(done))
        log.info("generated %s in %.0fs", catalogue, done["generate_s"])
    child_args = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                  "--max-batches", str(args.max_batches), "--threads", str(args.threads)]
    stages = []
    for stage in STAGES:
        if stage in done["stages"] and stage != "train":
            log.info("%s: kept from the last run", stage)
            stages.append(done["stages"][stage])
            continue
        row = run_child(stage, work, child_args, int(args.max_rss_gib * 2**30))
        stages.append(row)
        log.info("%s: %.0fs, peak %.2f GiB", stage, row["wall_s"], row["peak_rss_gib"])
        if row["returncode"] != 0:
            break
        done["stages"][stage] = row
        done_file.write_text(json.dumps(done, default=float))
    catalogue, gen_s = done["catalogue"], done["generate_s"]
    return {"catalogue": catalogue, "generate_s": gen_s, "epochs": args.epochs, "batch_size": args.batch_size,
            "max_batches": args.max_batches,
            "max_rss_gib": args.max_rss_gib, "stages": stages, "threads": os.cpu_count()}

if __name__ == "__main__":
    sys.exit(main())
