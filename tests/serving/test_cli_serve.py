"""The serve and package commands: arguments, the bentoml command line they run, the promotion gate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.serving.package_samples import rejected_promotion
from tests.serving.servers import MARK, SESSION, Server
from typer.testing import CliRunner

from fusionrec.cli import app
from fusionrec.cli.serve import serve_command

CLI = "from fusionrec.cli import main; main()"


def test_serve_binds_loopback_by_default() -> None:
    cmd = serve_command("127.0.0.1", 3000)
    assert cmd[1:3] == ["serve", "serving.service:FusionRec"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "3000"


def test_serve_runs_bentoml_on_the_installed_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No source-tree path, no PYTHONPATH, no --working-dir: the service imports as installed."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, cmd, env: calls.append((cmd, env)))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "--params", str(tmp_path / "none.yaml"), "--port", "3999"])
    assert result.exit_code == 0, result.output
    ((cmd, env),) = calls  # the process becomes `bentoml serve`: a stop signal reaches BentoML itself
    assert "--working-dir" not in cmd and "PYTHONPATH" not in env
    assert env["FUSIONREC_PARAMS"] == str(tmp_path / "none.yaml")


def test_help_lists_both_commands() -> None:
    runner = CliRunner()
    assert "model" in runner.invoke(app, ["serve", "--help"]).output
    help_text = runner.invoke(app, ["package", "--help"]).output.lower()
    assert "model_dir" in help_text and "--promotion" in help_text and "--force" in help_text


def test_package_of_a_non_model_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["package", str(tmp_path), str(tmp_path / "out"),
                                      "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "missing model.safetensors" in result.output


def test_package_refuses_a_model_the_gate_rejected(model_dir: Path, tmp_path: Path) -> None:
    promotion = rejected_promotion(tmp_path / "evaluation")
    result = CliRunner().invoke(app, ["package", str(model_dir), str(tmp_path / "out"),
                                      "--params", str(tmp_path / "none.yaml"), "--promotion", str(promotion)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())  # rich may wrap the line
    for number in ("ndcg@20", "0.1234", "0.1961", "tolerance 0.005", "--force"):
        assert number in message, message
    assert not (tmp_path / "out").exists()


def test_package_force_stores_a_rejected_model(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    promotion = rejected_promotion(tmp_path / "evaluation")
    result = CliRunner().invoke(app, ["package", str(model_dir), str(tmp_path / "out"), "--params",
                                      str(tmp_path / "none.yaml"), "--promotion", str(promotion), "--force"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "package.json").read_text())
    assert record["tag"].startswith("fusionrec:") and record["promotion"]["forced"] is True
    import bentoml

    assert Path(bentoml.models.get(record["tag"]).path, "model.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_serve_from_an_empty_folder_without_pythonpath(model_dir: Path, tmp_path: Path) -> None:
    """`fusionrec serve` as a pod runs it: an empty working folder, no PYTHONPATH, the installed packages."""
    port, cwd = _free_port(), tmp_path / "empty"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
               FUSIONREC_FEEDBACK_URL=f"sqlite:///{tmp_path / 'feedback.db'}", FUSIONREC_TOKEN="t")
    env[MARK] = SESSION  # the session-end check finds it, workers included, should it survive
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--model", str(model_dir), "--port",
                                 str(port), "--params", str(tmp_path / "none.yaml")], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, port, tmp_path / "serve.log")
    try:
        server.wait_ready()
    finally:
        survivors = server.stop()  # SIGTERM to `fusionrec serve`; every process of its tree must end
    assert survivors == [], f"still running after SIGTERM: {survivors}"
    assert list(cwd.iterdir()) == [], "serving wrote into the working folder"
