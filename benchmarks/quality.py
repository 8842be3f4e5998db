"""Quality benchmark: the default TrainConfig on ml100k-mm against the peers and our baselines.

    python -m benchmarks.quality [--seeds 2026,2027,2028] [--baselines ease,mostpop,...]
                                 [--skip cold,temporal,scale] [--work work/bench/search]

- random-811 (the published split): the default config, 3 seeds, test metrics (train on
  train, early stopping and the EASE blend on valid), side by side with ../shared/bench/peers.md
  and fusionrec's own baselines in the same evaluator; train wall time and peak memory;
- cold-items (a fifth of the items held out of training, ranked only among themselves):
  our content path against VBPR, content-kNN and random;
- temporal-loo: ours against EASE with per-user bootstrap confidence intervals;
- cost growth: one epoch at 1M interactions of the demo generator.
Features are fusionrec's own featurize output (MiniLM + EfficientNet-Lite0), computed once in
--work (shared with benchmarks.search). Writes benchmarks/reports/quality.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import PEER_ROWS, PEERS, read_peers
from benchmarks.report import write_report
from benchmarks.search import DEFAULT_DATA, REPO, prepare

METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "precision@10", "mrr@20"]
FAST_BASELINES = ["mostpop", "itemknn", "ease", "content-knn"]  # the trained ones: benchmarks.baselines
BASELINES_REPORT = Path(__file__).resolve().parent / "reports" / "baselines.json"
REPORT_MD = Path(__file__).resolve().parent / "reports" / "quality.md"
TRIED_HEADING = "## Tried"  # the report's hand-written section of measured ideas, kept when the report is rewritten
log = logging.getLogger("benchmarks.quality")


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _test(score_fn: Any, data: Any, candidates: np.ndarray | None = None, per_user: bool = False) -> dict:
    from fusionrec.evaluation.metrics import evaluate_scores

    return evaluate_scores(score_fn, data.train_matrix, data.test, ks=(10, 20), exclude=[data.valid],
                           candidates=candidates, per_user=per_user)


def _round(m: dict) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in m.items() if k in METRICS or k.startswith("coverage")}


def run_seeds(data: Any, seeds: list[int]) -> dict[str, Any]:
    """The default config once per seed: blended and neural-only test metrics, cost."""
    from fusionrec.config import TrainConfig
    from fusionrec.training import train

    runs = []
    for seed in seeds:
        res = train(data, TrainConfig(seed=seed))
        rec = res.recommender
        blended = _test(rec.score_users, data)
        blend = rec.ease_blend
        rec.meta["ease_blend"] = 0.0
        neural = _test(rec.score_users, data)
        rec.meta["ease_blend"] = blend
        runs.append({"seed": seed, "test": _round(blended), "neural_only": _round(neural), "ease_blend": blend,
                     "recency_half_life": rec.config.recency_half_life, "best_epoch": res.best_epoch, "train_s": round(res.seconds, 1), "peak_rss_mib": peak_rss_mib()})
        log.info("seed %d: test ndcg@20 %.4f recall@20 %.4f (neural only %.4f), blend %.1f, %.0fs", seed,
                 blended["ndcg@20"], blended["recall@20"], neural["ndcg@20"], blend, res.seconds)
    mean = {m: round(float(np.mean([r["test"][m] for r in runs])), 4) for m in METRICS}
    std = {m: round(float(np.std([r["test"][m] for r in runs])), 4) for m in METRICS}
    neural = {m: round(float(np.mean([r["neural_only"][m] for r in runs])), 4) for m in METRICS}
    return {"runs": runs, "mean": mean, "std": std, "neural_only_mean": neural,
            "train_s_mean": round(float(np.mean([r["train_s"] for r in runs])), 1)}


def run_baselines(data: Any, names: list[str], candidates: np.ndarray | None = None) -> dict[str, Any]:
    """Our baselines, fitted on train and scored by the same evaluator."""
    from fusionrec.features.store import FeatureMatrix
    from fusionrec.models.baselines import make_baseline

    feats = {k: FeatureMatrix(k, k.split(":")[0], k.split(":")[1], v, m) for k, (v, m) in data.features.items()}
    out = {}
    for name in names:
        start = time.perf_counter()
        model = make_baseline(name).fit(data.train_matrix, feats)
        fit_s = time.perf_counter() - start
        out[name] = {"test": _round(_test(model.score_users, data, candidates)), "fit_s": round(fit_s, 2)}
        log.info("baseline %s: test ndcg@20 %.4f", name, out[name]["test"]["ndcg@20"])
    return out


def reported_baselines(skip: set[str]) -> dict[str, Any]:
    """The trained baselines (BPR-MF, LightGCN, VBPR) from benchmarks.baselines' last report, if any."""
    import json

    if not BASELINES_REPORT.is_file():
        return {}
    rows = json.loads(BASELINES_REPORT.read_text())["data"]["baselines"]
    return {f"{k} (baselines report)": {"test": _round(v["test"]), "fit_s": v.get("fit_s")}
            for k, v in rows.items() if k not in skip}


def random_scores(n_items: int, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return lambda users: rng.random((len(users), n_items))


def run_cold(ingested: Path, features: Path, work: Path) -> dict[str, Any]:
    """cold-items split: a fifth of the items never in training, ranked among themselves."""
    from fusionrec.config import SplitConfig, TrainConfig
    from fusionrec.data.splits import run_split
    from fusionrec.data.train_data import TrainData
    from fusionrec.training import train

    split = work / "split-cold-items"
    if not (split / "train.parquet").is_file():
        run_split(ingested, split, SplitConfig(protocol="cold-items", test_share=0.2))
    data = TrainData.from_dirs(ingested, features, split)
    cold = data.cold_items
    res = train(data, TrainConfig())
    out = {"n_cold_items": int(len(cold)), "fusionrec": _round(_test(res.recommender.score_users, data, cold)),
           "random": _round(_test(random_scores(data.n_items), data, cold))}
    out.update(run_baselines(data, ["vbpr", "content-knn"], cold))
    return out


def bootstrap(values: np.ndarray, n: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean over users resampled with replacement."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def run_temporal(ingested: Path, features: Path, work: Path, seeds: list[int]) -> dict[str, Any]:
    """temporal-loo: ours (one model per seed) vs EASE; per-user bootstrap intervals of the means and of
    the difference, the per-user values averaged over the seeds."""
    from fusionrec.config import SplitConfig, TrainConfig
    from fusionrec.data.splits import run_split
    from fusionrec.data.train_data import TrainData
    from fusionrec.models.baselines import make_baseline
    from fusionrec.training import train

    split = work / "split-temporal-loo"
    if not (split / "train.parquet").is_file():
        run_split(ingested, split, SplitConfig(protocol="temporal-loo"))
    data = TrainData.from_dirs(ingested, features, split)
    runs, per_user = [], []
    for seed in seeds:
        rec = train(data, TrainConfig(seed=seed)).recommender
        m = _test(rec.score_users, data, per_user=True)
        per_user.append(m["per_user"])
        runs.append({"seed": seed, "test": _round(m), "ease_blend": rec.ease_blend,
                     "recency_half_life": rec.config.recency_half_life})
        log.info("temporal seed %d: test ndcg@20 %.4f (recency half-life %g, blend %.1f)", seed, m["ndcg@20"],
                 rec.config.recency_half_life, rec.ease_blend)
    ease = _test(make_baseline("ease").fit(data.train_matrix).score_users, data, per_user=True)
    mean = {k: round(float(np.mean([r["test"][k] for r in runs])), 4) for k in METRICS}
    out: dict[str, Any] = {"fusionrec": mean, "ease": _round(ease), "runs": runs}
    for m in ("ndcg@20", "recall@20"):
        a, b = np.mean([p[m] for p in per_user], axis=0), ease["per_user"][m]
        out[f"ci_{m}"] = {"fusionrec": bootstrap(a), "ease": bootstrap(b), "difference": bootstrap(a - b)}
    return out


def run_scale(demo: Path, interactions: int = 1_000_000) -> dict[str, Any]:
    """Seconds of one training epoch at 1M demo interactions (random content vectors: cost only).

    Args:
        demo: the demo folder; generated there (DemoConfig with 20k users, 3k items) when absent.
    """
    import pandas as pd

    from fusionrec import schema
    from fusionrec.config import DemoConfig, TrainConfig
    from fusionrec.data.demo import run_demo_data
    from fusionrec.data.train_data import TrainData
    from fusionrec.training import train

    if not (demo / "interactions.csv").is_file():
        run_demo_data(demo, DemoConfig(users=20_000, items=3_000, interactions=interactions, image_size=16))
    frame = pd.read_csv(demo / "interactions.csv", dtype={"user_id": str, "item_id": str})
    users, items = sorted(frame.user_id.unique()), sorted(pd.read_csv(demo / "items.csv", dtype=str).item_id)
    uidx, iidx = {u: k for k, u in enumerate(users)}, {i: k for k, i in enumerate(items)}
    frame = pd.DataFrame({schema.USER_IDX: frame.user_id.map(uidx), schema.ITEM_IDX: frame.item_id.map(iidx)})
    is_valid = np.random.default_rng(0).random(len(frame)) < 0.1
    rng = np.random.default_rng(1)
    feats = {k: (rng.standard_normal((len(items), d)).astype(np.float32), np.ones(len(items), bool))
             for k, d in (("text:minilm", 384), ("image:effnet-lite0", 1280))}
    data = TrainData(train=frame[~is_valid], valid=None, test=None, features=feats, item_ids=items,  # type: ignore[arg-type]
                     user_ids=users)
    data.valid = data.matrix(frame[is_valid])
    res = train(data, TrainConfig(epochs=1, ease_blend=0.0))
    return {"interactions": int(len(frame)), "users": len(users), "items": len(items),
            "epoch_s_with_validation": round(res.history[0]["seconds"], 1), "train_s_total": round(res.seconds, 1),
            "peak_rss_mib": peak_rss_mib()}


def _row(label: str, m: dict[str, float]) -> str:
    return f"| {label} | " + " | ".join(f"{m[c]:.4f}".lstrip("0") if c in m else "-" for c in METRICS) + " |"


def kept_section(path: Path, heading: str) -> str:
    """The section of an earlier report from `heading` to the next heading of its level ("" if none)."""
    text = path.read_text() if path.is_file() else ""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return ""
    stops = [i for i in (text.find("\n## ", start + 1), text.find("\n_fusionrec ", start + 1)) if i >= 0]
    return text[start + 1 : min(stops, default=len(text))].rstrip()  # not the next section, not the footer


def markdown(result: dict[str, Any], peers: dict[str, dict[str, float]]) -> str:
    head = "| model | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS)
    r = result["random_811"]
    lines = ["## ml100k-mm random-811 (test; mean of seeds " + ", ".join(str(x["seed"]) for x in r["runs"]) + ")",
             "", head, _row("**fusionrec (default config)**", r["mean"]), _row("fusionrec, neural part only", r["neural_only_mean"])]
    lines += [_row(f"ours: {n}", b["test"]) for n, b in result.get("baselines", {}).items()]
    lines += [_row(f"peer: {label}", m) for label, m in peers.items()]
    ease = peers.get(PEER_ROWS["ease"], {})
    if ease:
        lines += ["", f"NDCG@20 vs EASE peer: {r['mean']['ndcg@20'] / ease['ndcg@20'] - 1:+.1%} "
                  f"(goal +5%); Recall@20: {r['mean']['recall@20'] / ease['recall@20'] - 1:+.1%}. "
                  f"Seed std NDCG@20 {r['std']['ndcg@20']:.4f}; mean train {r['train_s_mean']}s; "
                  f"peak RSS {max(x['peak_rss_mib'] for x in r['runs'])} MiB."]
    if "cold_items" in result:
        c = result["cold_items"]
        lines += ["", f"## cold-items ({c['n_cold_items']} items never in training, ranked among themselves)", "", head]
        lines += [_row(k, v if k in ("fusionrec", "random") else v["test"]) for k, v in c.items() if k != "n_cold_items"]
    if "temporal_loo" in result:
        t = result["temporal_loo"]
        seeds = ", ".join(str(x["seed"]) for x in t.get("runs", []))
        lines += ["", f"## temporal-loo (one test item per user; fusionrec: mean of seeds {seeds}; 95% per-user "
                  "bootstrap intervals)", "", head, _row("fusionrec", t["fusionrec"]), _row("ease", t["ease"]), ""]
        lines += [f"- seed {x['seed']}: ndcg@20 {x['test']['ndcg@20']:.4f}, recency half-life "
                  f"{x['recency_half_life']:g} (chosen on validation), EASE blend {x['ease_blend']:.1f}"
                  for x in t.get("runs", [])]
        lines += [f"- {m}: fusionrec {t[f'ci_{m}']['fusionrec']}, EASE {t[f'ci_{m}']['ease']}, "
                  f"difference {t[f'ci_{m}']['difference']}" for m in ("ndcg@20", "recall@20")]
    if "scale" in result:
        s = result["scale"]
        lines += ["", f"## cost: one epoch at {s['interactions']:,} demo interactions ({s['users']:,} users, "
                  f"{s['items']:,} items): {s['epoch_s_with_validation']}s including validation; "
                  f"peak RSS {s['peak_rss_mib']} MiB"]
    tried = kept_section(REPORT_MD, TRIED_HEADING)
    if tried:
        lines += ["", tried]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench" / "search")
    parser.add_argument("--seeds", default="2026,2027,2028")
    parser.add_argument("--baselines", default=",".join(FAST_BASELINES))
    parser.add_argument("--skip", default="", help="comma-separated: cold, temporal, scale")
    parser.add_argument("--demo-1m", type=Path, default=None, help="a 1M-interaction demo folder (default: generated in --work)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.data / "interactions.csv").is_file():
        print(f"quality benchmark skipped: {args.data} not found")
        return 0
    torch.set_num_threads(1)
    from fusionrec.data.train_data import TrainData

    ingested, features, split, _ = prepare(args.data, args.work)
    data = TrainData.from_dirs(ingested, features, split)
    result: dict[str, Any] = {"features": sorted(data.features), "random_811": run_seeds(data, [int(s) for s in args.seeds.split(",")])}
    names = [n for n in args.baselines.split(",") if n]
    if names:
        result["baselines"] = run_baselines(data, names)
        result["baselines"].update(reported_baselines(set(names)))
    skip = set(args.skip.split(","))
    if "cold" not in skip:
        result["cold_items"] = run_cold(ingested, features, args.work)
    if "temporal" not in skip:
        result["temporal_loo"] = run_temporal(ingested, features, args.work, [int(x) for x in args.seeds.split(",")])
    if "scale" not in skip:
        result["scale"] = run_scale(args.demo_1m or args.work / "demo-1m")
    text = markdown(result, read_peers(PEERS))
    write_report("quality", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
