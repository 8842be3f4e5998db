"""The serve and package commands: arguments and the bentoml command line they run."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fusionrec.cli import app
from fusionrec.cli.serve import REPO_ROOT, serve_command


def test_serve_binds_loopback_by_default() -> None:
    cmd = serve_command("127.0.0.1", 3000, REPO_ROOT)
    assert cmd[1:3] == ["serve", "serving.service:FusionRec"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "3000"
    assert (REPO_ROOT / "serving" / "service.py").is_file()


def test_help_lists_both_commands() -> None:
    runner = CliRunner()
    assert "model" in runner.invoke(app, ["serve", "--help"]).output
    assert "model_dir" in runner.invoke(app, ["package", "--help"]).output.lower()


def test_package_of_a_non_model_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["package", str(tmp_path), str(tmp_path / "out"),
                                      "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "missing model.safetensors" in result.output
