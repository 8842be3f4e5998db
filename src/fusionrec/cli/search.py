"""CLI command `search` (registered on fusionrec.cli.app.app): a thin call into run_search."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app


@app.command()
def search(
    data: Path = typer.Option(..., "--data", help="ingested folder (`fusionrec ingest`)"),
    features: Path = typer.Option(..., "--features", help="features folder (`fusionrec featurize`)"),
    split: Path = typer.Option(..., "--split", help="split folder (`fusionrec split`, or external files)"),
    out: Path = typer.Option(..., "--out", help="output folder: best.yaml, trials.csv, plots/, study.db"),
    trials: int | None = typer.Option(None, "--trials", help="trials this run adds (default: search.n_trials)"),
    timeout: float | None = typer.Option(None, "--timeout", help="seconds for this run (default: search.timeout)"),
    workers: int | None = typer.Option(None, "--workers", help="local worker processes on the one study"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL of the study (default sqlite in --out)"),
    study_name: str | None = typer.Option(None, "--study-name", help="same name + storage continues a study"),
    params: Path = ParamsOption,
) -> None:
    """Search encoders, fusion and hyper-parameters with Optuna; write best.yaml for `fusionrec train`.

    Running it again with the same --out (or --storage) and study name continues the study.
    """
    from fusionrec.automl import run_search
    from fusionrec.config import ConfigError, SearchConfig, TrainConfig, load_params

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, folder in (("--data", data), ("--features", features), ("--split", split)):
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder} is not a folder", param_hint=name)
    if trials is not None and trials < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--trials")
    if workers is not None and workers < 1:
        raise typer.BadParameter("must be 1 or more", param_hint="--workers")
    try:
        p = load_params(params)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--params") from None
    cfg = p.search.with_overrides(n_trials=trials, timeout=timeout, workers=workers, storage=storage,
                                  study_name=study_name)
    assert isinstance(cfg, SearchConfig) and isinstance(p.train, TrainConfig)
    try:
        result = run_search(data, features, split, out, cfg, p.train)
    except (ValueError, RuntimeError) as exc:  # config, data or all-trials-failed errors: say what, not a traceback
        typer.secho(f"search failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    m = result.metrics
    typer.echo(f"{m['n_trials']} trials ({m['n_complete']} complete, {m['n_pruned']} pruned, "
               f"{m['n_failed']} failed) in {m['wall_seconds']:.0f}s")
    if "best_trial" in m:
        typer.echo(f"best trial {m['best_trial']}: valid ndcg@20 {m['best_valid_ndcg@20']:.4f}"
                   + (f" (default {m['default_valid_ndcg@20']:.4f})" if "default_valid_ndcg@20" in m else ""))
        typer.echo(f"wrote {out / 'best.yaml'}; train it with `fusionrec train --config {out / 'best.yaml'}`")
    storage_url = cfg.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    typer.echo(f"open the study: optuna-dashboard {storage_url}")
