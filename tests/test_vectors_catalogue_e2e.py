"""End to end on a catalogue whose only content is two `.npy` vector files: ingest -> split -> featurize
-> search -> train -> recommend through the in-process InferenceEngine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from tests.data.latent_catalogue import ingest_split_featurize, write_vectors_catalogue

from fusionrec import schema
from fusionrec.automl import run_search
from fusionrec.config import SearchConfig, SearchSpace, TrainConfig, load_config_file
from fusionrec.inference import InferenceEngine
from fusionrec.training import run_train

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace(dim=[16, 32], epochs=[3, 5], n_layers=[0, 2], knn_k=[0, 5], lr=[0.02, 0.05],
                    ease_blend_auto=False, ease_blend=[0.0, 0.0])
# minilm / effnet-lite0 (the train defaults) are absent here; the vectors are named as a user would
BASE = TrainConfig(dim=16, epochs=4, patience=2, n_layers=1, knn_k=5, ease_blend=0.0, extra_modalities=["audio", "image"])


def _recall(recommended: list[str], relevant: set[str]) -> float:
    return len(set(recommended) & relevant) / len(relevant)


def test_vectors_only_catalogue_end_to_end(tmp_path: Path) -> None:
    cat = write_vectors_catalogue(tmp_path, users=120, items=200, per_user=12, timestamps="iso")
    dirs = ingest_split_featurize(cat, tmp_path / "steps")
    report = json.loads((dirs.ingested / schema.REPORT).read_text())
    assert report["items"] == 200 and report["rejected_total"] == 0 and report["coverage"]["neither"] == 1.0

    search = run_search(dirs.ingested, dirs.features, dirs.split, tmp_path / "search",
                        SearchConfig(n_trials=3, pruner="none", timeout=None, space=SPACE), BASE)
    assert search.metrics["n_failed"] == 0 and search.metrics["n_complete"] == 3
    best = load_config_file(tmp_path / "search" / "best.yaml", TrainConfig)
    assert best.text_encoder == best.image_encoder == "none" and best.extra_modalities

    trained = run_train(dirs.ingested, dirs.features, dirs.split, tmp_path / "model", best)
    assert trained.metrics["valid_ndcg@20"] > 0

    engine = InferenceEngine(tmp_path / "model")
    train = pd.read_parquet(dirs.split / "train.parquet")
    test = pd.read_parquet(dirs.split / "test.parquet")
    seen = train.groupby(schema.USER_ID)[schema.ITEM_ID].apply(set)
    popular = train[schema.ITEM_ID].value_counts().index.tolist()
    model_recall, pop_recall = [], []
    for user, relevant in test.groupby(schema.USER_ID)[schema.ITEM_ID].apply(set).items():
        out = engine.recommend(str(user), k=20)
        ids = [i["item_id"] for i in out["items"]]
        assert out["path"] == "user" and len(ids) == 20 and not set(ids) & seen[user]  # known items excluded
        model_recall.append(_recall(ids, relevant))
        pop_recall.append(_recall([i for i in popular if i not in seen[user]][:20], relevant))
    assert np.mean(model_recall) > 1.3 * np.mean(pop_recall)  # the taste the vectors carry, not popularity

    history = sorted(seen.iloc[0])[:3]  # an unknown user folded in from recent items
    folded = engine.recommend("someone-new", k=5, recent_items=history)
    assert folded["path"] == "fold_in" and len(folded["items"]) == 5
    assert not {i["item_id"] for i in folded["items"]} & set(history)


@pytest.mark.slow
def test_vectors_only_catalogue_search_with_the_default_budget(tmp_path: Path) -> None:
    """The reported case at the default space and budget: --trials 12 with search.timeout 150 s runs trials
    that all use only what the folder holds, and says how many ran and why it stopped."""
    cat = write_vectors_catalogue(tmp_path, users=150, items=240, timestamps="ms")
    dirs = ingest_split_featurize(cat, tmp_path / "steps")
    result = run_search(dirs.ingested, dirs.features, dirs.split, tmp_path / "search",
                        SearchConfig(n_trials=12), TrainConfig())
    m = result.metrics
    assert m["n_failed"] == 0 and m["n_requested"] == 12
    budget = json.loads((tmp_path / "search" / "summary.json").read_text())["budget"]
    assert budget["stopped_by"] in ("done", "timeout") and budget["message"].startswith(
        "all 12" if m["n_ran"] == 12 else f"{m['n_ran']} of 12")
    best = load_config_file(tmp_path / "search" / "best.yaml", TrainConfig)
    assert best.extra_modalities
