"""The champion/challenger gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionrec.config import EvaluateConfig
from fusionrec.evaluation.gate import decide_promotion, load_champion

CFG = EvaluateConfig(promote_metric="ndcg@20", promote_tolerance=0.005, guard_metrics=["recall@20"])


def test_first_model_is_promoted() -> None:
    d = decide_promotion({"ndcg@20": 0.3, "recall@20": 0.3}, None, CFG)
    assert d.promote and "no champion" in d.reason


def test_better_challenger_is_promoted() -> None:
    d = decide_promotion({"ndcg@20": 0.36, "recall@20": 0.40}, {"ndcg@20": 0.35, "recall@20": 0.39}, CFG)
    assert d.promote and d.deltas["ndcg@20"] == pytest.approx(0.01)


def test_slightly_worse_within_tolerance_is_promoted() -> None:
    d = decide_promotion({"ndcg@20": 0.347, "recall@20": 0.39}, {"ndcg@20": 0.35, "recall@20": 0.39}, CFG)
    assert d.promote and "tolerance" in d.reason


def test_worse_beyond_tolerance_is_refused() -> None:
    d = decide_promotion({"ndcg@20": 0.34, "recall@20": 0.39}, {"ndcg@20": 0.35, "recall@20": 0.39}, CFG)
    assert not d.promote and "ndcg@20" in d.reason


def test_guard_metric_can_block() -> None:
    d = decide_promotion({"ndcg@20": 0.36, "recall@20": 0.30}, {"ndcg@20": 0.35, "recall@20": 0.39}, CFG)
    assert not d.promote and "recall@20" in d.reason


def test_different_holdouts_are_not_compared() -> None:
    d = decide_promotion({"ndcg@20": 0.9, "recall@20": 0.9, "holdout": "a"},
                         {"ndcg@20": 0.1, "recall@20": 0.1, "holdout": "b"}, CFG)
    assert not d.promote and "holdout" in d.reason


def test_missing_metric_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="ndcg@10"):
        decide_promotion({"ndcg@10": 0.3}, None, CFG)


def test_load_champion_reads_an_evaluate_folder(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"model": {"test": {"ndcg@20": 0.3}}}))
    (tmp_path / "evaluation.json").write_text(json.dumps({"holdout": "abc"}))
    assert load_champion(tmp_path) == {"ndcg@20": 0.3, "holdout": "abc"}
    with pytest.raises(FileNotFoundError, match="fusionrec evaluate"):
        load_champion(tmp_path / "nowhere")
