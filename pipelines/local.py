"""Run the compiled Kubeflow pipeline on this machine with kfp.local (no cluster, no Docker)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines.compile import COMPILED


def run_local(data_dir: Path, workdir: Path, pipeline_file: Path = COMPILED, **arguments: Any) -> dict[str, Any]:
    """Execute every task of the compiled pipeline as a subprocess of this Python environment.

    Args:
        data_dir: a dataset folder in the fusionrec contract (e.g. `fusionrec demo-data` output).
        workdir: kfp.local's pipeline root (task outputs) and workspace.
        arguments: pipeline parameters to override (e.g. trials_per_worker=2).
    Returns:
        {"pipeline_root": ..., "wall_s": ..., "state": "SUCCEEDED"} (a failed task raises RuntimeError).
    """
    from kfp import components, local

    workdir.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(workdir / "outputs"),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(pipeline_file))
    started = time.perf_counter()
    pipeline(data_uri=str(Path(data_dir).resolve()), **arguments)  # raise_on_error: a failed task raises
    return {"pipeline_root": str(workdir / "outputs"), "wall_s": round(time.perf_counter() - started, 2),
            "state": "SUCCEEDED"}
