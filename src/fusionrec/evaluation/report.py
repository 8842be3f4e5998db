"""Human-facing evaluation outputs: the markdown comparison table and PNG plots (matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusionrec.config import EvaluateConfig

TABLE_FILE = "comparison.md"
PLOTS_DIR = "plots"


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


def write_reports(results: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Mapping[str, float]],
                  out_dir: Path, cfg: EvaluateConfig) -> dict[str, Path]:
    """Write comparison.md and plots/{metric_by_k,metric_by_activity}.png into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    table = out_dir / TABLE_FILE
    table.write_text(comparison_markdown(results, cfg))
    return {
        "comparison": table,
        "plot_by_k": plot_by_k(curves, plots / "metric_by_k.png"),
        "plot_by_activity": plot_by_bucket(results, f"ndcg@{max(cfg.ks)}", plots / "metric_by_activity.png"),
    }
