"""dvc.yaml names things that exist: params sections, package folders, CLI verbs, the step order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from fusionrec.cli import app
from fusionrec.config import Params
from fusionrec.steps import STEPS

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _cli_commands() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def test_every_training_step_is_a_stage_in_order() -> None:
    stages = list(_stages())
    assert [s for s in stages if s in STEPS] == list(STEPS)


def test_stage_params_are_params_yaml_sections() -> None:
    sections = set(Params.model_fields)
    file_sections = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for name, stage in _stages().items():
        for section in stage.get("params", []):
            assert section in sections, f"stage {name} reads unknown params section {section}"
            assert section in file_sections, f"stage {name} reads {section}, absent from params.yaml"


def test_stage_code_deps_exist() -> None:
    for name, stage in _stages().items():
        for dep in stage.get("deps", []):
            if dep.startswith("src/"):
                assert (ROOT / dep).exists(), f"stage {name} depends on missing {dep}"


def test_stage_commands_are_cli_verbs() -> None:
    commands = _cli_commands()
    for name, stage in _stages().items():
        argv = stage["cmd"].split()
        assert argv[0] == "fusionrec", f"stage {name} does not call the fusionrec CLI"
        assert argv[1] in commands, f"stage {name} calls unknown command {argv[1]}"
        assert argv[1] == name, f"stage {name} runs `{argv[1]}`: one verb names one step everywhere"


def test_data_deps_are_outputs_of_earlier_stages() -> None:
    produced: list[str] = []
    for name, stage in _stages().items():
        for dep in stage.get("deps", []):
            if dep.startswith("${root}/"):
                assert any(dep == out or dep.startswith(out + "/") for out in produced), (
                    f"stage {name} reads {dep}, which no earlier stage writes")
        for key in ("outs", "metrics", "plots"):
            produced += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get(key, [])]


@pytest.mark.integration
def test_dvc_reads_the_pipeline_as_a_dag() -> None:
    import shutil
    import subprocess
    import sys

    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc is not installed")
    done = subprocess.run([dvc, "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, done.stderr
    for verb in STEPS:
        assert verb in done.stdout
