"""Known users' kept rankings: the same answers as scoring every request, used only under the
default rules, bounded, rebuilt for a snapshot with added items; and the settled heap."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionrec.config import ServeConfig
from fusionrec.inference.checks import top_k
from fusionrec.inference.ranking import UserRankings
from fusionrec.inference.snapshot import NewItem, with_items
from fusionrec.monitoring.store import FeedbackStore


def _engine(model_dir: Path, tmp_path: Path, name: str, **cfg: object):  # noqa: ANN202
    from fusionrec.inference import InferenceEngine

    return InferenceEngine(model_dir, ServeConfig(**cfg), FeedbackStore(tmp_path / f"{name}.db"))


def _answer(out: dict) -> list[tuple[str, float]]:
    return [(it["item_id"], it["score"]) for it in out["items"]]


def _same(a: dict, b: dict) -> None:
    assert [i for i, _ in _answer(a)] == [i for i, _ in _answer(b)]
    assert [s for _, s in _answer(a)] == pytest.approx([s for _, s in _answer(b)], abs=1e-5)
    assert [it.get("explanation") for it in a["items"]] == [it.get("explanation") for it in b["items"]]


def test_kept_rankings_answer_as_scoring_every_request(model_dir: Path, tmp_path: Path) -> None:
    kept, scored = _engine(model_dir, tmp_path, "kept"), _engine(model_dir, tmp_path, "scored", rank_cache_users=0)
    try:
        rec = kept.snapshot.rec
        assert scored.snapshot.rankings is None
        assert len(kept.snapshot.rankings) == rec.n_users  # every user ranked on load
        for u in range(rec.n_users):
            for k in (1, 10, 100):
                _same(kept.recommend(rec.user_ids[u], k=k), scored.recommend(rec.user_ids[u], k=k))
        user, recent = rec.user_ids[0], [rec.item_ids[i] for i in (3, 5)]
        for kwargs in ({"recent_items": recent}, {"exclude_seen": False}):  # other rules are scored per request
            _same(kept.recommend(user, k=10, **kwargs), scored.recommend(user, k=10, **kwargs))
        unseen = kept.recommend(user, k=10, exclude_seen=False)
        assert {it["item_id"] for it in unseen["items"]} & {rec.item_ids[i] for i in rec.seen(0)}
    finally:
        kept.close()
        scored.close()


def test_explored_items_come_from_the_kept_ranking_beyond_the_top_k(model_dir: Path, tmp_path: Path) -> None:
    eng = _engine(model_dir, tmp_path, "explore", explore_share=0.3, explore_pool=20, explore_seed=4)
    try:
        rec, k = eng.snapshot.rec, 10
        assert eng.snapshot.rankings.depth == 100 + 20
        explored = 0
        for u in range(rec.n_users):
            ranked, _ = eng.snapshot.rankings.get(u)
            out = eng.recommend(rec.user_ids[u], k=k)
            ids = [rec.item_ids[i] for i in ranked.tolist()]
            chosen = [it["item_id"] for it in out["items"] if not it["explored"]]
            assert chosen == ids[: len(chosen)]
            assert {it["item_id"] for it in out["items"] if it["explored"]} <= set(ids[k : k + 20])
            explored += sum(it["explored"] for it in out["items"])
        assert explored > 0
    finally:
        eng.close()


def test_rankings_are_bounded_and_precomputed_only_when_small(model_dir: Path) -> None:
    from fusionrec.models.recommender import Recommender

    rec = Recommender.load(model_dir)
    small = UserRankings(rec, None, depth=15, capacity=3)
    assert small.precompute() == 3 and len(small) == 3
    for u in range(rec.n_users):
        cand, scores = small.get(u)
        assert len(small) <= 3 and len(cand) == 15 and (np.diff(scores) <= 0).all()
        assert not set(cand.tolist()) & set(rec.seen(u).tolist())
    assert UserRankings(rec, None, depth=15, capacity=100).precompute(max_cells=rec.n_items) == 0


def test_added_items_start_fresh_rankings_and_extend_the_modality_vectors(model_dir: Path, tmp_path: Path) -> None:
    eng = _engine(model_dir, tmp_path, "added")
    try:
        snap = eng.snapshot
        snap.modality_stack()
        new, _ = with_items(snap, [NewItem("fresh-1", "a new item about space travel",
                                           Image.new("RGB", (16, 16), (200, 30, 30)), "Fresh")])
        assert new.rankings is not snap.rankings and len(new.rankings) == 0
        assert new.rankings.depth == snap.rankings.depth
        np.testing.assert_allclose(new.modality_stack(), new.rec.modality_stack(), atol=1e-6)
        assert new.modality_stack().shape[0] == snap.n_items + 1
        eng.slot.snapshot = new
        scored = new.rec.score_users(np.array([0]))[0].astype(np.float32)
        ranked, scores = new.rankings.get(0)  # depth 160 covers the tiny catalogue (151 items): the new item is in it
        assert new.n_items - 1 in ranked.tolist()
        assert scores[ranked.tolist().index(new.n_items - 1)] == pytest.approx(float(scored[-1]), abs=1e-5)
        out = eng.recommend(new.rec.user_ids[0], k=100)
        assert [it["item_id"] for it in out["items"]] == [new.rec.item_ids[i] for i in top_k(scored, 100, new.rec.seen(0))]
    finally:
        eng.close()


def test_the_heap_is_settled_after_the_model_loads(model_dir: Path, tmp_path: Path) -> None:
    gc.unfreeze()  # whatever earlier tests froze
    assert gc.get_freeze_count() == 0
    eng = _engine(model_dir, tmp_path, "settled")
    try:
        assert gc.get_freeze_count() > 10_000  # the libraries and the model are out of the collector's walks
    finally:
        eng.close()
