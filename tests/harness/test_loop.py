"""The closed loop end to end on tiny demo data through a real `bentoml serve` on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionrec.config import Params

# the demo loop's sizes (harness/demo_loop.yaml: the smallest world where the base model is clearly
# better than chance, so the taste shift shows in click-through) with fewer simulated users
TINY_LOOP = {
    "simulate": {"users": 120, "k": 10, "concurrency": 3, "organic": 3},
    "monitor": {"min_events": 80, "persistence": 2, "min_holdout": 20},
}


@pytest.mark.integration
@pytest.mark.slow
def test_loop_detects_retrains_and_promotes(tmp_path: Path) -> None:
    from harness.loop import DEMO_OVERLAY, overlay_params, run_loop
    from serving.store import BentoStore

    params = overlay_params(Params(), DEMO_OVERLAY)
    params = params.model_copy(update={name: getattr(params, name).with_overrides(**fields)
                                       for name, fields in TINY_LOOP.items()})
    result = run_loop(tmp_path / "loop", params, rounds_before=2, max_shifted=8, rounds_after=2,
                      model_store=BentoStore())
    kinds = [e["kind"] for e in result["events"]]
    assert kinds[0] == "shift" and "drift_detected" in kinds, kinds
    n = result["numbers"]
    assert n["events_until_detection"] > 0
    assert n["retrains"] and n["gate"]["promote"] is True
    assert "promoted" in kinds, n["gate"]
    assert n["ctr_after_promotion"] > n["ctr_after_shift"]  # the retrained model serves the new tastes better
    assert n["failed_requests_swap"] == 0 and n["swap_probe"]["ok"] > 0
    versions = {v for r in result["rounds"] if r["phase"] == "retrained" for v in r["model_versions"]}
    before = {v for r in result["rounds"] if r["phase"] == "before" for v in r["model_versions"]}
    assert versions and versions.isdisjoint(before)  # the service really swapped models
    assert (tmp_path / "loop" / "ctr.png").stat().st_size > 0
    saved = json.loads((tmp_path / "loop" / "loop.json").read_text())
    assert saved["numbers"]["ctr_before_shift"] > 0
    decisions = sorted((tmp_path / "loop" / "monitor").glob("round*/decision.json"))
    assert json.loads(decisions[-1].read_text())["retrain"] is True
    records = list((tmp_path / "loop" / "retrain" / "runs").glob("*/record.json"))
    assert len(records) >= 1
    promotion = json.loads(max(records).read_text())["promotion"]
    assert "reload" not in promotion and promotion["champion"]["uri"].startswith(str(tmp_path / "loop" / "models"))
    assert n["swap_wait_s"] is not None, "the service never followed the champion pointer"
