"""Ingest benchmark: throughput and wall time of `run_ingest` on ml100k-mm (images checked),
plus the time to generate the default demo dataset.

    python -m benchmarks.ingest [--data ../shared/datasets/ml100k-mm] [--repeats 3]

Writes benchmarks/reports/ingest.{json,md}. Skips (exit 0, a note) when ml100k-mm is absent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_report
from fusionrec.config import DemoConfig, IngestConfig
from fusionrec.data.demo import run_demo_data
from fusionrec.data.ingest import run_ingest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml100k-mm"


def time_ingest(data: Path, cfg: IngestConfig, repeats: int) -> dict[str, Any]:
    """Median and best wall time of `repeats` ingests (the first also warms the file cache)."""
    walls, metrics = [], {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = run_ingest(data, Path(tmp) / "out", cfg).metrics
            walls.append(time.perf_counter() - start)
    rows = int(metrics["interactions"]) + int(metrics["items"])
    median = statistics.median(walls)
    return {
        "check_images": cfg.check_images, "repeats": repeats, "wall_s_median": round(median, 3),
        "wall_s_best": round(min(walls), 3), "wall_s_all": [round(w, 3) for w in walls],
        "rows": rows, "rows_per_s": round(rows / median, 1),
        "interactions": metrics["interactions"], "items": metrics["items"],
        "images_checked": round(float(metrics["image_coverage"]) * int(metrics["items"])),
        "rejected": metrics["rejected"],
    }


def time_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Wall time of generating a demo dataset of cfg's size."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = run_demo_data(Path(tmp) / "demo", cfg).metrics
        wall = time.perf_counter() - start
    return {"users": cfg.users, "items": cfg.items, "interactions": metrics["interactions"],
            "image_size": cfg.image_size, "wall_s": round(wall, 3)}


def markdown(runs: list[dict[str, Any]], demo: dict[str, Any], data: Path) -> str:
    lines = [
        f"# Ingest benchmark\n\nDataset: `{data.name}` ({runs[0]['interactions']:,} interactions, "
        f"{runs[0]['items']:,} items).\n",
        "| images | wall time (median) | best | rows/s | images checked | rejected |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        mode = "fully decoded" if r["check_images"] else "header only"
        lines.append(f"| {mode} | {r['wall_s_median']:.2f} s | {r['wall_s_best']:.2f} s | "
                     f"{r['rows_per_s']:,.0f} | {r['images_checked']:,} | {r['rejected']} |")
    lines.append(f"\nDemo generation ({demo['users']:,} users, {demo['items']:,} items, "
                 f"{demo['interactions']:,} interactions, {demo['image_size']} px images): {demo['wall_s']:.2f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "interactions.csv").is_file():
        print(f"skipped: no dataset at {args.data}")
        return 0
    runs = [time_ingest(args.data, IngestConfig(check_images=check), args.repeats) for check in (True, False)]
    demo = time_demo(DemoConfig())
    data = {"dataset": str(args.data), "ingest": runs, "demo_data": demo}
    paths = write_report("ingest", data, markdown(runs, demo, args.data), args.out_dir)
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
