"""CLI commands of the data steps: `ingest`, `demo-data`, `split` (thin over fusionrec.data)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app, choices, step_config
from fusionrec.cli.progress import fail, progress, summary
from fusionrec.config import ConfigError, DemoConfig, IngestConfig, SplitConfig
from fusionrec.io import StepResult

Protocol = choices("Protocol", SplitConfig.model_fields["protocol"].annotation)


def _run(step: Callable[[], StepResult], out_dir: Path, what: str) -> StepResult:
    """Run a step under a spinner; a user error (bad data, bad config) is one red line and exit 1."""
    from fusionrec.data.loading import SplitError
    from fusionrec.data.tables import IngestError

    started = time.perf_counter()
    try:
        with progress(what):
            result = step()
    except (IngestError, SplitError, ConfigError, FileNotFoundError) as exc:
        raise fail(what, exc) from None
    summary(what, result.metrics, started, out_dir)
    return result


@app.command()
def ingest(
    data_dir: Path = typer.Argument(..., help="dataset folder: items + interactions (csv or parquet)"),
    out_dir: Path = typer.Argument(..., help="where the ingested folder is written"),
    params: Path = ParamsOption,
    text_columns: str | None = typer.Option(None, help="comma-separated item text columns (overrides params)"),
    max_rejected_share: float | None = typer.Option(None, help="fail above this rejected share per file"),
    check_images: bool | None = typer.Option(None, "--check-images/--no-check-images", help="fully decode images"),
) -> None:
    """Validate a dataset folder and write interactions/items/users parquet, rejected rows and a report."""
    from fusionrec.steps import run_ingest

    columns = [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns is not None else None
    cfg = step_config(params, "ingest", IngestConfig, text_columns=columns,
                   max_rejected_share=max_rejected_share, check_images=check_images)
    _run(lambda: run_ingest(data_dir, out_dir, cfg), out_dir, "ingest")


@app.command("demo-data")
def demo_data(
    out_dir: Path = typer.Argument(..., help="where the demo dataset is written"),
    params: Path = ParamsOption,
    seed: int | None = typer.Option(None, help="random seed (overrides params demo.seed)"),
    users: int | None = typer.Option(None, help="number of users"),
    items: int | None = typer.Option(None, help="number of items"),
    interactions: int | None = typer.Option(None, help="number of interactions"),
    image_size: int | None = typer.Option(None, help="rendered image side in pixels"),
) -> None:
    """Generate the deterministic demo dataset (rendered items, simulated users, ground truth)."""
    from fusionrec.steps import run_demo_data

    cfg = step_config(params, "demo", DemoConfig, seed=seed, users=users, items=items,
                   interactions=interactions, image_size=image_size)
    _run(lambda: run_demo_data(out_dir, cfg), out_dir, "demo-data")


@app.command()
def split(
    ingested_dir: Path = typer.Argument(..., help="an ingested folder (output of `fusionrec ingest`)"),
    out_dir: Path = typer.Argument(..., help="where train/valid/test.parquet are written"),
    params: Path = ParamsOption,
    protocol: Protocol | None = typer.Option(None, help="split protocol (overrides params split.protocol)"),  # type: ignore[valid-type]
    seed: int | None = typer.Option(None, help="random seed (overrides params split.seed)"),
    external: Path | None = typer.Option(None, help="folder with train/valid/test files in original ids"),
) -> None:
    """Split interactions into train/valid/test by a protocol, or adopt an external split."""
    from fusionrec.steps import run_split

    cfg = step_config(params, "split", SplitConfig, protocol=protocol.value if protocol else None,  # type: ignore[attr-defined]
                      seed=seed)
    _run(lambda: run_split(ingested_dir, out_dir, cfg, external=external), out_dir, "split")
