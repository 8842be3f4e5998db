"""Run the compiled Kubeflow pipeline on this machine with kfp.local, each task as a pod runs it.

kfp.local's SubprocessRunner starts every task as a subprocess of the caller: same working
directory, same HOME and /tmp, same environment and `sys.path`. A pipeline that passes that
way can still fail on a cluster, where a pod has only its image (the fusionrec wheel and the
lock), an empty working directory, its own /tmp, its env (the image's, the manifest's and its
Secrets') and its input artifacts. `run_local` adds that isolation around kfp.local: each task
runs from `python` (an interpreter that sees only the installed wheel and its dependencies),
in a fresh folder with its own HOME and TMPDIR, with only the env a pod would get, including
the Secrets the compiled pipeline asks for (given here as test values), and a pod's failure to
start when a required Secret is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from pipelines.compile import COMPILED

# Set by the machine, not the image: OpenBLAS needs them on some processors to pick a working kernel.
HOST_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# What the image sets (components/Dockerfile ENV), for runs that do not pass their own.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
             "TRANSFORMERS_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1"}
Secrets = Mapping[str, Mapping[str, str]]  # {secret name: {key: value}}


class TaskStartError(RuntimeError):
    """A task that a cluster would not start (e.g. a Secret it needs does not exist)."""


def secret_env(pipeline_file: Path) -> dict[str, list[dict[str, Any]]]:
    """{component function: [secretAsEnv entries]} from the compiled pipeline's Kubernetes platform spec."""
    spec: dict[str, Any] = {}
    executors: dict[str, Any] = {}
    for doc in yaml.safe_load_all(Path(pipeline_file).read_text()):
        if doc and "platforms" in doc:
            spec = doc["platforms"].get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        elif doc and "deploymentSpec" in doc:
            executors = doc["deploymentSpec"]["executors"]
    out: dict[str, list[dict[str, Any]]] = {}
    for executor, config in spec.items():
        args = executors.get(executor, {}).get("container", {}).get("args", [])
        out.setdefault(_function(args), []).extend(config.get("secretAsEnv", []))
    return out


def _secret_name(entry: dict[str, Any]) -> str:
    if "secretName" in entry:
        return str(entry["secretName"])
    return str(entry.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant", ""))


def resolve_secrets(entries: list[dict[str, Any]], secrets: Secrets, function: str) -> dict[str, str]:
    """The env a task gets from its secretAsEnv entries; a missing required Secret or key stops the task."""
    env: dict[str, str] = {}
    for entry in entries:
        name = _secret_name(entry)
        values = secrets.get(name)
        for pair in entry.get("keyToEnv", []):
            key = pair["secretKey"]
            if values is not None and key in values:
                env[pair["envVar"]] = values[key]
            elif not entry.get("optional", False):
                raise TaskStartError(f"task {function}: Secret {name!r} (key {key!r}) does not exist; "
                                     f"a cluster would not start this pod")
    return env


def _function(command: list[str]) -> str:
    """The component function a lightweight component's command runs."""
    marker = "--function_to_execute"
    return command[command.index(marker) + 1] if marker in command else "task"


@contextlib.contextmanager
def isolated_tasks(root: Path, python: str, env: Mapping[str, str], secrets: Secrets,
                   pipeline_file: Path) -> Iterator[list[Path]]:
    """Make kfp.local start every task as a pod would (see the module doc); yields the task folders."""
    from kfp.local import status, subprocess_task_handler

    wanted = secret_env(pipeline_file)
    counter, lock, folders = itertools.count(1), threading.Lock(), []

    def run(handler: Any) -> Any:
        command = subprocess_task_handler.replace_python_executable(handler.full_command, python)
        function = _function(command)
        with lock:
            folder = Path(root) / f"{next(counter):02d}-{function}"
            folders.append(folder)
        for sub in ("work", "home", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        task_env = {"PATH": os.pathsep.join([str(Path(python).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
                    "HOME": str(folder / "home"), "TMPDIR": str(folder / "tmp"), "LANG": "C.UTF-8",
                    **{k: os.environ[k] for k in HOST_ENV if k in os.environ},
                    **env, **handler.env_vars,
                    **resolve_secrets(wanted.get(function, []), secrets, function)}
        with open(folder / "log.txt", "w") as log:
            code = subprocess.run(command, cwd=folder / "work", env=task_env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        print(f"task {function} ({folder}): exit {code}")
        if code != 0:
            print((folder / "log.txt").read_text()[-6000:])
        return status.Status.SUCCESS if code == 0 else status.Status.FAILURE

    with mock.patch.object(subprocess_task_handler.SubprocessTaskHandler, "run", run):
        yield folders


def run_local(data_dir: Path, workdir: Path, pipeline_file: Path = COMPILED, python: str | None = None,
              env: Mapping[str, str] | None = None, secrets: Secrets | None = None,
              **arguments: Any) -> dict[str, Any]:
    """Execute every task of the compiled pipeline with kfp.local, each isolated as a pod.

    Args:
        data_dir: a dataset folder in the fusionrec contract (e.g. `fusionrec demo-data` output).
        workdir: kfp.local's pipeline root (task outputs) and the tasks' own folders (tasks/NN-name).
        pipeline_file: the compiled pipeline YAML.
        python: the interpreter a pod has (default: this one); give one that sees only the wheel
            and its dependencies to test what the image would run.
        env: the image's env every task gets (default IMAGE_ENV).
        secrets: test values of the Kubernetes Secrets the pipeline reads ({name: {key: value}}).
        arguments: pipeline parameters to override (e.g. trials_per_worker=2).
    Returns:
        {"pipeline_root", "tasks" (the task folders, in start order), "wall_s", "state": "SUCCEEDED"};
        a failed task raises RuntimeError (its log is printed).
    """
    from kfp import components, local

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(workdir / "outputs"),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(pipeline_file))
    started = time.perf_counter()
    with isolated_tasks(workdir / "tasks", python or sys.executable, IMAGE_ENV if env is None else env,
                        secrets or {}, Path(pipeline_file)) as folders:
        pipeline(data_uri=str(Path(data_dir).resolve()), **arguments)  # raise_on_error: a failed task raises
    return {"pipeline_root": str(workdir / "outputs"), "tasks": [str(f) for f in folders],
            "wall_s": round(time.perf_counter() - started, 2), "state": "SUCCEEDED"}
