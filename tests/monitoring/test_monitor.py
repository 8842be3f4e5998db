"""The monitor on synthetic store rows: no shift -> no retrain; planted shifts -> retrain, right reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from monitoring_synth import store_frames

from fusionrec.config import MonitorConfig
from fusionrec.monitoring.decision import decide
from fusionrec.monitoring.drift import DriftCheck, ctr_by_position
from fusionrec.monitoring.monitor import monitor_frames, run_monitor, select_windows

CFG = MonitorConfig(reference_window=1000, current_window=1000)


@pytest.fixture(scope="module")
def no_shift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("noshift")
    fb, sv, view = store_frames(1200, 1200, shift=False)
    return out, monitor_frames(fb, sv, view, out, CFG)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("shift")
    fb, sv, view = store_frames(1200, 1200, shift=True)
    return out, monitor_frames(fb, sv, view, out, CFG)


def test_no_shift_no_retrain(no_shift: tuple[Path, object]) -> None:
    out, decision = no_shift
    saved = json.loads((out / "decision.json").read_text())
    assert saved["retrain"] is False and saved["reasons"] == []
    assert saved["status"] == "ok"
    fb = saved["numbers"]["feedback"]
    assert abs(fb["ctr_change"]) < CFG.ctr_drop
    assert fb["share"] < CFG.drift_share


def test_taste_shift_triggers_retrain_with_reasons(shifted: tuple[Path, object]) -> None:
    out, _ = shifted
    saved = json.loads((out / "decision.json").read_text())
    assert saved["retrain"] is True
    assert "ctr_drop" in saved["reasons"]  # users stop clicking what the old model serves
    assert "interest_drift" in saved["reasons"]  # and the items they do click moved in embedding space
    assert saved["numbers"]["feedback"]["columns"]["event"]["drifted"]  # more dislikes
    assert saved["numbers"]["feedback"]["ctr_current"] < saved["numbers"]["feedback"]["ctr_reference"]
    assert "click-through fell" in saved["detail"]["ctr_drop"]


def test_reports_are_valid_html_and_json(shifted: tuple[Path, object]) -> None:
    out, _ = shifted
    index = (out / "index.html").read_text()
    assert index.startswith("<!doctype html>") and "RETRAIN" in index
    for stem in ("feedback_events", "feedback_users", "interest", "scores"):
        html = (out / "reports" / f"{stem}.html").read_text()
        assert "<html" in html.lower() and f"reports/{stem}.html" in index
        data = json.loads((out / "reports" / f"{stem}.json").read_text())
        assert data["metrics"], stem


def test_new_items_drift(tmp_path: Path) -> None:
    fb, sv, view = store_frames(1200, 1200, shift=False, serve_new=True)
    decision = monitor_frames(fb, sv, view, tmp_path, CFG)
    assert decision.signals["new_item_drift"] is True
    assert "new_item_drift" in decision.reasons
    assert decision.numbers["new_items"]["new_items_current"] == 40


def test_retrain_on_filters_reasons(tmp_path: Path) -> None:
    fb, sv, view = store_frames(1200, 1200, shift=False, serve_new=True)
    cfg = CFG.with_overrides(retrain_on=["ctr_drop"])
    decision = monitor_frames(fb, sv, view, tmp_path, cfg)  # type: ignore[arg-type]
    assert decision.signals["new_item_drift"] is True and decision.retrain is False


def test_too_few_events_is_no_decision(tmp_path: Path) -> None:
    fb, sv, view = store_frames(300, 30, shift=True)
    decision = monitor_frames(fb, sv, view, tmp_path, CFG)
    assert decision.retrain is False and decision.status == "insufficient_data"
    assert json.loads((tmp_path / "decision.json").read_text())["status"] == "insufficient_data"
    assert (tmp_path / "index.html").exists()


def test_windows_start_at_deployment_and_do_not_overlap() -> None:
    fb, sv, _ = store_frames(600, 600, shift=False)
    sv.loc[sv["ts"] < 1_000_100, "model_version"] = "v0"  # an older model served the first 99 requests
    w = select_windows(fb, sv, "v1", CFG)
    assert w.deployed_at == 1_000_100.0
    assert w.ref_events["ts"].min() >= 1_000_100
    assert set(w.ref_events["id"]).isdisjoint(w.cur_events["id"])
    assert w.cur_events["id"].max() == fb["id"].max()


def test_ctr_by_position() -> None:
    served = pd.DataFrame({"position": [0, 1, 0, 1], "item_id": list("abcd")})
    events = pd.DataFrame({"position": [0, 0, 1], "event": ["click", "like", "dislike"], "item_id": list("acd")})
    table = ctr_by_position(events, served).set_index("position")
    assert table.loc[0, "ctr"] == 1.0 and table.loc[1, "ctr"] == 0.0


def test_decide_ctr_drop_alone() -> None:
    check = DriftCheck("feedback", {"columns": {}, "drifted": 0, "share": 0.0, "ctr_change": -0.5,
                                    "ctr_reference": 0.2, "ctr_current": 0.1})
    decision = decide({"feedback": check}, CFG)
    assert decision.retrain and decision.reasons == ["ctr_drop"]
    assert not decide({"feedback": DriftCheck("feedback", {**check.numbers, "ctr_change": -0.1})}, CFG).retrain


def test_run_monitor_reads_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.monitoring import monitor
    from fusionrec.monitoring.store import FeedbackStore

    fb, sv, view = store_frames(250, 250, shift=True)
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    with FeedbackStore(url) as store:
        for rid, g in sv.groupby("request_id", sort=False):
            store.record_served(str(rid), g["user_id"].iloc[0], g["item_id"].tolist(), g["score"].tolist(),
                                "v1", ts=float(g["ts"].iloc[0]))
        for row in fb.itertuples():
            store.append_feedback(row.user_id, row.item_id, row.event, request_id=row.request_id, ts=row.ts)
    monkeypatch.setattr(monitor, "load_model_view", lambda _d: view)
    cfg = MonitorConfig(reference_window=300, current_window=300, min_events=100)
    result = run_monitor(url, tmp_path / "model", tmp_path / "out", cfg)
    assert result.metrics["retrain"] == 1
    assert result.outputs["decision"] == result.outputs["run"] / "decision.json"
    assert result.outputs["run"].parent == tmp_path / "out" / "runs" and result.outputs["decision"].exists()
    assert 0 < result.metrics["ctr_current"] < result.metrics["ctr_reference"]
    again = run_monitor(url, tmp_path / "model", tmp_path / "out", cfg)  # a second run keeps the first
    assert again.outputs["run"] != result.outputs["run"] and result.outputs["decision"].exists()
    assert again.metrics["ctr_current"] == result.metrics["ctr_current"]  # same windows (reference pinned)
    assert len((tmp_path / "out" / "history.jsonl").read_text().splitlines()) == 2


def test_retraining_waits_for_drift_in_consecutive_runs(tmp_path: Path) -> None:
    from fusionrec.config import MonitorConfig
    from fusionrec.monitoring.decision import Decision, apply_persistence, insufficient

    cfg, state = MonitorConfig(persistence=3), tmp_path / "streak.json"

    def run(drift: bool, version: str = "v1") -> Decision:
        d = Decision(retrain=drift, reasons=["ctr_drop"] if drift else [], model_version=version)
        return apply_persistence(d, state, cfg)

    first, second = run(True), run(True)
    assert not first.retrain and not second.retrain and "monitor.persistence" in second.detail["persistence"]
    assert apply_persistence(insufficient(3, cfg, "v1"), state, cfg).numbers["persistence"]["streak"] == 2  # no data: kept
    third = run(True)
    assert third.retrain and third.numbers["persistence"] == {"streak": 3, "needed": 3}
    assert not run(False).retrain and not run(True).retrain  # a quiet run resets the streak
    run(True)
    assert not run(True, version="v2").retrain  # a new model starts its own streak
    assert apply_persistence(Decision(retrain=True, reasons=["ctr_drop"], model_version="x"), tmp_path / "other.json",
                             MonitorConfig()).retrain  # persistence 1: at once
