"""The wheel is all a pod has: every module the components, the monitor and the service import is in it."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest
from tests.wheel_env import REPO, WheelEnv, image_env

pytestmark = pytest.mark.integration

PACKAGES = ("fusionrec", "components", "pipelines", "serving", "harness")
IMPORT_ALL = """
import importlib, json, pkgutil, sys
found = {}
for name in %r:
    package = importlib.import_module(name)
    found[name] = package.__file__
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        found[info.name] = importlib.import_module(info.name).__file__
print(json.dumps({"modules": found, "path": sys.path}))
"""


def pod_env(wheel_env: WheelEnv, home: Path) -> dict[str, str]:
    return {"PATH": f"{wheel_env.bin}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), **image_env(),
            **{k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}


def test_every_module_imports_from_the_wheel_in_an_empty_folder(wheel_env: WheelEnv, tmp_path: Path) -> None:
    work, model = tmp_path / "work", tmp_path / "model"
    work.mkdir(), model.mkdir()
    env = {**pod_env(wheel_env, tmp_path), "FUSIONREC_MODEL": str(model)}  # the service names its model at import
    done = subprocess.run([str(wheel_env.python), "-c", IMPORT_ALL % (PACKAGES,)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    site = str(wheel_env.site_packages())
    outside = {name: path for name, path in report["modules"].items() if not path.startswith(site)}
    assert not outside, f"imported from outside the wheel: {outside}"
    assert {"components.package", "pipelines.submit", "serving.service", "fusionrec.monitoring.monitor",
            "fusionrec.cli"} <= set(report["modules"])
    deps = sysconfig.get_paths()["purelib"]  # the dependencies (this environment's, which may sit in the checkout)
    checkout = [p for p in report["path"] if p.startswith(str(REPO)) and not p.startswith(deps)]
    assert not checkout, f"the checkout is on sys.path: {checkout}"


def test_the_wheel_ships_the_compiled_pipeline(wheel_env: WheelEnv) -> None:
    site = wheel_env.site_packages()
    shipped = site / "pipelines" / "compiled" / "training.yaml"
    assert shipped.read_bytes() == (REPO / "pipelines" / "compiled" / "training.yaml").read_bytes()
    assert (site / "serving" / "bentofile.yaml").is_file()


def test_the_default_task_env_of_local_runs_is_the_images() -> None:
    """pipelines.local.IMAGE_ENV (what `fusionrec pipeline run-local` gives every task, since the
    wheel ships no Dockerfile) must not drift from the image's ENV."""
    from pipelines.local import IMAGE_ENV

    image = image_env()
    assert {k: image.get(k) for k in IMAGE_ENV} == IMAGE_ENV
