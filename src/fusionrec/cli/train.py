"""CLI commands of the model: `train` and `recommend` (thin over fusionrec.training
and fusionrec.models.batch)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app
from fusionrec.cli.progress import fail, progress, starts_with, summary


def _fail(what: str, exc: Exception) -> typer.Exit:
    return fail(what, exc)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="ingested folder (output of `fusionrec ingest`)"),
    features: Path = typer.Option(..., "--features", help="features folder (output of `fusionrec featurize`)"),
    split: Path = typer.Option(..., "--split", help="split folder: `fusionrec split` output or external train/valid/test"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    overlay: Path | None = typer.Option(None, "--overlay", help="fields laid over the train config, e.g. the "
                                        "search's best_overlay.yaml (`{}`: the config as it is)"),
    config: Path | None = typer.Option(None, "--config", help="a whole TrainConfig YAML used instead of params.yaml's "
                                       "train section (e.g. a search's study/best.yaml)"),
    report: Path | None = typer.Option(None, "--report", help="also write metrics.json (valid metrics) and "
                                       "history.csv (per epoch) here, for `dvc metrics` and `dvc plots`"),
    params: Path = ParamsOption,
) -> None:
    """Train the multi-modal recommender, early-stopped on validation NDCG@20, and save it.

    What is trained: params.yaml's train section (or --config), with --overlay laid over it.
    """
    from fusionrec.config import ConfigError, TrainConfig, load_config_file, load_section
    from fusionrec.steps import read_overlay, resolve_train_config, run_train, write_train_report

    try:
        base = load_config_file(config, TrainConfig) if config else load_section(params, "train")
        assert isinstance(base, TrainConfig)
        cfg = resolve_train_config(base, overlay)
        laid = read_overlay(overlay) if overlay else {}
    except ConfigError as exc:
        raise fail("train", f"bad configuration: {exc}", code=2) from None
    if laid:
        typer.echo("train: the search's overlay sets " + ", ".join(f"{k}={v}" for k, v in sorted(laid.items())),
                   err=True)
    started = time.perf_counter()
    try:
        with progress("train: epochs", total=cfg.epochs, advance=starts_with("epoch ")):
            result = run_train(data, features, split, out, cfg)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise _fail("train", exc) from None
    if report is not None:
        write_train_report(result, out, report)
    keys = ("valid_ndcg@20", "valid_recall@20", "test_ndcg@20", "best_epoch", "ease_blend")
    summary("train", result.metrics, started, out, keys=keys,
            note=f"{len(laid)} field(s) from {overlay}" if overlay else "")


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

    started = time.perf_counter()
    try:
        n = run_recommend(model, users, out, k, exclude, candidates)
    except (RecommendError, ModelLoadError, FileNotFoundError) as exc:
        raise _fail("recommend", exc) from None
    summary("recommend", {"rows": n, "k": k}, started, out)
