"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint (one run, or a recurring one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.compile import COMPILED
from pipelines.training import PIPELINE_NAME


def check_cron(expression: str) -> str:
    """kfp's recurring runs take 6-field cron (seconds first): say so when given 5 fields."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines expects 6 "
            "(second minute hour day-of-month month day-of-week), e.g. '0 0 3 * * *' for 03:00 daily"
        )
    return expression


def submit(host: str, arguments: dict[str, Any], pipeline_file: Path = COMPILED, experiment: str = "fusionrec",
           recurring: str | None = None, namespace: str | None = None) -> dict[str, str]:
    """Create a run (or, with a 6-field cron, a recurring run) from the compiled pipeline.

    Returns:
        {"kind": "run"|"recurring", "id": ..., "host": ...}.
    """
    import kfp

    client = kfp.Client(host=host, namespace=namespace)
    if recurring is None:
        run = client.create_run_from_pipeline_package(
            str(pipeline_file), arguments=arguments, experiment_name=experiment, namespace=namespace
        )
        return {"kind": "run", "id": run.run_id, "host": host}
    cron = check_cron(recurring)
    exp = client.create_experiment(experiment, namespace=namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=f"{PIPELINE_NAME}-recurring", cron_expression=cron,
        params=arguments, pipeline_package_path=str(pipeline_file), max_concurrency=1,
    )
    return {"kind": "recurring", "id": job.recurring_run_id, "host": host}
