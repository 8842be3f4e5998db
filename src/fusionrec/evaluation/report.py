"""Evaluation outputs for people and for DVC: the markdown comparison table, PNG plots (matplotlib
Agg), a flat headline.json (one row per experiment in `dvc exp show`) and the metric-by-K curves as
CSV (`dvc plots diff` overlays them across runs)."""

from __future__ import annotations

import base64
import csv
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusionrec.config import EvaluateConfig

TABLE_FILE = "comparison.md"
PLOTS_DIR = "plots"
HEADLINE_FILE = "headline.json"
CURVE_FILES = {"ndcg": "ndcg_by_k.csv", "recall": "recall_by_k.csv"}  # columns: k, then one per model
MODEL = "model"  # the trained model's name in the results (fusionrec.evaluation.evaluator.MODEL)


def _columns(ks: Sequence[int]) -> list[str]:
    """Metric columns of the table: recall/ndcg at every K, then precision, MRR and hit at the largest."""
    top = max(ks)
    return ([f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
            + [f"precision@{min(ks)}", f"mrr@{top}", f"hit@{top}", f"coverage@{top}"])


def _short(metric: str) -> str:
    name, k = metric.split("@")
    return {"recall": "R", "ndcg": "N", "precision": "P", "mrr": "MRR", "hit": "HR", "coverage": "Cov"}[name] + f"@{k}"


def _table(rows: Mapping[str, Mapping[str, float]], columns: list[str]) -> list[str]:
    """Markdown rows sorted by the first NDCG column, the best value of each column in bold."""
    key = next(c for c in columns if c.startswith("ndcg"))
    best = {c: max((r.get(c, float("-inf")) for r in rows.values()), default=0.0) for c in columns}
    lines = ["| model | " + " | ".join(_short(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1].get(key, 0.0)):
        cells = []
        for c in columns:
            v = row.get(c)
            text = "-" if v is None else f"{v:.4f}"
            cells.append(f"**{text}**" if v is not None and v == best[c] and len(rows) > 1 else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def comparison_markdown(results: Mapping[str, Mapping[str, Any]], cfg: EvaluateConfig) -> str:
    """The comparison report: test metrics of every model, then cold items and activity buckets."""
    cols = _columns(cfg.ks)
    n_users = next(iter(results.values()))["test"].get("n_users", 0) if results else 0
    out = ["# Evaluation: model vs baselines", "",
           f"Full ranking over all items minus each user's train and valid items; {n_users} test users.", "",
           "## Test", "", *_table({n: r["test"] for n, r in results.items()}, cols)]
    cut = {n: r["training"] for n, r in results.items() if r.get("training", {}).get("cut")}
    if cut:
        out += ["", *(f"- {n}: stopped by its {t['budget_s']:.0f} s training budget after {t['epochs_run']:.2f} of "
                      f"{t['epochs']} epochs (evaluate.baseline_budget_s): an under-trained baseline"
                      for n, t in cut.items())]
    cold = {n: r["cold"] for n, r in results.items() if "cold" in r}
    if cold:
        out += ["", "## Cold items (ranked only among items held out of training)", "", *_table(cold, cols)]
    key = f"ndcg@{max(cfg.ks)}"
    labels = list(next(iter(results.values()))["buckets"]) if results else []
    if labels:
        out += ["", f"## {_short(key)} by user activity (train interactions)", "",
                "| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        out += [f"| {n} | " + " | ".join(f"{r['buckets'][b].get(key, 0.0):.4f}" for b in labels) + " |"
                for n, r in results.items()]
        users = next(iter(results.values()))["buckets"]
        out.append("| users | " + " | ".join(str(users[b]["n_users"]) for b in labels) + " |")
    return "\n".join(out) + "\n"


def plot_by_k(curves: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Recall@K and NDCG@K against K, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        for name, curve in curves.items():
            pts = sorted((int(k.split("@")[1]), v) for k, v in curve.items() if k.startswith(metric + "@"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_by_bucket(results: Mapping[str, Mapping[str, Any]], metric: str, path: Path) -> Path:
    """One metric per user-activity bucket, grouped bars per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(next(iter(results.values()))["buckets"])
    width = 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, (name, res) in enumerate(results.items()):
        vals = [res["buckets"][b].get(metric, 0.0) for b in labels]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{b}\n({results[next(iter(results))]['buckets'][b]['n_users']} users)" for b in labels])
    ax.set_xlabel("train interactions per user")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def headline(results: Mapping[str, Mapping[str, Any]], cfg: EvaluateConfig) -> dict[str, float]:
    """The winner's test metrics, flat, and its margin over the best baseline on cfg.promote_metric.

    The winner is the trained model when there is one, else the best baseline. Keys: the table's
    columns (recall/ndcg at every K, precision, MRR, hit rate, coverage), `cold_<metric>` on a
    cold-items split, `best_baseline_<metric>` and `margin_<metric>` (model minus best baseline).
    """
    if not results:
        return {}
    key = cfg.promote_metric
    baselines = {n: r for n, r in results.items() if n != MODEL}
    best_baseline = max(baselines, key=lambda n: baselines[n]["test"].get(key, 0.0)) if baselines else None
    winner = MODEL if MODEL in results else best_baseline
    assert winner is not None
    test = results[winner]["test"]
    out = {c: float(test[c]) for c in _columns(cfg.ks) if isinstance(test.get(c), int | float)}
    for c in (f"ndcg@{max(cfg.ks)}", f"recall@{max(cfg.ks)}"):
        if isinstance(results[winner].get("cold", {}).get(c), int | float):
            out[f"cold_{c}"] = float(results[winner]["cold"][c])
    if best_baseline is not None and key in test:
        base = float(baselines[best_baseline]["test"].get(key, 0.0))
        out[f"best_baseline_{key}"] = base
        if winner == MODEL:
            out[f"margin_{key}"] = float(test[key]) - base
    return out


def write_curves(curves: Mapping[str, Mapping[str, float]], out_dir: Path) -> dict[str, Path]:
    """ndcg_by_k.csv and recall_by_k.csv: one row per K, one column per model (the model first)."""
    names = sorted(curves, key=lambda n: (n != MODEL, n))
    paths = {}
    for metric, filename in CURVE_FILES.items():
        ks = sorted({int(k.split("@")[1]) for c in curves.values() for k in c if k.startswith(metric + "@")})
        with (out_dir / filename).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["k", *names])
            for k in ks:
                writer.writerow([k, *(curves[n].get(f"{metric}@{k}", "") for n in names)])
        paths[f"{metric}_by_k"] = out_dir / filename
    return paths


def plots_html(out_dir: Path, title: str = "fusionrec evaluation") -> str:
    """A self-contained HTML page of the PNG plots in out_dir/plots (embedded, e.g. for the KFP UI)."""
    images = []
    for png in sorted((Path(out_dir) / PLOTS_DIR).glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        images.append(f'<h3>{html.escape(png.stem.replace("_", " "))}</h3>'
                      f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}"/>')
    body = "\n".join(images) or "<p>no plots</p>"
    return f"<html><head><title>{html.escape(title)}</title></head><body>{body}</body></html>"


def write_reports(results: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Mapping[str, float]],
                  out_dir: Path, cfg: EvaluateConfig) -> dict[str, Path]:
    """Write comparison.md, headline.json, {ndcg,recall}_by_k.csv and
    plots/{metric_by_k,metric_by_activity}.png into out_dir."""
    from fusionrec.io import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    table = out_dir / TABLE_FILE
    table.write_text(comparison_markdown(results, cfg))
    return {
        "comparison": table,
        "headline": write_json(out_dir / HEADLINE_FILE, headline(results, cfg)),
        **write_curves(curves, out_dir),
        "plot_by_k": plot_by_k(curves, plots / "metric_by_k.png"),
        "plot_by_activity": plot_by_bucket(results, f"ndcg@{max(cfg.ks)}", plots / "metric_by_activity.png"),
    }
