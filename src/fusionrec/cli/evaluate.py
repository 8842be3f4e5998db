"""CLI command `evaluate` (thin over fusionrec.steps.run_evaluate)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app, step_config
from fusionrec.cli.progress import fail, progress, starts_with, summary
from fusionrec.config import EvaluateConfig


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="ingested folder (`fusionrec ingest` output)"),
    split: Path = typer.Option(..., "--split", help="split folder (`fusionrec split` output or external files)"),
    out: Path = typer.Option(..., "--out", help="where headline.json, metrics.json, comparison.md, the by-K CSVs "
                             "and plots/ are written"),
    model: Path | None = typer.Option(None, "--model", help="model folder (`fusionrec train`); omit: baselines only"),
    features: Path | None = typer.Option(None, "--features", help="features folder; needed by vbpr, content-knn"),
    params: Path = ParamsOption,
    baselines: str | None = typer.Option(None, help="comma-separated baselines (overrides params; '' = none)"),
    champion: Path | None = typer.Option(None, help="earlier evaluate output of the serving model (the gate)"),
) -> None:
    """Rank every item for every test user with the model and the baselines; write metrics and reports."""
    from fusionrec.data.loading import SplitError
    from fusionrec.evaluation.report import HEADLINE_FILE
    from fusionrec.features.store import FeatureStoreError
    from fusionrec.steps import run_evaluate

    names = [b.strip() for b in baselines.split(",") if b.strip()] if baselines is not None else None
    cfg = step_config(params, "evaluate", EvaluateConfig, baselines=names,
                      champion=str(champion) if champion is not None else None)
    started = time.perf_counter()
    try:
        with progress("evaluate: fitting baselines", total=len(cfg.baselines), advance=starts_with("baseline "),
                      after="evaluate: ranking every item for every test user"):
            result = run_evaluate(data, features, split, model, out, cfg)
    except (SplitError, FeatureStoreError, FileNotFoundError, KeyError, ValueError) as exc:
        raise fail("evaluate", exc) from None
    headline = json.loads((out / HEADLINE_FILE).read_text())
    note = ""
    if "promotion" in result.outputs:
        decision = json.loads(result.outputs["promotion"].read_text())
        note = f"promote: {decision['promote']} ({decision['reason']})"
    keys = (cfg.promote_metric, f"recall@{max(cfg.ks)}", f"margin_{cfg.promote_metric}")
    summary("evaluate", headline, started, out, keys=keys, note=note)
