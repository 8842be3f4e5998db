"""CLI command `evaluate` (thin over fusionrec.evaluation.evaluator.run_evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app, step_config
from fusionrec.config import EvaluateConfig


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="ingested folder (`fusionrec ingest` output)"),
    split: Path = typer.Option(..., "--split", help="split folder (`fusionrec split` output or external files)"),
    out: Path = typer.Option(..., "--out", help="where metrics.json, comparison.md and plots/ are written"),
    model: Path | None = typer.Option(None, "--model", help="model folder (`fusionrec train`); omit: baselines only"),
    features: Path | None = typer.Option(None, "--features", help="features folder; needed by vbpr, content-knn"),
    params: Path = ParamsOption,
    baselines: str | None = typer.Option(None, help="comma-separated baselines (overrides params; '' = none)"),
    champion: Path | None = typer.Option(None, help="earlier evaluate output of the serving model (the gate)"),
) -> None:
    """Rank every item for every test user with the model and the baselines; write metrics and reports."""
    from fusionrec.data.loading import SplitError
    from fusionrec.evaluation.evaluator import run_evaluate
    from fusionrec.features.store import FeatureStoreError

    names = [b.strip() for b in baselines.split(",") if b.strip()] if baselines is not None else None
    cfg = step_config(params, "evaluate", EvaluateConfig, baselines=names,
                      champion=str(champion) if champion is not None else None)
    try:
        result = run_evaluate(data, features, split, model, out, cfg)
    except (SplitError, FeatureStoreError, FileNotFoundError, KeyError, ValueError) as exc:
        typer.secho(f"evaluate failed: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo("evaluate: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in result.metrics.items()))
    if "promotion" in result.outputs:
        decision = json.loads(result.outputs["promotion"].read_text())
        typer.echo(f"promote: {decision['promote']} ({decision['reason']})")
    typer.echo(f"outputs in {out}")
