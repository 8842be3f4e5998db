"""CLI commands: `fusionrec pipeline compile | submit | run-local` (the Kubeflow path).

The kfp code lives in the adapter package `pipelines/`; these commands only call it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app

pipeline_app = typer.Typer(help="Compile, submit or locally run the Kubeflow training pipeline.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


def _arguments(params: Path, data_uri: str | None) -> dict:
    """Pipeline arguments from a params file: every step's section, with Nones dropped."""
    from pipelines.training import without_nones

    from fusionrec.config import load_params

    p = without_nones(load_params(params).model_dump(mode="json"))
    args = {f"{name}_cfg": p[name] for name in ("ingest", "split", "featurize", "search", "train", "evaluate", "package")}
    args["search_workers"] = list(range(p["pipeline"]["search_workers"]))
    args["trials_per_worker"] = p["pipeline"]["trials_per_worker"]
    if data_uri:
        args["data_uri"] = data_uri
    return args


@pipeline_app.command("compile")
def compile_cmd(out: Path = typer.Option(None, help="Output YAML (default pipelines/compiled/training.yaml)"),
                params: Path = ParamsOption) -> None:
    """Compile the pipeline with params.yaml's sections as defaults."""
    from pipelines.compile import COMPILED, compile_pipeline

    path = compile_pipeline(out or COMPILED, params)
    typer.echo(f"compiled {path}")


@pipeline_app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., help="Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80"),
    data_uri: str = typer.Option(..., help="Dataset folder URI the cluster can read (gs://, s3://, minio://)"),
    study_db: str = typer.Option("", envvar="FUSIONREC_STUDY_DB", help="PostgreSQL URL shared by the search workers"),
    recurring: str = typer.Option(None, help="6-field cron for a recurring run, e.g. '0 0 3 * * *'"),
    experiment: str = typer.Option("fusionrec", help="Kubeflow experiment name"),
    namespace: str = typer.Option(None, help="Kubeflow namespace (multi-user installs)"),
    params: Path = ParamsOption,
) -> None:
    """Submit the compiled pipeline as one run, or schedule it with --recurring."""
    from pipelines.submit import submit

    args = _arguments(params, data_uri)
    args["study_db"] = study_db
    typer.echo(json.dumps(submit(host, args, recurring=recurring, experiment=experiment, namespace=namespace)))


@pipeline_app.command("run-local")
def run_local_cmd(
    workdir: Path = typer.Option(Path("work/kfp-local"), help="kfp.local outputs and workspace"),
    data: Path = typer.Option(None, help="Dataset folder (default: a tiny generated demo)"),
    params: Path = ParamsOption,
) -> None:
    """Run the compiled pipeline through kfp.local.SubprocessRunner on this machine."""
    from pipelines.local import run_local

    from fusionrec.config import load_params
    from fusionrec.steps import run_demo_data

    if data is None:
        data = workdir / "demo"
        tiny = load_params(params).demo.with_overrides(users=60, items=120, interactions=2400)
        run_demo_data(data, tiny)  # type: ignore[arg-type]
    args = _arguments(params, None)
    result = run_local(data, workdir, **args)
    typer.echo(json.dumps(result, indent=2))
