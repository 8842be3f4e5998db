"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint (one run, or a recurring one)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.compile import COMPILED
from pipelines.training import PIPELINE_NAME

TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's own variable for the projected ServiceAccount token
TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # where kfp looks when TOKEN_ENV is unset
NAMESPACE_ENV = "KFP_NAMESPACE"  # the profile namespace in a multi-user install (set on the monitor pod)
CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,#LW-]+$")


def check_cron(expression: str) -> str:
    """kfp's recurring runs take 6-field cron (seconds first): say so when given 5 fields."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines expects 6 "
            "(second minute hour day-of-month month day-of-week), e.g. '0 0 3 * * *' for 03:00 daily"
        )
    bad = [f for f in fields if not CRON_FIELD.match(f)]
    if bad:
        raise ValueError(f"cron {expression!r}: fields {bad} are not cron syntax (digits, names, * ? / , - L W #)")
    return expression


def client_options(host: str, namespace: str | None = None) -> dict[str, Any]:
    """kfp.Client keyword arguments: the host, the namespace and, inside a pod, the token.

    The namespace is the argument, else $KFP_NAMESPACE, else kfp's default. Where the projected
    ServiceAccount token exists ($KF_PIPELINES_SA_TOKEN_PATH or kfp's default path), the client
    authenticates with it, as multi-user Kubeflow Pipelines requires.
    """
    options: dict[str, Any] = {"host": host}
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or None
    if namespace:
        options["namespace"] = namespace
    if Path(os.environ.get(TOKEN_ENV) or TOKEN_PATH).is_file():
        from kfp.client import ServiceAccountTokenVolumeCredentials

        options["credentials"] = ServiceAccountTokenVolumeCredentials()
    return options


def _kfp_client(**options: Any) -> Any:
    import kfp

    return kfp.Client(**options)


def submit(host: str, arguments: dict[str, Any], pipeline_file: Path = COMPILED, experiment: str = "fusionrec",
           recurring: str | None = None, namespace: str | None = None,
           make_client: Callable[..., Any] = _kfp_client) -> dict[str, str]:
    """Create a run (or, with a 6-field cron, a recurring run) from the compiled pipeline.

    Args:
        arguments: pipeline parameters (data_uri, the step configs, ...; never a credential).
        recurring: 6-field cron (seconds first) for a recurring run; None = one run now.
        make_client: builds the client from `client_options` (tests pass a fake).
    Returns:
        {"kind": "run"|"recurring", "id": ..., "host": ..., "url": the run's page in the Kubeflow UI}.
    """
    cron = check_cron(recurring) if recurring is not None else None  # before any network call
    if not Path(pipeline_file).is_file():
        raise FileNotFoundError(f"{pipeline_file} not found: run `fusionrec pipeline compile` first")
    options = client_options(host, namespace)
    client = make_client(**options)
    namespace = options.get("namespace")
    if cron is None:
        run = client.create_run_from_pipeline_package(
            str(pipeline_file), arguments=arguments, experiment_name=experiment, namespace=namespace
        )
        return {"kind": "run", "id": run.run_id, "host": host, "url": run_url(host, run.run_id)}
    exp = client.create_experiment(experiment, namespace=namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=f"{PIPELINE_NAME}-recurring", cron_expression=cron,
        params=arguments, pipeline_package_path=str(pipeline_file), max_concurrency=1, no_catchup=True,
    )
    return {"kind": "recurring", "id": job.recurring_run_id, "host": host,
            "url": run_url(host, job.recurring_run_id, recurring=True)}


def run_url(host: str, run_id: str, recurring: bool = False) -> str:
    """The page of a run (or a recurring run) in the Kubeflow Pipelines UI, as kfp.Client links it."""
    page = "recurringrun" if recurring else "runs"
    return f"{host.rstrip('/')}/#/{page}/details/{run_id}"
