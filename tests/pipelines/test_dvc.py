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


def _dvc() -> str:
    """The dvc next to this Python (the venv's), else one on PATH."""
    import shutil
    import sys

    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    assert dvc is not None, "dvc is in requirements.lock"
    return dvc


@pytest.mark.integration
def test_dvc_reads_the_pipeline_as_a_dag() -> None:
    import subprocess

    dvc = _dvc()
    done = subprocess.run([dvc, "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, done.stderr
    for verb in STEPS:
        assert verb in done.stdout


@pytest.mark.integration
def test_bytecode_does_not_make_a_code_dep_look_changed(tmp_path: Path) -> None:
    """Running the code writes __pycache__ into the stages' code deps; with the repo's .dvcignore a
    finished stage stays up to date, so `dvc repro` does not run it again."""
    import shutil
    import subprocess

    dvc = _dvc()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def run(*args: str) -> str:
        done = subprocess.run([dvc, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("init", "--no-scm", "-q")
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "step.py").write_text("VALUE = 1\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"step": {"cmd": "echo done > out.txt", "deps": ["pkg"], "outs": ["out.txt"]}}}))
    run("repro", "-q")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "step.cpython-311.pyc").write_bytes(b"\x00bytecode")

    assert "up to date" in run("status")
    (tmp_path / "pkg" / "step.py").write_text("VALUE = 2\n")  # a real change still counts
    assert "modified" in run("status")

class _Recorder:
    """A Params that notes which sections are read."""

    def __init__(self, params: Params, seen: set[str]) -> None:
        self._params, self._seen = params, seen

    def __getattr__(self, name: str) -> object:
        if name in Params.model_fields:
            self._seen.add(name)
        return getattr(self._params, name)


def _stub_step(verb: str, calls: list[tuple[str, tuple]]):  # noqa: ANN202
    """A stand-in for fusionrec.steps.run_<verb>: records its arguments, writes what the CLI reads back."""
    import json

    from fusionrec.io import StepResult

    def run(*args: object, **_kw: object) -> StepResult:
        calls.append((verb, args))
        outputs: dict[str, Path] = {}
        if verb == "evaluate":
            out = Path(str(args[4]))
            out.mkdir(parents=True, exist_ok=True)
            (out / "headline.json").write_text("{}")
        if verb == "package":
            out = Path(str(args[1]))
            out.mkdir(parents=True, exist_ok=True)
            outputs["package"] = out / "package.json"
            outputs["package"].write_text(json.dumps({"tag": "fusionrec:test", "champion": None}))
        return StepResult(metrics={"size_mb": 0.0} if verb == "package" else {}, outputs=outputs)

    return run


def test_each_stage_declares_exactly_the_params_sections_its_command_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage's command runs (the steps stubbed) with a params file that records the sections
    read; a section read but not declared would leave DVC blind to a change, one declared but not
    read would rerun the stage for nothing."""
    from typer.testing import CliRunner

    import fusionrec.config
    import fusionrec.steps

    real_load = fusionrec.config.load_params
    seen: set[str] = set()
    monkeypatch.setattr(fusionrec.config, "load_params", lambda path="params.yaml": _Recorder(real_load(path), seen))
    calls: list[tuple[str, tuple]] = []
    for verb in ("demo_data", *STEPS):
        monkeypatch.setattr(fusionrec.steps, f"run_{verb}", _stub_step(verb, calls))
    root = tmp_path / "work"
    for folder in ("data", "ingested", "split", "features", "model", "search"):
        (root / folder).mkdir(parents=True)
    (root / "search" / "best_overlay.yaml").write_text("{}\n")
    (root / "evaluation").mkdir()
    (root / "evaluation" / "promotion.json").write_text('{"promote": true, "reason": "test"}')
    monkeypatch.chdir(ROOT)  # the commands read ./params.yaml, as under `dvc repro`
    runner = CliRunner()
    for name, stage in _stages().items():
        seen.clear()
        argv = stage["cmd"].replace("${root}", str(root)).split()[1:]
        res = runner.invoke(app, argv)
        assert res.exit_code == 0, f"stage {name}: {res.output}"
        assert calls and calls[-1][0] == name.replace("-", "_"), f"stage {name} ran {calls[-1:]}"
        assert seen == set(stage.get("params", [])), f"stage {name} reads {sorted(seen)}, declares {stage.get('params')}"


def test_train_stage_trains_params_train_with_the_search_overlay(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The train stage's command trains params.yaml's train section with the declared overlay laid over it."""
    from typer.testing import CliRunner

    import fusionrec.steps
    from fusionrec.config import TrainConfig, load_params

    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(fusionrec.steps, "run_train", _stub_step("train", calls))
    root = tmp_path / "work"
    (root / "search").mkdir(parents=True)
    (root / "search" / "best_overlay.yaml").write_text("# the best trial\ndim: 8\nease_blend: null\n")
    monkeypatch.chdir(ROOT)
    argv = _stages()["train"]["cmd"].replace("${root}", str(root)).split()[1:]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    (_, args), = calls
    cfg = args[4]
    assert isinstance(cfg, TrainConfig)
    expected = load_params(ROOT / "params.yaml").train.model_dump() | {"dim": 8, "ease_blend": None}
    assert cfg.model_dump() == expected
    assert "${root}/search/best_overlay.yaml" in _stages()["train"]["deps"]
