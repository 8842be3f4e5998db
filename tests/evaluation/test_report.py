"""The flat headline (one row per experiment in `dvc exp show`) and the by-K curves DVC plots."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fusionrec.config import EvaluateConfig
from fusionrec.evaluation.report import headline, plots_html, write_curves


def _result(ndcg: float, recall: float, cold: float | None = None) -> dict:
    res = {"test": {"ndcg@10": ndcg / 2, "ndcg@20": ndcg, "recall@10": recall / 2, "recall@20": recall,
                    "precision@10": 0.1, "mrr@20": 0.2, "hit@20": 0.5, "coverage@20": 0.3, "n_users": 9},
           "buckets": {}}
    if cold is not None:
        res["cold"] = {"ndcg@20": cold, "recall@20": cold}
    return res


def test_headline_is_the_model_with_its_margin_over_the_best_baseline() -> None:
    results = {"model": _result(0.30, 0.40, cold=0.1), "mostpop": _result(0.10, 0.20), "ease": _result(0.25, 0.35)}
    flat = headline(results, EvaluateConfig())
    assert flat["ndcg@20"] == 0.30 and flat["recall@20"] == 0.40 and flat["cold_ndcg@20"] == 0.1
    assert flat["best_baseline_ndcg@20"] == 0.25
    assert flat["margin_ndcg@20"] == pytest.approx(0.05)
    assert "n_users" not in flat and all(isinstance(v, float) for v in flat.values())


def test_without_a_model_the_headline_is_the_best_baseline_and_has_no_margin() -> None:
    flat = headline({"mostpop": _result(0.10, 0.20), "ease": _result(0.25, 0.35)}, EvaluateConfig())
    assert flat["ndcg@20"] == 0.25 and "margin_ndcg@20" not in flat


def test_curves_are_one_row_per_k_and_one_column_per_model(tmp_path: Path) -> None:
    curves = {"mostpop": {"ndcg@5": 0.1, "ndcg@10": 0.2, "recall@5": 0.3, "recall@10": 0.4},
              "model": {"ndcg@5": 0.2, "ndcg@10": 0.3, "recall@5": 0.5, "recall@10": 0.6}}
    paths = write_curves(curves, tmp_path)
    rows = list(csv.DictReader(paths["ndcg_by_k"].open()))
    assert list(rows[0]) == ["k", "model", "mostpop"]
    assert [(r["k"], r["model"]) for r in rows] == [("5", "0.2"), ("10", "0.3")]


def test_the_plots_page_embeds_every_png(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "metric_by_k.png").write_bytes(b"\x89PNG fake")
    page = plots_html(tmp_path)
    assert page.count("data:image/png;base64,") == 1 and "metric by k" in page
