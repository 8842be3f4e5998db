"""The closed loop end to end on tiny demo data through a real `bentoml serve` on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionrec.config import Params

TINY_LOOP = {
    "demo": {"users": 80, "items": 150, "interactions": 3000, "image_size": 32, "taste_strength": 2.0},
    "featurize": {"text_encoders": ["tfidf"], "image_encoders": ["color"], "tfidf_dim": 16, "num_workers": 0},
    "train": {"text_encoder": "tfidf", "image_encoder": "color", "dim": 16, "epochs": 12, "patience": 3,
              "n_layers": 1, "knn_k": 5, "batch_size": 512, "lr": 0.01},
    "simulate": {"users": 60, "k": 10, "concurrency": 3},
    "monitor": {"min_events": 80, "retrain_half_life": 5.0, "min_holdout": 20},
}


@pytest.mark.integration
@pytest.mark.slow
def test_loop_detects_retrains_and_promotes(tmp_path: Path) -> None:
    from fusionrec.monitoring.loop import run_loop

    result = run_loop(tmp_path / "loop", Params(**TINY_LOOP), rounds_before=2, max_shifted=6, rounds_after=2)  # type: ignore[arg-type]
    kinds = [e["kind"] for e in result["events"]]
    assert kinds[0] == "shift" and "drift_detected" in kinds, kinds
    n = result["numbers"]
    assert n["events_until_detection"] > 0
    assert n["retrains"] and n["gate"]["promote"] is True
    assert "promoted" in kinds, n["gate"]
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
