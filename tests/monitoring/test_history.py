"""Drift history: every run keeps its own dated folder, and index.html shows the trend and every run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitoring_synth import model_view, store_frames

from fusionrec.config import MonitorConfig
from fusionrec.monitoring import history
from fusionrec.monitoring.decision import Decision
from fusionrec.monitoring.monitor import monitor_store
from fusionrec.monitoring.store import FeedbackStore, feedback_table, served_table

HOUR = 3600.0
T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def decision(share: float, ctr: float, retrain: bool, streak: int) -> Decision:
    return Decision(retrain=retrain, reasons=["feedback_drift"] if share >= 0.5 else [], model_version="v1",
                    numbers={"feedback": {"share": share, "drift_share_threshold": 0.5, "ctr_reference": 0.3,
                                          "ctr_current": ctr},
                             "persistence": {"streak": streak, "needed": 2}, "windows": {"current_events": 500}})


def run(root: Path, started: float, d: Decision) -> Path:
    folder = history.run_folder(root, started)
    (folder / "reports").mkdir()
    (folder / "reports" / "feedback_events.html").write_text("<html></html>")
    (folder / "reports" / "feedback_events.json").write_text("{}")
    history.append(root, history.entry(root, folder, d, started))
    return folder


def test_runs_keep_their_folders_and_the_page_shows_the_trend(tmp_path: Path) -> None:
    runs = [(0.0, 0.30, False, 0), (0.6, 0.20, False, 1), (0.8, 0.15, True, 2), (0.1, 0.29, False, 0)]
    folders = [run(tmp_path, T + i * HOUR, decision(*r)) for i, r in enumerate(runs)]
    assert [f.name for f in folders] == [f"2023-11-14T{22 + i:02d}-13-20Z" if i < 2 else
                                         f"2023-11-15T{i - 2:02d}-13-20Z" for i in range(4)]
    assert history.run_folder(tmp_path, T).name == "2023-11-14T22-13-20Z-2", "two runs in one second"
    history.record_retraining(tmp_path, "runs/2023-11-15T00-13-20Z",
                              {"kind": "run", "id": "abc", "url": "http://kfp/#/runs/details/abc", "merged": 42})
    page = (tmp_path / "index.html").read_text()
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = re.findall(r"<tr><td><a href=\"(runs/[^\"]+)/index.html\">", page)
    assert rows == [f"runs/{f.name}" for f in reversed(folders)], "every run, newest first"
    retrain_row = next(r for r in page.split("<tr>") if "2023-11-15 00:13:20Z" in r)
    assert "RETRAIN" in retrain_row and 'href="http://kfp/#/runs/details/abc"' in retrain_row
    assert "0.8000" in retrain_row and "0.1500" in retrain_row and "2/2" in retrain_row
    lines = history.read(tmp_path)
    assert [x["retrain"] for x in lines] == [False, False, True, False]
    assert lines[2]["retraining"]["merged"] == 42 and lines[0]["retraining"] is None


def test_old_runs_lose_their_html_only(tmp_path: Path) -> None:
    old, new = run(tmp_path, T, decision(0.0, 0.3, False, 0)), run(tmp_path, T + 10 * 86400, decision(0.0, 0.3, False, 0))
    assert history.prune_html(tmp_path, T + 10 * 86400, days=0) == 0, "0 keeps everything"
    assert history.prune_html(tmp_path, T + 10 * 86400, days=7) == 1
    assert not (old / "reports" / "feedback_events.html").exists()
    assert (old / "reports" / "feedback_events.json").exists() and (new / "reports" / "feedback_events.html").exists()


def test_monitor_runs_on_the_store_write_dated_folders_and_history(tmp_path: Path) -> None:
    """Two real monitor runs (too little data for a decision, so no Evidently): two folders, two lines."""
    fb, sv, _ = store_frames(30, 0, shift=False)
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    with FeedbackStore(url) as store:
        with store.engine.begin() as conn:
            conn.execute(served_table.insert(), sv.to_dict("records"))
            conn.execute(feedback_table.insert(), fb.drop(columns="id").to_dict("records"))
        cfg = MonitorConfig(reference_window=50, current_window=50, served_retention_days=1)
        first, first_dir = monitor_store(store, model_view(), tmp_path / "reports", cfg, now=T)
        second, second_dir = monitor_store(store, model_view(), tmp_path / "reports", cfg, now=T + HOUR)
        assert store.count("served") == len(sv), "an unpinned reference keeps its impressions"
    assert first.status == "insufficient_data" and first_dir != second_dir
    for folder in (first_dir, second_dir):
        assert json.loads((folder / "decision.json").read_text())["status"] == "insufficient_data"
        assert (folder / "index.html").is_file()
    assert [x["run"] for x in history.read(tmp_path / "reports")] == [f"runs/{first_dir.name}", f"runs/{second_dir.name}"]
    assert (tmp_path / "reports" / "state" / "drift_streak.json").is_file()
    assert (tmp_path / "reports" / "state" / "windows.json").is_file()
