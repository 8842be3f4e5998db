"""CLI commands: `package` (model folder -> BentoML model store) and `serve` (bentoml serve)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app, step_config
from fusionrec.cli.progress import fail, progress, summary
from fusionrec.config import PackageConfig, ServeConfig


@app.command()
def package(
    model_dir: Path = typer.Argument(..., help="model folder written by `fusionrec train`"),
    out_dir: Path = typer.Argument(..., help="where package.json (the stored tag + metadata) is written"),
    params: Path = ParamsOption,
    model_name: str | None = typer.Option(None, help="BentoML model name (overrides params package.model_name)"),
    promotion: Path | None = typer.Option(None, "--promotion", help="promotion.json written by `fusionrec evaluate`: "
                                          "a model it rejected is refused (exit 1)"),
    force: bool = typer.Option(False, "--force", help="package even when --promotion rejected the model"),
    roll_out: str | None = typer.Option(None, "--roll-out", help="feedback store URL: also publish the model under "
                                        "--models-root and move that database's champion pointer to it (older champions' "
                                        "folders there beyond monitor.keep_models are deleted)"),
    models_root: str | None = typer.Option(None, "--models-root", help="where --roll-out publishes (default: "
                                           "params monitor.models_root), a folder every replica reads or a URI"),
) -> None:
    """Store a trained model in the BentoML model store ($BENTOML_HOME) with its metadata, if the gate allows.

    With --roll-out, every serving replica on that database swaps to it within one poll interval.
    """
    from serving.store import BentoStore

    from fusionrec.config import load_params
    from fusionrec.monitoring.rollout import Rollout, RolloutError
    from fusionrec.monitoring.state import StateError
    from fusionrec.packaging import PackageError
    from fusionrec.steps import run_package

    cfg = step_config(params, "package", PackageConfig, model_name=model_name or None)
    rollout = None
    if roll_out:  # only a roll-out reads the monitor section (the DVC stage declares `package` alone)
        monitor = load_params(params).monitor
        root = models_root if models_root is not None else monitor.models_root
        if not root:
            raise fail("package", "--roll-out needs --models-root (or monitor.models_root): a folder or URI every "
                       "replica reads", code=2)
        rollout = Rollout(root, roll_out, monitor.keep_models)
    started = time.perf_counter()
    try:
        with progress("package"):
            result = run_package(model_dir, out_dir, cfg, BentoStore(), promotion=promotion, force=force,
                                 rollout=rollout, source="fusionrec package --roll-out")
    except (PackageError, RolloutError, StateError) as exc:
        raise fail("package", exc) from None
    record = json.loads(result.outputs["package"].read_text())
    champion = record.get("champion")
    note = f"stored {record['tag']}" + (f"; champion: {champion['model_version']} at {champion['uri']}"
                                        if champion else "")
    summary("package", result.metrics, started, out_dir, keys=("size_mb",), note=note)


def serve_command(host: str, port: int) -> list[str]:
    """The `bentoml serve` command line for the fusionrec service (the venv's bentoml first).

    No --working-dir: BentoML would chdir into it. `serving.service` and `fusionrec` import as
    installed (a wheel, or the checkout's editable install), so the service runs in the caller's
    own working folder, as it does in a pod, and needs no source tree or PYTHONPATH.
    """
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    return [bentoml, "serve", "serving.service:FusionRec", "--host", host, "--port", str(port)]


@app.command()
def serve(
    model: str | None = typer.Option(None, help="model folder or BentoML tag (default: <package.model_name>:latest)"),
    port: int | None = typer.Option(None, help="port (default: params serve.port, 3000)"),
    host: str | None = typer.Option(None, help="bind address (default: params serve.host, 127.0.0.1)"),
    params: Path = ParamsOption,
) -> None:
    """Run the BentoML service (recommend, similar, add_item, feedback, metadata, reload) until Ctrl-C or SIGTERM.

    The command becomes `bentoml serve` (exec), so a stop signal reaches BentoML itself and it
    shuts its workers down gracefully; a parent that only waited would die and orphan them.
    """
    cfg = step_config(params, "serve", ServeConfig, host=host, port=port)
    env = dict(os.environ)
    if model:
        env["FUSIONREC_MODEL"] = str(Path(model).resolve()) if Path(model).is_dir() else model
    env.setdefault("FUSIONREC_PARAMS", str(params.resolve()))
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    cmd = serve_command(cfg.host, cfg.port)
    typer.echo(f"serving on http://{cfg.host}:{cfg.port} ({' '.join(cmd)})")
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, env)
