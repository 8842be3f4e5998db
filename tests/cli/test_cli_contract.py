"""What every command promises its user: help on every option, choices listed, errors in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from fusionrec.cli import app

runner = CliRunner()


def _commands() -> dict[str, Any]:
    """Every command by its full name ('pipeline compile' for a sub-command)."""
    group = typer.main.get_command(app)
    out: dict[str, Any] = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


def test_every_option_and_argument_has_help() -> None:
    assert "pipeline compile" in _commands() and "loop" in _commands()
    missing = [f"{name} {p.name}" for name, cmd in _commands().items() for p in cmd.params
               if not getattr(p, "help", None) and p.name != "help"]
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize(("command", "option", "values"), [
    ("split", "--protocol", ["random-811", "temporal-loo", "global-time", "cold-items"]),
    ("monitor", "--trigger", ["none", "local", "kfp"]),
    ("retrain", "--trigger", ["local", "kfp"]),
])
def test_choices_are_listed_in_help_and_checked(command: str, option: str, values: list[str]) -> None:
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    line = next(line for line in shown.splitlines() if option in line)
    assert "<" + "|".join(values) + ">" in line, line
    res = runner.invoke(app, [command, option, "nope"])
    assert res.exit_code == 2 and "nope" in res.output


def test_an_unexpected_error_is_one_red_line_without_a_traceback(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import fusionrec.steps

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full\nwhile writing")

    monkeypatch.setattr(fusionrec.steps, "run_demo_data", boom)
    monkeypatch.delenv("FUSIONREC_DEBUG", raising=False)
    res = runner.invoke(app, ["demo-data", str(tmp_path / "demo"), "--params", str(tmp_path / "absent.yaml")])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == ["demo-data failed: OSError: disk full while writing (set FUSIONREC_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("FUSIONREC_DEBUG", "1")
    res = runner.invoke(app, ["demo-data", str(tmp_path / "demo"), "--params", str(tmp_path / "absent.yaml")])
    assert isinstance(res.exception, OSError), "FUSIONREC_DEBUG lets the traceback through"


def test_a_step_reports_progress_on_stderr_and_ends_with_one_summary_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["demo-data", str(tmp_path / "demo"), "--users", "30", "--items", "40",
                              "--interactions", "600", "--image-size", "8", "--params", str(tmp_path / "absent.yaml")])
    assert res.exit_code == 0, res.output
    (last,) = res.stdout.strip().splitlines()[-1:]
    assert last.startswith("demo-data: users=30, items=40, interactions=600") and last.endswith(str(tmp_path / "demo"))


def test_train_with_an_overlay_names_what_it_lays_over(tmp_path: Path) -> None:
    (tmp_path / "best_overlay.yaml").write_text("dimm: 3\n")
    res = runner.invoke(app, ["train", "--data", str(tmp_path), "--features", str(tmp_path), "--split", str(tmp_path),
                              "--overlay", str(tmp_path / "best_overlay.yaml"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "unknown train field(s) dimm" in res.output and "Traceback" not in res.output
