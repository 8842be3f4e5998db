"""Baselines benchmark: fusionrec's own baselines on ml100k-mm random-811 next to the peers' numbers.

A sanity check of the metrics and the baselines together: EASE, MostPop, ItemKNN and content-kNN
are deterministic and must reproduce ../shared/bench/peers.md; the trained ones (BPR-MF, LightGCN,
VBPR) should land near their peers.

    python -m benchmarks.baselines [--data ../shared/datasets/ml100k-mm] [--features FEATURES_DIR]
                                   [--baselines mostpop,ease,...] [--merge]

Without --features, VBPR and content-kNN use the dataset's reference features (MiniLM text +
EfficientNet-Lite0 posters, `features/`), the ones the peers used. Writes
benchmarks/reports/baselines.{json,md}; skips (exit 0, a note) when ml100k-mm is absent.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import REPORTS, write_report
from fusionrec.config import EvaluateConfig, IngestConfig

ROOT = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_DATA = ROOT / "datasets" / "ml100k-mm"
PEERS = ROOT / "bench" / "peers.md"
COLUMNS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "precision@10", "mrr@20"]
PEER_ROWS = {"mostpop": "MostPop", "itemknn": "ItemKNN (k=100)", "ease": "EASE (lambda 300)",
             "bpr-mf": "BPR-MF (64 factors)", "lightgcn": "LightGCN (2 layers)",
             "vbpr": "VBPR, text+image", "content-knn": "content-kNN, text+image"}


def read_peers(path: Path) -> dict[str, dict[str, float]]:
    """The peers' table of peers.md as {row label: {metric: value}} ('-' cells left out)."""
    if not path.is_file():
        return {}
    rows: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(COLUMNS) and re.fullmatch(r"\.\d+|-", cells[2]):
            rows[cells[0]] = {m: float(v) for m, v in zip(COLUMNS, cells[2:], strict=True) if v != "-"}
    return rows


def reference_features(data: Path, item_ids: list[str]) -> dict[str, Any]:
    """The dataset's reference feature matrices (row r = item_id r+1) in the ingested item order."""
    from fusionrec.features.store import FeatureMatrix

    rows = np.array([int(i) - 1 for i in item_ids])
    poster = np.load(data / "features" / "has_poster.npy")[rows]
    text = np.load(data / "features" / "text_feat_minilm.npy")[rows]
    image = np.load(data / "features" / "image_feat_effnetlite0.npy")[rows]
    return {"text:minilm": FeatureMatrix("text:minilm", "text", "minilm", text, np.ones(len(rows), bool)),
            "image:effnet-lite0": FeatureMatrix("image:effnet-lite0", "image", "effnet-lite0", image, poster)}


def measure(data: Path, features_dir: Path | None, names: list[str]) -> dict[str, Any]:
    """Ingest, load the random-811 split, fit and evaluate every baseline; numbers per baseline."""
    from fusionrec.data.ingest import run_ingest
    from fusionrec.data.loading import load_ingested
    from fusionrec.evaluation.evaluator import evaluate_scorer, fit_baselines, load_holdout
    from fusionrec.features.store import load_features

    cfg = EvaluateConfig(baselines=names)
    with tempfile.TemporaryDirectory() as tmp:
        ingested = Path(tmp) / "ingested"
        run_ingest(data, ingested, IngestConfig(check_images=False))
        holdout = load_holdout(ingested, data / "splits" / "random-811")
        item_ids = load_ingested(ingested).items["item_id"].astype(str).tolist()
    feats = load_features(features_dir) if features_dir else reference_features(data, item_ids)
    models, seconds = fit_baselines(cfg, holdout.train, feats)
    out = {}
    for name, model in models.items():
        start = time.perf_counter()
        res = evaluate_scorer(model, holdout, cfg)
        out[name] = {"test": res["test"], "buckets": res["buckets"], "fit_s": round(seconds[name], 2),
                     "eval_s": round(time.perf_counter() - start, 2)}
    return {"features": str(features_dir) if features_dir else "reference (features/ of the dataset)",
            "split": "random-811", "baselines": out}


def markdown(result: dict[str, Any], peers: dict[str, dict[str, float]]) -> str:
    """Side-by-side table: ours, then the peer's value of the same row and the NDCG@20 difference."""
    head = "| baseline | " + " | ".join(c.replace("recall", "R").replace("ndcg", "N").replace("precision", "P")
                                        .replace("mrr", "MRR") for c in COLUMNS)
    lines = ["# fusionrec baselines on ml100k-mm random-811 vs ../shared/bench/peers.md", "",
             f"Features for vbpr / content-knn: {result['features']}. Fit seconds are wall time on the machine "
             "in the footer (a shared, loaded CPU inflates them).", "",
             head + " | peer N@20 | diff N@20 | fit s |", "|---" * (len(COLUMNS) + 4) + "|"]
    for name, res in result["baselines"].items():
        ours = res["test"]
        peer = peers.get(PEER_ROWS.get(name, ""), {}).get("ndcg@20")
        diff = f"{ours['ndcg@20'] - peer:+.4f}" if peer is not None else "-"
        lines.append(f"| {name} | " + " | ".join(f"{ours[c]:.4f}" for c in COLUMNS)
                     + f" | {peer if peer is not None else '-'} | {diff} | {res['fit_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--features", type=Path, default=None, help="a `fusionrec featurize` output")
    parser.add_argument("--baselines", default=",".join(EvaluateConfig().baselines))
    parser.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/reports)")
    parser.add_argument("--merge", action="store_true", help="keep the other baselines of an existing report")
    args = parser.parse_args(argv)
    if not (args.data / "splits" / "random-811").is_dir():
        print(f"skipped: ml100k-mm with splits/random-811 not found at {args.data}")
        return 0
    result = measure(args.data, args.features, [b for b in args.baselines.split(",") if b])
    previous = (args.out or REPORTS) / "baselines.json"
    if args.merge and previous.is_file():  # rerun a few baselines, keep the rest of the report
        kept = json.loads(previous.read_text())["data"]["baselines"]
        result["baselines"] = {**kept, **result["baselines"]}
    peers = read_peers(PEERS)
    result["peers"] = {n: peers[PEER_ROWS[n]] for n in result["baselines"] if PEER_ROWS.get(n) in peers}
    text = markdown(result, peers)
    paths = write_report("baselines", result, text, args.out)
    print(text)
    print(f"written: {paths['json']}, {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
