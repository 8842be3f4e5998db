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
    from pipelines.training import step_arguments

    from fusionrec.config import load_params

    p = load_params(params)
    args = {**step_arguments(p), "trials_per_worker": p.pipeline.trials_per_worker}
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
    recurring: str = typer.Option(None, help="6-field cron for a recurring run, e.g. '0 0 3 * * *'"),
    experiment: str = typer.Option("fusionrec", help="Kubeflow experiment name"),
    namespace: str = typer.Option(None, help="Kubeflow namespace (multi-user installs)"),
    package: Path = typer.Option(None, help="A compiled pipeline YAML (default: compiled now from --params)"),
    params: Path = ParamsOption,
) -> None:
    """Submit the pipeline as one run (or schedule it with --recurring); prints the run's URL.

    The pipeline is compiled from --params, so its `pipeline` section (the search's shape, the
    study database's Secret, resources, retries) is what runs. The study database URL is never
    a run parameter: the search pods read it from the Secret named by `pipeline.study_secret`.
    """
    import tempfile

    from pipelines.compile import compile_pipeline
    from pipelines.submit import submit

    from fusionrec.config import load_params

    cfg = load_params(params).pipeline
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_file = package or compile_pipeline(Path(tmp) / "training.yaml", params)
        run = submit(host, _arguments(params, data_uri), pipeline_file=pipeline_file, recurring=recurring,
                     experiment=experiment, namespace=namespace)
    search = (f"{cfg.search_workers} search pods on the study in Secret {cfg.study_secret!r}" if cfg.study_secret
              else f"one search pod with {cfg.search_workers} worker processes (set pipeline.study_secret to fan out)")
    typer.echo(f"submitted {run['kind']} {run['id']} ({search})")
    typer.echo(run["url"])
    typer.echo(json.dumps(run))


@pipeline_app.command("run-local")
def run_local_cmd(
    workdir: Path = typer.Option(Path("work/kfp-local"), help="kfp.local outputs and workspace"),
    data: Path = typer.Option(None, help="Dataset folder (default: a tiny generated demo)"),
    params: Path = ParamsOption,
) -> None:
    """Run the pipeline through kfp.local on this machine, each task isolated as a pod would be.

    A pipeline compiled with `pipeline.study_secret` needs that Secret's value here too: use the
    one-pod search (the default) locally.
    """
    from pipelines.compile import compile_pipeline
    from pipelines.local import run_local

    from fusionrec.config import load_params
    from fusionrec.steps import run_demo_data

    if data is None:
        data = workdir / "demo"
        tiny = load_params(params).demo.with_overrides(users=60, items=120, interactions=2400)
        run_demo_data(data, tiny)  # type: ignore[arg-type]
    args = _arguments(params, None)
    result = run_local(data, workdir, pipeline_file=compile_pipeline(workdir / "training.yaml", params), **args)
    typer.echo(json.dumps(result, indent=2))
