"""The compiled Kubeflow pipeline, run end to end through kfp.local on the tiny demo."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.components.component_tasks import TINY_EVALUATE, TINY_FEATURIZE, TINY_SEARCH, TINY_TRAIN, as_params

from fusionrec.config import IngestConfig, PackageConfig, SplitConfig, TrainConfig, load_config_file
from fusionrec.io import read_json


def tiny_arguments(workers: int = 2) -> dict:
    """Pipeline arguments that keep every step cheap (tf-idf + colour, 1 trial per worker, 2 epochs)."""
    return {
        "ingest_cfg": as_params(IngestConfig()), "split_cfg": as_params(SplitConfig()),
        "featurize_cfg": as_params(TINY_FEATURIZE), "search_cfg": as_params(TINY_SEARCH),
        "train_cfg": as_params(TINY_TRAIN), "evaluate_cfg": as_params(TINY_EVALUATE),
        "package_cfg": as_params(PackageConfig(model_name="fusionrec-e2e")),
        "search_workers": list(range(workers)), "trials_per_worker": 1,
    }


def only(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {root}, found {found}"
    return found[0]


@pytest.mark.integration  # ~50 s on 2 idle cores (about 5 min when the cores are shared)
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning")
def test_pipeline_runs_end_to_end_through_kfp_local(demo_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.local import run_local

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("FUSIONREC_STUDY_DIR", str(tmp_path / "studies"))  # the SQLite fallback of study_storage
    result = run_local(demo_dir, tmp_path / "kfp", **tiny_arguments(workers=2))
    root = Path(result["pipeline_root"])

    study = only(tmp_path / "studies", "*.db")
    assert study.stat().st_size > 0, "the search workers did not share the fallback SQLite study"
    summary = read_json(only(root, "*/search-2/study/summary.json"))
    assert summary["n_trials"] == 2, "two workers x one trial each should add two trials to one study"
    best = load_config_file(only(root, "*/search-2/study/best.yaml"), TrainConfig)
    assert best.text_encoder == "tfidf"

    metrics = read_json(only(root, "*/evaluate/evaluation/metrics.json"))
    assert 0.0 <= metrics["model"]["test"]["ndcg@20"] <= 1.0
    assert read_json(only(root, "*/evaluate/evaluation/promotion.json"))["promote"] is True
    assert list(only(root, "*/package/packaged").glob("*.bentomodel")), "the promoted model was not packaged"
    assert (tmp_path / "bentoml" / "models" / "fusionrec-e2e").is_dir()
