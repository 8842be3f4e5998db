"""The evaluator: hand-built holdouts, then run_evaluate end to end on the tiny demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.config import EvaluateConfig
from fusionrec.evaluation.evaluator import Holdout, bucket_labels, evaluate_scorer, run_evaluate

FAST_BASELINES = {"bpr-mf": {"epochs": 2}, "lightgcn": {"epochs": 2}, "vbpr": {"epochs": 2}}


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


class Oracle:
    """Scores the test items highest: every metric is perfect."""

    def __init__(self, test: sp.csr_matrix) -> None:
        self.test = test

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.test[user_idx].toarray().astype(np.float32)


def test_bucket_labels() -> None:
    assert bucket_labels([20, 50, 150]) == ["<20", "20-49", "50-149", "150+"]
    assert bucket_labels([]) == ["all"]


def test_buckets_split_users_by_train_activity() -> None:
    train = _csr([[0], [0, 1, 2], [1, 2, 3]], 6)
    test = _csr([[4], [5], [4]], 6)
    holdout = Holdout(train, _csr([[], [], []], 6), test, np.zeros(0, np.int64))
    scores = np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0]], np.float32)

    class Fixed:
        def score_users(self, u: np.ndarray) -> np.ndarray:
            return scores[u]

    res = evaluate_scorer(Fixed(), holdout, EvaluateConfig(ks=[1], activity_buckets=[2]))
    assert res["buckets"]["<2"]["n_users"] == 1 and res["buckets"]["<2"]["hit@1"] == 1.0
    assert res["buckets"]["2+"]["n_users"] == 2 and res["buckets"]["2+"]["hit@1"] == pytest.approx(0.5)
    assert res["test"]["hit@1"] == pytest.approx(2 / 3)
    assert "cold" not in res


def test_cold_metrics_rank_only_cold_items() -> None:
    train = _csr([[0, 1], [0, 1]], 5)
    test = _csr([[2, 3], [4]], 5)
    holdout = Holdout(train, _csr([[], []], 5), test, np.array([3, 4]))
    res = evaluate_scorer(Oracle(test), holdout, EvaluateConfig(ks=[1, 2]))
    assert res["cold"]["recall@2"] == 1.0 and res["cold"]["n_users"] == 2
    assert res["test"]["recall@2"] == 1.0


def test_fingerprint_changes_with_the_test_set() -> None:
    a = Holdout(_csr([[0]], 3), _csr([[]], 3), _csr([[1]], 3), np.zeros(0, np.int64))
    b = Holdout(_csr([[0]], 3), _csr([[]], 3), _csr([[2]], 3), np.zeros(0, np.int64))
    assert a.fingerprint() == Holdout(a.train, a.valid, a.test, a.cold_items).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_run_evaluate_writes_metrics_reports_and_plots(ingested_dir: Path, split_dir: Path, features_dir: Path,
                                                       tmp_path: Path) -> None:
    cfg = EvaluateConfig(baseline_params=FAST_BASELINES)
    result = run_evaluate(ingested_dir, features_dir, split_dir, None, tmp_path / "eval", cfg)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["baselines"]) == set(cfg.baselines)
    for res in metrics["baselines"].values():
        assert set(res["test"]) >= {"recall@10", "ndcg@20", "precision@10", "mrr@20", "hit@20", "coverage@20"}
        assert "recall@50" not in res["test"]  # plot-only cut-offs stay out of metrics.json
        assert 0.0 <= res["test"]["ndcg@20"] <= 1.0
    table = (tmp_path / "eval" / "comparison.md").read_text()
    assert all(f"| {name} |" in table for name in cfg.baselines)
    for png in ("metric_by_k.png", "metric_by_activity.png"):
        assert (tmp_path / "eval" / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert "ndcg@20" in result.metrics
    assert len(json.loads((tmp_path / "eval" / "evaluation.json").read_text())["holdout"]) == 16


def test_a_baseline_too_large_for_the_catalogue_is_skipped(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from fusionrec.evaluation.evaluator import fit_baselines
    from fusionrec.models.baselines import ItemKNN

    train = sp.random(20, 12, density=0.3, format="csr", random_state=0)
    cfg = EvaluateConfig(baselines=["mostpop", "itemknn"])
    assert set(fit_baselines(cfg, train, None)[0]) == {"mostpop", "itemknn"}
    monkeypatch.setattr(ItemKNN, "max_items", 10)  # 12 items: more than its dense matrix allows
    with caplog.at_level("WARNING"):
        fitted, _ = fit_baselines(cfg, train, None)
    assert set(fitted) == {"mostpop"} and "itemknn skipped: 12 items" in caplog.text


def test_a_trained_baseline_stops_at_its_budget_and_the_reports_say_so(
        ingested_dir: Path, split_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = EvaluateConfig(baselines=["mostpop", "bpr-mf", "lightgcn"], baseline_budget_s=1e-9,
                         baseline_params={"lightgcn": {"epochs": 2, "budget_s": 0}})  # its own: no budget
    with caplog.at_level("WARNING"):
        run_evaluate(ingested_dir, None, split_dir, None, tmp_path / "eval", cfg)
    training = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["baseline_training"]
    assert training["bpr-mf"] == {"epochs": 100, "epochs_run": 0.0, "cut": True, "budget_s": 1e-9}
    assert training["lightgcn"]["epochs_run"] == 2.0 and not training["lightgcn"]["cut"]
    assert "mostpop" not in training and "bpr-mf stopped by its 0 s budget after 0.00 of 100 epochs" in caplog.text
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["baselines"]
    assert metrics["bpr-mf"]["training"]["cut"] and "ndcg@20" in metrics["bpr-mf"]["test"]
    table = (tmp_path / "eval" / "comparison.md").read_text()
    assert "- bpr-mf: stopped by its 0 s training budget after 0.00 of 100 epochs" in table
    assert "- lightgcn" not in table
