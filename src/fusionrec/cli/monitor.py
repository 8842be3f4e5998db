"""CLI commands of monitoring: `monitor`, `retrain`, `simulate`, `loop` (thin over fusionrec.monitoring)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import typer

from fusionrec.cli.app import ParamsOption, app, choices
from fusionrec.config import ConfigError, Params, load_params

MonitorTrigger = choices("MonitorTrigger", Literal["none", "local", "kfp"])
RetrainTrigger = choices("RetrainTrigger", Literal["local", "kfp"])

if TYPE_CHECKING:
    from fusionrec.monitoring.retrain import RunSubmitter


def _params(path: Path, **monitor_overrides: Any) -> Params:
    try:
        params = load_params(path)
    except ConfigError as exc:
        typer.secho(str(exc), err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    overrides = {k: v for k, v in monitor_overrides.items() if v is not None}
    return params.model_copy(update={"monitor": params.monitor.with_overrides(**overrides)}) if overrides else params


def _fail(message: str) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _kfp_submitter(host: str, configured: str) -> RunSubmitter:
    """A RunSubmitter: `pipelines.submit.submit` bound to the endpoint and the compiled pipeline.

    A missing pipeline package fails here, before retrain merges any feedback.
    """
    import functools

    from pipelines.compile import pipeline_file as locate
    from pipelines.submit import submit

    pipeline_file = locate(configured)
    if not pipeline_file.is_file():
        _fail(f"kfp pipeline package {configured} not found in {Path.cwd()} nor in the installed wheel "
              "(monitor.pipeline_package); run `fusionrec pipeline compile`")
    return functools.partial(submit, host, pipeline_file=pipeline_file, experiment="fusionrec-retrain")


def _champion_dir(store: str, params: Params) -> Path:
    """The folder of the model the champion pointer names (what every replica serves), fetched into
    serve.model_cache when it lives in an object store; fails when nothing was promoted yet."""
    from fusionrec.monitoring.rollout import RolloutError, fetch_model
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(store) as fs:
        champion = ServingState(fs).champion()
    if champion is None:
        _fail("no champion in the store yet (nothing promoted): pass --model-dir, the model the service runs")
    from fusionrec.inference.startup import model_cache

    try:
        return fetch_model(champion.uri, model_cache(params.serve))
    except RolloutError as exc:
        _fail(f"the champion pointer names {champion.uri}, which cannot be read here: {exc}")


def _retrain(store: str, data: Path, champion: Path | None, work: Path, params: Params, trigger: str,
             kfp_host: str, data_uri: str, reason: str) -> dict[str, Any]:
    from serving.store import BentoStore

    from fusionrec.monitoring.merge import MergeError
    from fusionrec.monitoring.retrain import RetrainError, retrain
    from fusionrec.monitoring.state import ServingState, StateError
    from fusionrec.monitoring.store import FeedbackStore
    from fusionrec.monitoring.windows import retrain_rows

    submitter: RunSubmitter | None = None
    if trigger == "kfp":
        if not kfp_host:
            _fail("--trigger kfp needs --kfp-host URL (the Kubeflow Pipelines endpoint)")
        submitter = _kfp_submitter(kfp_host, params.monitor.pipeline_package)
    # the store's database also holds the serving state: its runtime items join the merge and a
    # promotion moves its champion pointer, the one every replica reading this database follows
    with FeedbackStore(store) as fs:
        feedback, served = retrain_rows(fs.engine, data)  # the rows after the dataset's watermarks
        try:
            record = retrain(data, feedback, champion, work, params, trigger=trigger, reason=reason,
                             data_uri=data_uri, served=served, submitter=submitter, model_store=BentoStore(),
                             state=ServingState(fs))
        except (MergeError, RetrainError, StateError, FileNotFoundError) as exc:
            _fail(f"retrain failed: {exc}")
    merge, decision = record["merge"], record.get("decision", {})
    typer.echo(f"merged {merge['merged']} feedback events ({merge['new_events']} new, watermark {merge['last_id']})")
    typer.echo(f"decision: promote={decision.get('promote')} ({decision.get('reason')})")
    typer.echo(f"record: {record['run_dir']}/record.json")
    return record


@app.command()
def monitor(
    store: str = typer.Option(..., "--store", help="feedback store: SQLAlchemy URL or SQLite file"),
    model_dir: Path | None = typer.Option(None, "--model-dir",
                                          help="the model the service runs (default: the store's champion pointer)"),
    out: Path = typer.Option(..., "--out", help="reports, decision.json and index.html go here"),
    trigger: MonitorTrigger = typer.Option("none", "--trigger", help="what to do when retraining is due: nothing, "  # type: ignore[valid-type]
                                           "retrain here, or submit the Kubeflow pipeline"),
    kfp_host: str = typer.Option("", "--kfp-host", help="Kubeflow Pipelines endpoint (--trigger kfp)"),
    params: Path = ParamsOption,
    data: Path | None = typer.Option(None, "--data", help="dataset folder the feedback is merged into (--trigger local|kfp)"),
    work: Path | None = typer.Option(None, "--work", help="retraining runs folder (default: OUT/retrain)"),
    data_uri: str = typer.Option("", "--data-uri", help="where the cluster reads the merged dataset (--trigger kfp)"),
    service_url: str | None = typer.Option(None, "--service-url", help="service to reload after a promotion"),
) -> None:
    """Compare the feedback windows, write this run's reports into OUT/runs/<UTC time>/ and the
    history page OUT/index.html; merge the feedback and retrain when due."""
    from fusionrec.monitoring import history
    from fusionrec.monitoring.monitor import run_monitor

    trigger = trigger.value  # type: ignore[attr-defined]
    if trigger != "none" and data is None:
        _fail(f"--trigger {trigger} needs --data DIR (the dataset the feedback is merged into)")
    if trigger == "kfp" and not data_uri:
        _fail("--trigger kfp needs --data-uri URI (where the Kubeflow pods read the dataset --data holds)")
    cfg = _params(params, service_url=service_url)
    model_dir = model_dir or _champion_dir(store, cfg)
    result = run_monitor(store, model_dir, out, cfg.monitor)
    decision = json.loads(Path(result.outputs["decision"]).read_text())
    typer.echo(f"retrain: {decision['retrain']} {decision['reasons'] or decision['detail'] or ''}")
    typer.echo(f"report: {result.outputs['report']}")
    typer.echo(f"history: {result.outputs['index']}")
    if decision["retrain"] and trigger != "none":
        assert data is not None
        run = Path(result.outputs["run"]).relative_to(out).as_posix()
        try:
            record = _retrain(store, data, model_dir, work or out / "retrain", cfg, trigger, kfp_host, data_uri,
                              ",".join(decision["reasons"]))
        except typer.Exit:
            history.record_retraining(out, run, {"error": "failed: see the monitor's log"})
            raise
        except Exception as exc:  # e.g. the Kubeflow Pipelines API unreachable: the history says so too
            history.record_retraining(out, run, {"error": f"{type(exc).__name__}: {exc}"[:500]})
            _fail(f"retrain failed after this run's report ({result.outputs['report']}): {type(exc).__name__}: {exc}")
        outcome = record.get("kfp") or record.get("decision") or {}
        history.record_retraining(out, run, {**outcome, "merged": record["merge"]["merged"]})


@app.command()
def retrain(
    store: str = typer.Option(..., "--store", help="feedback store: SQLAlchemy URL or SQLite file"),
    data: Path = typer.Option(..., "--data", help="dataset folder the feedback is merged into (exactly once)"),
    champion: Path | None = typer.Option(None, "--champion", help="the serving model's folder"),
    work: Path = typer.Option(..., "--work", help="retraining runs folder (runs/<stamp>/, runs.jsonl)"),
    trigger: RetrainTrigger = typer.Option("local", "--trigger", help="retrain here, or submit the Kubeflow "  # type: ignore[valid-type]
                                           "pipeline"),
    kfp_host: str = typer.Option("", "--kfp-host", help="Kubeflow Pipelines endpoint (--trigger kfp)"),
    data_uri: str = typer.Option("", "--data-uri", help="where the cluster reads the merged dataset (--trigger kfp)"),
    service_url: str | None = typer.Option(None, "--service-url", help="service to reload after a promotion"),
    reason: str = typer.Option("manual", "--reason", help="kept in the run's record"),
    params: Path = ParamsOption,
) -> None:
    """Merge new feedback, retrain, gate the challenger against the champion, promote when better."""
    record = _retrain(store, data, champion, work, _params(params, service_url=service_url),
                      trigger.value, kfp_host, data_uri, reason)  # type: ignore[attr-defined]
    outcome = record.get("kfp") or record.get("decision") or {}
    typer.echo(f"retrain: {json.dumps(outcome, default=str)} -> {record.get('run_dir')}")


@app.command()
def simulate(
    url: str = typer.Option(..., "--url", help="the running service, e.g. http://127.0.0.1:3000"),
    demo: Path = typer.Option(..., "--demo", help="the demo dataset folder (its truth/ drives the users)"),
    out: Path | None = typer.Option(None, "--out", help="write simulation.json here"),
    rounds: int | None = typer.Option(None, "--rounds", help="simulation rounds (default: params simulate.rounds)"),
    users: int | None = typer.Option(None, "--users", help="simulated users per round (default: params simulate.users)"),
    shift_at: int | None = typer.Option(None, "--shift-at", help="round at which tastes shift (-1: never)"),
    params: Path = ParamsOption,
) -> None:
    """Drive a running service with simulated demo users; report click-through per round."""
    from harness.simulate import simulate as run_simulation
    from harness.simulate import summarize

    p = load_params(params)
    cfg = p.simulate.with_overrides(rounds=rounds, users=users, shift_at=shift_at)
    token = os.environ.get(p.serve.token_env)
    result = run_simulation(url, demo, cfg, token, out,  # type: ignore[arg-type]
                            on_round=lambda s: typer.echo(f"round {s.round:3d} shifted={s.shifted!s:5} "
                                                          f"ctr={s.ctr:.4f} errors={s.errors}"))
    summary = summarize(result, cfg)  # type: ignore[arg-type]
    typer.echo(f"ctr before shift {summary['ctr_before_shift']}, after {summary['ctr_after_shift']}, "
               f"errors {summary['errors']}")


@app.command()
def loop(
    out: Path = typer.Option(Path("work/loop"), "--out", help="working folder of the demo loop"),
    params: Path = ParamsOption,
    rounds_before: int = typer.Option(4, "--rounds-before", help="rounds before the taste shift"),
    max_shifted: int = typer.Option(14, "--max-shifted", help="shifted rounds at most, waiting for a promotion"),
    rounds_after: int = typer.Option(4, "--rounds-after", help="rounds after the promotion"),
    overlay: Path | None = typer.Option(None, "--overlay", help="a params file of sections laid over --params "
                                        "(default: the demo loop's harness/demo_loop.yaml; '' = --params as it is)"),
) -> None:
    """The closed loop: serve -> simulate -> shift -> monitor detects -> retrain -> promote -> recovery.

    The base model and every challenger train the configuration --params and --overlay resolve to,
    as `dvc repro` would (the search's overlay included when search.enabled).
    """
    from harness.loop import DEMO_OVERLAY, overlay_params, run_loop
    from serving.store import BentoStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        p = overlay_params(load_params(params), DEMO_OVERLAY if overlay is None else overlay)
    except ConfigError as exc:
        _fail(f"loop failed: {exc}")
    result = run_loop(out, p, rounds_before, max_shifted, rounds_after, model_store=BentoStore())
    n = result["numbers"]
    typer.echo(f"ctr before shift {n['ctr_before_shift']}, after shift {n['ctr_after_shift']}, "
               f"after promotion {n['ctr_after_promotion']} (recovery {n['recovery']})")
    typer.echo(f"events until detection {n.get('events_until_detection')}, retrain {n.get('retrain_wall_s')} s, "
               f"service on the new champion after {n.get('swap_wait_s')} s, failed requests during the swap "
               f"{n['failed_requests_swap']}, in all rounds {n['failed_requests_rounds']}")
    typer.echo(f"plot: {out / 'ctr.png'}; numbers: {out / 'loop.json'}")
