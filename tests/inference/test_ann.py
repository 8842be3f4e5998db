"""The approximate top-k index: same items and scores as exact scoring, built with the model, reloaded.

On a tiny model the IVF indexes scan every list (probe above the lists), so they must return
exactly what scoring every item returns; any difference is a bug in the moments, the
exclusions, the cold-item blend, the sparse EASE blend or the merge of items added at runtime.
Each model is also trained with the sparse EASE forced (a catalogue above train.ease_max_items)
and blended.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.models.model_samples import FAST, cold_items, colour_data
from tests.serving.serving_fixtures import TINY_TRAIN

from fusionrec.config import ServeConfig
from fusionrec.inference import InferenceEngine, Snapshot, top_k
from fusionrec.inference.ann import build_for_model, load_index, unusable_reason, user_top_k
from fusionrec.models.recommender import Recommender

ANN_TRAIN = TINY_TRAIN.with_overrides(ease_blend=0.0, ann_min_items=100, ann_probe=1000,
                                      context_columns=["hour"])
SPARSE_EASE = {"ease_blend": 0.4, "ease_max_items": 10, "ease_head_items": 20, "ease_topk": 4}  # rows reach part


@pytest.fixture(scope="module")
def ann_model(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    """The tiny demo trained with the index threshold below its 150 items (and hour context)."""
    from fusionrec.training import run_train

    out = tmp_path_factory.mktemp("ann") / "model"
    result = run_train(ingested_dir, features_dir, split_dir, out, ANN_TRAIN)
    assert result.metrics["ann_build_seconds"] >= 0
    return out


@pytest.fixture(scope="module")
def ease_model(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """The same tiny demo, blending the sparse EASE."""
    from fusionrec.training import run_train

    out = tmp_path_factory.mktemp("ann-ease") / "model"
    run_train(ingested_dir, features_dir, split_dir, out, ANN_TRAIN.with_overrides(**SPARSE_EASE))
    return out


def _colour(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: object) -> Path:
    from fusionrec.training import train

    cfg = FAST.with_overrides(**{"ease_blend": 0.0, "ann_min_items": 50, "ann_probe": 1000,
                                 "context_columns": ["hour"], **overrides})
    rec = train(colour_data(), cfg).recommender
    out = rec.save(tmp_path_factory.mktemp(name) / "model")
    assert build_for_model(rec, out, cfg)["n_items"] == rec.n_items
    return out


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour world (tests/models/model_samples.py), whose six cold items were never trained."""
    return _colour(tmp_path_factory, "ann-colour")


@pytest.fixture(scope="module")
def colour_ease_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour world blending the sparse EASE."""
    return _colour(tmp_path_factory, "ann-colour-ease", **SPARSE_EASE)


MODELS = {"demo": "ann_model", "colour": "colour_model", "demo-ease": "ease_model",
          "colour-ease": "colour_ease_model"}


@pytest.fixture(scope="module", params=list(MODELS))
def snap(request: pytest.FixtureRequest) -> Snapshot:
    """A snapshot with its index: the tiny demo (every item trained), the colour world (cold items),
    and both blending the sparse EASE."""
    model = request.getfixturevalue(MODELS[request.param])
    return Snapshot.build(Recommender.load(model), model)


def _exact(rec: Recommender, u: int, k: int, exclude: np.ndarray, context: pd.DataFrame | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    scores = rec.score_users(np.array([u]), context=context)[0]
    top = top_k(scores, k, exclude)
    return top, scores[top]


def test_training_saves_an_index_that_loads_with_the_snapshot(ann_model: Path, colour_model: Path) -> None:
    assert (ann_model / "ann" / "warm.faiss").is_file()
    demo = Snapshot.build(Recommender.load(ann_model), ann_model)
    assert demo.ann is not None and demo.ann.n_items == demo.n_items == 150
    assert demo.ann.n_trained == demo.rec.arrays["trained"].sum()
    colour = Snapshot.build(Recommender.load(colour_model), colour_model)
    assert colour.ann is not None and colour.ann.cold is not None  # never-trained items: the second graph
    np.testing.assert_array_equal(colour.ann.cold.rows, np.sort(cold_items()))


def test_top_k_and_scores_equal_exact_scoring(snap: Snapshot) -> None:
    rec = snap.rec
    for u in range(rec.n_users):
        seen = rec.seen(u)
        got, got_scores = user_top_k(rec, snap.ann, u, 20, seen)
        want, want_scores = _exact(rec, u, 20, seen)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
        assert not np.isin(got, seen).any()


def test_whole_catalogue_includes_never_trained_items_with_their_cold_scores(snap: Snapshot) -> None:
    rec, u = snap.rec, 3
    got, got_scores = user_top_k(rec, snap.ann, u, rec.n_items, np.zeros(0, np.int64))
    scores = rec.score_users(np.array([u]))[0]
    assert len(got) == rec.n_items
    np.testing.assert_allclose(got_scores, scores[got], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.sort(got_scores)[::-1], got_scores)


@pytest.mark.parametrize("model", ["colour_model", "colour_ease_model"])
def test_cold_items_are_found_by_their_blended_score(model: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(model)
    snap = Snapshot.build(Recommender.load(folder), folder)
    rec = copy.copy(snap.rec)
    rec.config = rec.config.with_overrides(cold_offset=-20.0)  # cold items first: the second graph decides
    for u in range(rec.n_users):
        got, got_scores = user_top_k(rec, snap.ann, u, 3, rec.seen(u))
        want, want_scores = _exact(rec, u, 3, rec.seen(u))
        assert np.isin(want, cold_items()).all()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)


def test_request_context_changes_the_query_like_exact_scoring(snap: Snapshot) -> None:
    rec = snap.rec
    night, noon = pd.DataFrame({"hour": [2]}), pd.DataFrame({"hour": [13]})
    for ctx in (night, noon):
        got, got_scores = user_top_k(rec, snap.ann, 5, 10, rec.seen(5), context=ctx)
        want, want_scores = _exact(rec, 5, 10, rec.seen(5), context=ctx)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
    assert not np.allclose(rec.score_users(np.array([5]), night), rec.score_users(np.array([5]), noon))


def test_excluded_items_are_never_returned(snap: Snapshot) -> None:
    rec = snap.rec
    best, _ = _exact(rec, 0, 10, np.zeros(0, np.int64))
    got, _ = user_top_k(rec, snap.ann, 0, 10, best[:5])
    assert not np.isin(got, best[:5]).any()
    np.testing.assert_array_equal(got[:5], best[5:])


@pytest.mark.parametrize("model", ["ann_model", "ease_model"])
def test_items_added_at_runtime_are_served_at_once(model: str, request: pytest.FixtureRequest, token: str) -> None:
    engine = InferenceEngine(request.getfixturevalue(model))
    try:
        index = engine.snapshot.ann
        engine.add_item("brand-new", text="a red round cotton shirt")
        snap = engine.snapshot
        assert snap.ann is index and snap.n_items == index.n_items + 1  # beyond the index: scored exactly
        rec, new = snap.rec, snap.n_items - 1
        got, got_scores = user_top_k(rec, snap.ann, 7, rec.n_items, rec.seen(7))
        scores = rec.score_users(np.array([7]))[0]
        assert new in got.tolist()
        np.testing.assert_allclose(got_scores[got.tolist().index(new)], scores[new], rtol=1e-4, atol=1e-4)
        want, _ = _exact(rec, 7, 20, rec.seen(7))
        np.testing.assert_array_equal(got[:20], want)
    finally:
        engine.close()


def test_engine_recommendations_match_the_index_path(ann_model: Path) -> None:
    # exploration deliberately serves items from beyond the top-k: compared with it off
    off = {"explore_share": 0.0} if "explore_share" in ServeConfig.model_fields else {}
    engine = InferenceEngine(ann_model, ServeConfig(**off))
    try:
        snap = engine.snapshot
        user = snap.rec.user_ids[11]
        body = engine.recommend(user, k=15, explain=False)
        got, got_scores = user_top_k(snap.rec, snap.ann, 11, 15, snap.rec.seen(11))
        assert body["path"] == "user"
        assert [it["item_id"] for it in body["items"]] == [snap.rec.item_ids[i] for i in got]
        np.testing.assert_allclose([it["score"] for it in body["items"]], got_scores, rtol=1e-4, atol=1e-4)
    finally:
        engine.close()


def test_stale_or_unusable_index_is_not_served(ann_model: Path, tmp_path: Path) -> None:
    rec = Recommender.load(ann_model)
    other = copy.copy(rec)
    other.arrays = dict(rec.arrays, item_vecs=rec.arrays["item_vecs"][::-1].copy())  # a retrained model
    assert load_index(ann_model, other) is None
    blended = copy.copy(rec)
    blended.arrays = dict(rec.arrays, ease=np.eye(rec.n_items, dtype=np.float32))
    blended.meta = dict(rec.meta, ease_blend=0.3)
    assert "dense EASE" in (unusable_reason(blended) or "")
    assert unusable_reason(rec) is None
    folder = Path(shutil.copytree(ann_model, tmp_path / "copy"))
    assert build_for_model(blended, folder, ANN_TRAIN) == {}
    assert not (folder / "ann").exists()  # the old index went with the old model


def test_small_catalogues_get_no_index(model_dir: Path) -> None:
    assert not (model_dir / "ann").exists()
    assert Snapshot.build(Recommender.load(model_dir), model_dir).ann is None


def test_the_sparse_ease_blend_is_served_through_the_index(ease_model: Path, colour_ease_model: Path) -> None:
    for model in (ease_model, colour_ease_model):
        snap = Snapshot.build(Recommender.load(model), model)
        rec = snap.rec
        assert rec.blends_ease and "ease_indptr" in rec.arrays and "ease" not in rec.arrays
        assert unusable_reason(rec) is None and snap.ann is not None
        from_index = 0  # top items the EASE does not reach: found by the indexes, not scored exactly
        for u in range(rec.n_users):
            _, ease = rec._history_terms(np.array([u]))
            assert ease is not None
            reached = np.flatnonzero(ease[0])
            assert len(reached) > 0
            got, _ = user_top_k(rec, snap.ann, u, 30, rec.seen(u))
            from_index += int((~np.isin(got, reached)).sum())
        assert from_index > 0


def test_a_sparse_ease_reaching_every_item_or_none_still_matches(colour_ease_model: Path) -> None:
    snap = Snapshot.build(Recommender.load(colour_ease_model), colour_ease_model)
    n = snap.rec.n_items
    rows = np.arange(n)
    full = {"ease_indptr": np.arange(0, n * n + 1, n, dtype=np.int64),  # every item in every row
            "ease_indices": np.tile(rows, n).astype(np.int32),
            "ease_data": np.random.default_rng(0).normal(size=n * n).astype(np.float32)}
    empty = {"ease_indptr": np.zeros(n + 1, np.int64), "ease_indices": np.zeros(0, np.int32),
             "ease_data": np.zeros(0, np.float32)}
    for ease in (full, empty):
        rec = copy.copy(snap.rec)
        rec.arrays = dict(snap.rec.arrays, **ease)
        for u in range(0, rec.n_users, 5):
            got, got_scores = user_top_k(rec, snap.ann, u, 15, rec.seen(u))
            want, want_scores = _exact(rec, u, 15, rec.seen(u))
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)


def test_many_banned_items_go_through_a_bitmap_selector_with_the_same_result(
        snap: Snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    import fusionrec.inference.ann as ann

    rec = snap.rec
    want = [user_top_k(rec, snap.ann, u, 20, rec.seen(u)) for u in range(rec.n_users)]
    monkeypatch.setattr(ann, "BATCH_MAX_BANNED", 0)
    for u, (items, scores) in enumerate(want):
        got, got_scores = user_top_k(rec, snap.ann, u, 20, rec.seen(u))
        np.testing.assert_array_equal(got, items)
        np.testing.assert_array_equal(got_scores, scores)


def test_kept_rankings_of_a_large_catalogue_come_from_the_index(snap: Snapshot) -> None:
    from fusionrec.inference.ranking import UserRankings

    rankings = UserRankings(snap.rec, snap.ann, depth=30, capacity=1000)
    assert rankings.precompute() == 0  # no batch pass over every item: users are ranked as they come
    for u in range(0, snap.rec.n_users, 7):
        got, got_scores = rankings.get(u)
        want, want_scores = user_top_k(snap.rec, snap.ann, u, 30, snap.rec.seen(u))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
