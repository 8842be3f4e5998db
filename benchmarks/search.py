"""Search benchmark: 30 Optuna trials with pruning on ml100k-mm random-811.

    python -m benchmarks.search [--data ../shared/datasets/ml100k-mm] [--trials 30] [--work work/bench/search]

Ingests ml100k-mm, uses its published random 8:1:1 split, featurizes once (MiniLM, TF-IDF,
EfficientNet-Lite0, colour; cached in --work), runs `run_search` from params.yaml's search and
train sections, then retrains the default config and the chosen one and scores both on test.
Reports the search's wall time, trials pruned, and valid/test NDCG@20 of default vs best.
Writes benchmarks/reports/search.{json,md}. Skips (exit 0, a note) when ml100k-mm is absent.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_report
from fusionrec.config import (
    FeaturizeConfig,
    IngestConfig,
    SearchConfig,
    SplitConfig,
    TrainConfig,
    load_config_file,
    load_params,
)
from fusionrec.io import read_json

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml100k-mm"
REPO = Path(__file__).resolve().parents[1]
ENCODERS = FeaturizeConfig(text_encoders=["minilm", "tfidf"], image_encoders=["effnet-lite0", "color"])


def prepare(data: Path, work: Path) -> tuple[Path, Path, Path, float]:
    """Ingest, split (the published random-811 files) and featurize once; reuse them when present.

    Returns:
        (ingested, features, split folders, featurize seconds of this call).
    """
    from fusionrec.data.ingest import run_ingest
    from fusionrec.data.splits import run_split
    from fusionrec.features.pipeline import run_featurize

    ingested, split, features = work / "ingested", work / "split", work / "features"
    if not (ingested / "report.json").is_file():
        run_ingest(data, ingested, IngestConfig())
    if not (split / "train.parquet").is_file():
        run_split(ingested, split, SplitConfig(), external=data / "splits" / "random-811")
    start = time.perf_counter()
    if not (features / "manifest.json").is_file():
        run_featurize(ingested, features, ENCODERS)  # content-hash cache in work/.feature-cache
    return ingested, features, split, time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (wall time alone misleads on a shared box)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def study_span_seconds(trials_csv: Path) -> float:
    """Wall time of the study: first trial start to last trial end (right also for a resumed run)."""
    import pandas as pd

    frame = pd.read_csv(trials_csv, parse_dates=["datetime_start", "datetime_complete"])
    return round((frame["datetime_complete"].max() - frame["datetime_start"].min()).total_seconds(), 1)


def code_version() -> str:
    """Short hash of the training and model code the numbers were measured with."""
    import hashlib

    src = REPO / "src" / "fusionrec"
    h = hashlib.sha256()
    for path in [src / "training.py", *sorted((src / "models").glob("*.py"))]:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def valid_and_test(ingested: Path, features: Path, split: Path, cfg: TrainConfig) -> dict[str, float]:
    """Retrain a config and score it: validation and test NDCG@20 / Recall@20 (full ranking)."""
    from fusionrec.data.train_data import TrainData
    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.training import train

    data = TrainData.from_dirs(ingested, features, split)
    start = time.perf_counter()
    result = train(data, cfg)
    assert data.test is not None
    test = evaluate_scores(result.recommender.score_users, data.train_matrix, data.test, ks=(20,),
                           exclude=[data.valid])
    return {"valid_ndcg@20": round(float(result.valid_metrics["ndcg@20"]), 4),
            "valid_recall@20": round(float(result.valid_metrics["recall@20"]), 4),
            "test_ndcg@20": round(float(test["ndcg@20"]), 4), "test_recall@20": round(float(test["recall@20"]), 4),
            "best_epoch": result.best_epoch, "train_seconds": round(time.perf_counter() - start, 1)}


def markdown(r: dict[str, Any]) -> str:
    s, d, b = r["search"], r["default"], r["best"]
    lines = [
        "# Search benchmark\n",
        f"`fusionrec search` on ml100k-mm random-811 ({r['dataset_rows']}): {s['n_trials']} trials, "
        f"sampler {r['sampler']}, pruner {r['pruner']}, {r['workers']} worker(s).\n",
        "| | value |", "|---|---|",
        f"| search wall time (first trial start to last trial end) | {s['wall_seconds'] / 60:.1f} min "
        f"(target < 15 min on 2 cores)"
        + (f"; CPU {r['search_cpu_seconds'] / 60:.1f} min |" if r["search_cpu_seconds"] is not None else " |"),
        f"| trials complete / pruned / failed | {s['n_complete']} / {s['n_pruned']} / {s['n_failed']} |",
        f"| share pruned | {s['pruned_share']:.0%} |",
        "| featurize once (not in the search time) | "
        + (f"{r['featurize_seconds']:.0f} s |" if r["featurize_seconds"] >= 1 else "cached from an earlier run |"),
        "",
        "| config | valid NDCG@20 (in the search) | valid NDCG@20 (retrained) | test NDCG@20 | test Recall@20 |",
        "|---|---|---|---|---|",
        f"| default (params.yaml train, trial 0) | {s.get('default_valid_ndcg@20', float('nan')):.4f} | "
        f"{d['valid_ndcg@20']:.4f} | {d['test_ndcg@20']:.4f} | {d['test_recall@20']:.4f} |",
        f"| best (trial {s.get('best_trial')}) | {s.get('best_valid_ndcg@20', float('nan')):.4f} | "
        f"{b['valid_ndcg@20']:.4f} | {b['test_ndcg@20']:.4f} | {b['test_recall@20']:.4f} |",
        "",
        "Best config: " + ", ".join(f"{k}={v}" for k, v in r["best_params"].items()),
        "",
        f"Training code hash {r['code']}" + (f"; search timeout {r['timeout']:.0f} s" if r["timeout"] else ""),
    ]
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from fusionrec import training  # noqa: F401  (this process's training code is fixed from here on)
    from fusionrec.automl import run_search

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=None, help="seconds; stop the search early (reported)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench" / "search")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="keep the study in --work and add --trials to it (0: only summarise and score it)")
    parser.add_argument("--note", default="", help="a remark printed in the report (e.g. the training version)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "interactions.csv").is_file():
        print(f"skipped: no dataset at {args.data}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fusionrec.training").setLevel(logging.WARNING)
    ingested, features, split, featurize_s = prepare(args.data, args.work)
    params = load_params(args.params)
    cfg = params.search.with_overrides(n_trials=args.trials, workers=args.workers, timeout=args.timeout,
                                       storage="")
    assert isinstance(cfg, SearchConfig)
    out = args.work / "search"
    if not args.resume:
        shutil.rmtree(out, ignore_errors=True)  # a fresh study: the benchmark measures 30 trials from scratch
    cpu0 = cpu_seconds()
    result = run_search(ingested, features, split, out, cfg, params.train)
    search_cpu = cpu_seconds() - cpu0
    best_cfg = load_config_file(out / "best.yaml", TrainConfig)
    summary = read_json(out / "summary.json")
    span = study_span_seconds(out / "trials.csv")
    report: dict[str, Any] = {
        "dataset": str(args.data), "dataset_rows": "100,000 interactions, 943 users, 1,682 items",
        "sampler": cfg.sampler, "pruner": cfg.pruner, "workers": cfg.workers, "n_trials": args.trials,
        "featurize_seconds": round(featurize_s, 1), "search": {**result.metrics, "wall_seconds": span},
        "search_cpu_seconds": None if args.resume else round(search_cpu, 1), "timeout": args.timeout, "code": code_version(),
        "default": valid_and_test(ingested, features, split, params.train),
        "best": valid_and_test(ingested, features, split, best_cfg),
        "best_params": summary.get("best_params", {}), "note": args.note,
    }
    paths = write_report("search", report, markdown(report), args.out_dir)
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
