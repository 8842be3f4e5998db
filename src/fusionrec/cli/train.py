"""CLI commands of the model room: `train` and `recommend` (thin over fusionrec.training
and fusionrec.models.batch)."""

from __future__ import annotations

from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app


def _fail(what: str, exc: Exception) -> typer.Exit:
    typer.secho(f"{what} failed: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="ingested folder (output of `fusionrec ingest`)"),
    features: Path = typer.Option(..., "--features", help="features folder (output of `fusionrec featurize`)"),
    split: Path = typer.Option(..., "--split", help="split folder: `fusionrec split` output or external train/valid/test"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    config: Path | None = typer.Option(None, "--config", help="a TrainConfig YAML (e.g. the search's best.yaml)"),
    params: Path = ParamsOption,
) -> None:
    """Train the multi-modal recommender, early-stopped on validation NDCG@20, and save it."""
    import logging

    from fusionrec.config import ConfigError, TrainConfig, load_config_file, load_section
    from fusionrec.training import run_train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config_file(config, TrainConfig) if config else load_section(params, "train")
    except ConfigError as exc:
        typer.secho(f"bad configuration: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    assert isinstance(cfg, TrainConfig)
    try:
        result = run_train(data, features, split, out, cfg)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise _fail("train", exc) from None
    typer.echo("train: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in result.metrics.items()))
    typer.echo(f"model in {out}")


@app.command()
def recommend(
    model: Path = typer.Option(..., "--model", help="model folder (output of `fusionrec train`)"),
    users: Path = typer.Option(..., "--users", help="CSV with a user_id column"),
    out: Path = typer.Option(..., "--out", help="CSV to write: user_id,rank,item_id,score"),
    k: int = typer.Option(20, "--k", min=1, help="recommendations per user"),
    exclude: list[Path] = typer.Option([], "--exclude", help="interactions CSV whose (user, item) pairs are excluded; repeatable"),
    candidates: Path | None = typer.Option(None, "--candidates", help="CSV with an item_id column: rank only these"),
) -> None:
    """Write top-k recommendations in original ids, for checking with any evaluator."""
    from fusionrec.models.batch import RecommendError, run_recommend
    from fusionrec.models.recommender import ModelLoadError

    try:
        n = run_recommend(model, users, out, k, exclude, candidates)
    except (RecommendError, ModelLoadError, FileNotFoundError) as exc:
        raise _fail("recommend", exc) from None
    typer.echo(f"recommend: {n} rows for k={k} written to {out}")
