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
from fusionrec.features.vectors import read_vectors
from fusionrec.inference import InferenceEngine
from fusionrec.inference.checks import ServeError
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore
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

    store = FeedbackStore(tmp_path / "feedback.db")
    engine = InferenceEngine(tmp_path / "model", store=store, state=ServingState(store))
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

    # an item added while serving brings its vectors: it lands next to the item whose vectors it copies
    files = {name: dict(zip(*read_vectors(path), strict=True)) for name, path in (("audio", cat.audio), ("image", cat.image))}
    source = next(i for i in popular if i in files["audio"] and i in files["image"])
    audio, image = files["audio"][source].astype(np.float64), files["image"][source].astype(np.float64)
    added = engine.add_item("added-copy", vectors={"audio": (3 * audio).tolist(), "vectors:image": image.tolist()})
    assert added["modalities"] == {"vectors:audio": True, "vectors:image": True}
    assert engine.similar("added-copy", k=1)["items"][0]["item_id"] == source  # scale is normalised away
    for vectors, field, words in [({"audio": audio[:-1].tolist()}, "vectors.audio", "15 values"),
                                  ({"speech": audio.tolist()}, "vectors.speech", "it has: audio, image"),
                                  ({"audio": [float("nan")] * len(audio)}, "vectors.audio", "not a finite"),
                                  ({"audio": [0.0] * len(audio)}, "vectors.audio", "all zeros"),
                                  ({"audio": [1e31] * len(audio)}, "vectors.audio", "at most 1e+30"),
                                  ({"audio": "loud"}, "vectors.audio", "list of numbers")]:
        with pytest.raises(ServeError) as err:
            engine.add_item("added-bad", vectors=vectors)
        assert (err.value.status, err.value.field) == (400, field) and words in err.value.message
    with pytest.raises(ServeError, match="or vectors"):
        engine.add_item("added-empty")
    other_store = FeedbackStore(tmp_path / "feedback.db")  # another replica reads the item from the state
    other = InferenceEngine(tmp_path / "model", store=other_store, state=ServingState(other_store))
    assert other.similar("added-copy", k=1)["items"][0]["item_id"] == source
    other.close()
    engine.close()


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


def test_vectors_given_while_serving_reach_the_next_training(tmp_path: Path) -> None:
    """Retraining's merge writes them next to the catalogue; ingest carries them; featurize fills the rows."""
    from fusionrec.features.store import load_features
    from fusionrec.monitoring.new_items import add_runtime_items
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    cat = write_vectors_catalogue(tmp_path, users=60, items=80, per_user=8)
    given = np.arange(1.0, 17.0)
    with FeedbackStore(tmp_path / "fb.db") as store:
        state = ServingState(store)
        state.add_item("runtime-1", vectors={"vectors:audio": given.tolist(), "vectors:image": [1.0] * 5})  # image: wrong dim
        state.add_item("runtime-2", text="words only")
        frame = state.items_frame()
    written = add_runtime_items(cat.root, frame, ["title", "overview"])
    assert (written.added, written.vectors) == (2, 1)
    assert add_runtime_items(cat.root, frame, ["title", "overview"]).added == 0  # once
    dirs = ingest_split_featurize(cat, tmp_path / "steps")
    assert json.loads((dirs.ingested / schema.REPORT).read_text())["runtime_vectors"] == 2
    features = load_features(dirs.features)
    items = pd.read_parquet(dirs.ingested / schema.INGESTED_ITEMS)[schema.ITEM_ID].tolist()
    one, two = items.index("runtime-1"), items.index("runtime-2")
    audio = features["vectors:audio"]
    assert audio.mask[one] and np.allclose(audio.values[one], given / np.linalg.norm(given), atol=1e-6)
    assert not audio.mask[two] and not features["vectors:image"].mask[one]  # 5 image values do not fit
    manifest = json.loads((dirs.features / "manifest.json").read_text())["features"]
    assert manifest["vectors:audio"]["runtime_vectors"] == 1 and manifest["vectors:image"]["runtime_vectors"] == 0
