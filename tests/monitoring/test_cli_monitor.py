"""`fusionrec monitor` / `retrain` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monitoring_synth import store_frames
from typer.testing import CliRunner

from fusionrec.cli import app


@pytest.fixture()
def store(tmp_path: Path) -> tuple[str, object]:
    from fusionrec.monitoring.store import FeedbackStore

    fb, sv, view = store_frames(200, 200, shift=True)
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    with FeedbackStore(url) as fs:
        for rid, g in sv.groupby("request_id", sort=False):
            fs.record_served(str(rid), g["user_id"].iloc[0], g["item_id"].tolist(), g["score"].tolist(), "v1",
                             ts=float(g["ts"].iloc[0]))
        for row in fb.itertuples():
            fs.append_feedback(row.user_id, row.item_id, row.event, request_id=row.request_id, ts=row.ts)
    return url, view


def test_monitor_command_writes_decision(store: tuple[str, object], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.monitoring import monitor

    url, view = store
    monkeypatch.setattr(monitor, "load_model_view", lambda _d: view)
    params = tmp_path / "params.yaml"
    params.write_text("monitor: {reference_window: 250, current_window: 250, min_events: 100}\n")
    result = CliRunner().invoke(app, ["monitor", "--store", url, "--model-dir", str(tmp_path / "m"),
                                      "--out", str(tmp_path / "out"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "retrain: True" in result.output
    (run,) = (tmp_path / "out" / "runs").iterdir()  # this run's own dated folder
    assert json.loads((run / "decision.json").read_text())["retrain"] is True
    assert (run / "index.html").is_file() and f"report: {run / 'index.html'}" in result.output
    history = (tmp_path / "out" / "index.html").read_text()
    assert f'href="runs/{run.name}/index.html"' in history and "RETRAIN" in history

    # a retrain that fails (here: the Kubeflow API refuses) fails the command and shows in the history
    from fusionrec.cli import monitor as cli_monitor

    def refused(*_args: object) -> dict:
        raise ConnectionRefusedError("ml-pipeline:8888 refused the connection")

    monkeypatch.setattr(cli_monitor, "_retrain", refused)
    failed = CliRunner().invoke(app, ["monitor", "--store", url, "--model-dir", str(tmp_path / "m"), "--out",
                                      str(tmp_path / "out"), "--params", str(params), "--trigger", "kfp",
                                      "--kfp-host", "http://ml-pipeline:8888", "--data", str(tmp_path),
                                      "--data-uri", "s3://b/data"])
    assert failed.exit_code == 1 and "ConnectionRefusedError: ml-pipeline:8888 refused" in failed.output
    last = json.loads((tmp_path / "out" / "history.jsonl").read_text().splitlines()[-1])
    assert last["retrain"] is True and "refused" in last["retraining"]["error"]
    assert "refused the connection" in (tmp_path / "out" / "index.html").read_text()


def test_trigger_needs_data(store: tuple[str, object], tmp_path: Path) -> None:
    url, _ = store
    result = CliRunner().invoke(app, ["monitor", "--store", url, "--model-dir", str(tmp_path), "--out",
                                      str(tmp_path / "o"), "--trigger", "local"])
    assert result.exit_code == 1 and "--data" in result.output
    bad = CliRunner().invoke(app, ["monitor", "--store", url, "--model-dir", str(tmp_path), "--out",
                                   str(tmp_path / "o"), "--trigger", "cron"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "'cron' is not one of 'none', 'local', 'kfp'" in bad.output
    no_uri = CliRunner().invoke(app, ["monitor", "--store", url, "--model-dir", str(tmp_path), "--out",
                                      str(tmp_path / "o"), "--trigger", "kfp", "--data", str(tmp_path)])
    assert no_uri.exit_code == 1 and "--data-uri" in no_uri.output
    assert not (tmp_path / "o").exists(), "a command that cannot finish starts no run"


def test_the_compiled_pipeline_is_found_in_the_installed_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's working directory is empty: monitor.pipeline_package's relative default resolves to the
    copy the wheel ships (pipelines/compiled/training.yaml as package data)."""
    from pipelines.compile import COMPILED
    from pipelines.compile import pipeline_file as _pipeline_package

    from fusionrec.config import MonitorConfig

    monkeypatch.chdir(tmp_path)
    assert _pipeline_package(MonitorConfig().pipeline_package) == COMPILED
    (tmp_path / "pipelines" / "compiled").mkdir(parents=True)
    (tmp_path / "pipelines" / "compiled" / "training.yaml").write_text("{}")  # a working copy wins
    assert _pipeline_package(MonitorConfig().pipeline_package) == Path("pipelines/compiled/training.yaml")
    assert _pipeline_package(str(tmp_path / "absent.yaml")) == tmp_path / "absent.yaml"


def test_monitor_without_model_dir_follows_the_champion_pointer(store: tuple[str, object], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster the monitor compares against what the replicas serve: the champion the store names."""
    from fusionrec.monitoring import monitor
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    url, view = store
    seen: list[Path] = []
    monkeypatch.setattr(monitor, "load_model_view", lambda d: seen.append(Path(d)) or view)
    params = tmp_path / "params.yaml"
    params.write_text("monitor: {reference_window: 250, current_window: 250, min_events: 100}\n")
    args = ["monitor", "--store", url, "--out", str(tmp_path / "out"), "--params", str(params)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "no champion" in refused.output
    champion = tmp_path / "models" / "v7"
    champion.mkdir(parents=True)
    (champion / "model.safetensors").write_bytes(b"weights")
    with FeedbackStore(url) as fs:
        ServingState(fs).set_champion("v7", str(champion), "test")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == [champion]
