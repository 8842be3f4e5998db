"""CLI command `search` (registered on fusionrec.cli.app.app): a thin call into fusionrec.steps.run_search."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app
from fusionrec.cli.progress import fail, progress, starts_with, summary


@app.command()
def search(
    data: Path = typer.Option(..., "--data", help="ingested folder (`fusionrec ingest`)"),
    features: Path = typer.Option(..., "--features", help="features folder (`fusionrec featurize`)"),
    split: Path = typer.Option(..., "--split", help="split folder (`fusionrec split`, or external files)"),
    out: Path = typer.Option(..., "--out", help="output folder: best_overlay.yaml, metrics.json, history.csv and "
                             "study/ (best.yaml, trials.csv, plots/, study.db)"),
    trials: int | None = typer.Option(None, "--trials", help="trials this run adds (default: search.n_trials)"),
    timeout: float | None = typer.Option(None, "--timeout", help="seconds for this run (default: search.timeout)"),
    workers: int | None = typer.Option(None, "--workers", help="local worker processes on the one study"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL of the study (default sqlite in --out)"),
    study_name: str | None = typer.Option(None, "--study-name", help="same name + storage continues a study"),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="run the search, or only write an empty "
                                        "overlay (default: params search.enabled)"),
    params: Path = ParamsOption,
) -> None:
    """Search encoders, fusion and hyper-parameters with Optuna; write the overlay `fusionrec train --overlay` reads.

    The overlay holds the best trial's fields that differ from params.yaml's train section (trial 0
    of the study). Running again with the same --out (or --storage) and study name continues the study.
    """
    from fusionrec.config import ConfigError, SearchConfig, TrainConfig, load_params
    from fusionrec.steps import OVERLAY_FILE, run_search

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
                                  study_name=study_name, enabled=enabled)
    assert isinstance(cfg, SearchConfig) and isinstance(p.train, TrainConfig)
    started = time.perf_counter()
    try:
        with progress("search: trials", total=cfg.n_trials if cfg.enabled else None,
                      advance=starts_with("Trial ")):
            result = run_search(data, features, split, out, cfg, p.train)
    except (ValueError, RuntimeError) as exc:  # config, data or all-trials-failed errors: say what, not a traceback
        raise fail("search", exc) from None
    m = result.metrics
    if not cfg.enabled:
        summary("search", m, started, out / OVERLAY_FILE, keys=("n_trials", "overlay_fields"),
                note="search.enabled is false: train trains params.yaml's train as it is")
        return
    storage_url = cfg.storage or f"sqlite:///{(out / 'study' / 'study.db').resolve()}"
    summary("search", m, started, out / OVERLAY_FILE,
            keys=("n_trials", "n_complete", "n_pruned", "n_failed", "best_trial", "best_valid_ndcg@20",
                  "default_valid_ndcg@20", "overlay_fields"),
            note=f"open the study: optuna-dashboard {storage_url}")
