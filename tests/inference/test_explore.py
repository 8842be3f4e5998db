"""Exploration: the share of explored slots, where they come from, what they never are, their marks
in the answer and the served log, and share 0 answering exactly as top-k does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import ServeConfig
from fusionrec.inference.checks import top_k
from fusionrec.inference.explore import EXPLAINED, Explorer, mark_explored
from fusionrec.monitoring.store import FeedbackStore


def _scores(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


# --- the explorer on plain arrays -------------------------------------------------------------
def test_share_zero_is_top_k_exactly() -> None:
    scores, exclude = _scores(), np.array([3, 7, 11])
    top, n = Explorer(0.0, 30, seed=1).top_k(scores, 10, exclude)
    assert n == 0 and top.tolist() == top_k(scores, 10, exclude).tolist()


@pytest.mark.parametrize(("share", "k"), [(0.2, 10), (0.15, 10), (0.3, 5)])
def test_served_share_matches_the_setting(share: float, k: int) -> None:
    ex, scores = Explorer(share, 30, seed=3), _scores()
    counts = [ex.top_k(scores, k, np.zeros(0, np.int64))[1] for _ in range(4000)]
    assert abs(np.mean(counts) / k - share) < 0.01
    assert set(counts) <= {int(share * k), int(share * k) + 1}  # whole part always, fraction drawn


def test_explored_items_come_from_just_beyond_the_top_k_and_never_excluded_ones() -> None:
    scores, k, pool = _scores(), 10, 20
    scores[[5, 50]] = -np.inf  # unscorable items are never served
    exclude = np.argsort(-scores)[[0, 4, 12, 15]]  # some of the best and of the near misses
    ranked = top_k(scores, k + pool, exclude)
    ex = Explorer(0.3, pool, seed=0)
    seen_explored: set[int] = set()
    for _ in range(300):
        top, n = ex.top_k(scores, k, exclude)
        assert len(top) == k and len(set(top.tolist())) == k
        assert not set(top.tolist()) & set(exclude.tolist()) and np.isfinite(scores[top]).all()
        assert top[: k - n].tolist() == ranked[: k - n].tolist()  # the model's choice keeps its order
        assert set(top[k - n :].tolist()) <= set(ranked[k:].tolist())  # explored: ranks k .. k + pool - 1
        assert (np.diff(scores[top]) <= 0).all()  # still in score order
        seen_explored |= set(top[k - n :].tolist())
    assert len(seen_explored) > pool // 2  # the draw covers the pool, not a fixed few


def test_same_seed_same_answers_and_nothing_beyond_means_no_exploration() -> None:
    scores = _scores()
    a = [Explorer(0.2, 30, seed=9).top_k(scores, 10, np.zeros(0, np.int64))[0].tolist() for _ in range(2)]
    assert a[0] == a[1]
    small = _scores(12)
    top, n = Explorer(0.5, 30, seed=0).top_k(small, 12, np.array([0, 1]))  # 10 items left, k = 12
    assert n == 0 and top.tolist() == top_k(small, 12, np.array([0, 1])).tolist()


@pytest.mark.parametrize(("share", "pool"), [(-0.1, 30), (1.0, 30), (0.2, 0)])
def test_bad_settings_are_refused_with_the_field(share: float, pool: int) -> None:
    with pytest.raises(ValueError, match="serve.explore_"):
        Explorer(share, pool)


def test_marks_name_the_last_items_and_their_explanations() -> None:
    items = [{"item_id": str(i), "explanation": {"top_modality": "text"}} for i in range(4)]
    assert mark_explored(items, 1) == [False, False, False, True]
    assert [it["explored"] for it in items] == [False, False, False, True]
    assert items[3]["explanation"] == {"top_modality": "text", "explored": True, "reason": EXPLAINED}
    assert "explored" not in items[0]["explanation"]


# --- the engine on the tiny model -----------------------------------------------------------
def _engine(model_dir: Path, tmp_path: Path, share: float, seed: int = 0):  # noqa: ANN202
    from fusionrec.inference import InferenceEngine

    cfg = ServeConfig(explore_share=share, explore_pool=30, explore_seed=seed)
    return InferenceEngine(model_dir, cfg, FeedbackStore(tmp_path / f"feedback-{share}.db"))


def test_share_zero_answers_as_top_k_and_logs_nothing_explored(model_dir: Path, tmp_path: Path) -> None:
    eng = _engine(model_dir, tmp_path, 0.0)
    try:
        rec = eng.snapshot.rec
        for u in range(5):
            out = eng.recommend(rec.user_ids[u], k=10)
            scores = rec.score_users(np.array([u]))[0][: eng.snapshot.n_items].astype(np.float32)
            expected = [rec.item_ids[i] for i in top_k(scores, 10, rec.seen(u))]
            assert [it["item_id"] for it in out["items"]] == expected
            assert all(set(it) == {"item_id", "title", "score", "position", "explanation"} for it in out["items"])
        eng.store.flush()
        assert not eng.store.read_served()["explored"].any()
    finally:
        eng.close()


def test_explored_items_are_marked_in_the_answer_and_the_served_log(model_dir: Path, tmp_path: Path) -> None:
    eng = _engine(model_dir, tmp_path, 0.3, seed=5)
    try:
        rec = eng.snapshot.rec
        answers, flags = [], []
        for u in range(rec.n_users):
            out = eng.recommend(rec.user_ids[u], k=10)
            seen = {rec.item_ids[i] for i in rec.seen(u)}
            assert not {it["item_id"] for it in out["items"]} & seen  # explored ones included
            for it in out["items"]:
                assert ("reason" in it["explanation"] and it["explanation"]["reason"] == EXPLAINED) == it["explored"]
            answers.append(out)
            flags += [it["explored"] for it in out["items"]]
        assert abs(np.mean(flags) - 0.3) < 0.05  # 800 slots
        served = eng.store.read_served()
        logged = served.groupby("request_id")["explored"].apply(list).to_dict()
        for out in answers:
            assert logged[out["request_id"]] == [it["explored"] for it in out["items"]]
    finally:
        eng.close()


def test_fold_in_and_popular_paths_keep_their_exclusions(model_dir: Path, tmp_path: Path) -> None:
    eng = _engine(model_dir, tmp_path, 0.5, seed=2)
    try:
        rec = eng.snapshot.rec
        recent = [rec.item_ids[i] for i in range(0, 40, 2)]
        for _ in range(30):
            out = eng.recommend("someone-new", k=10, recent_items=recent)
            assert out["path"] == "fold_in" and len(out["items"]) == 10
            assert not {it["item_id"] for it in out["items"]} & set(recent)
            assert any(it["explored"] for it in out["items"])
        pop = eng.recommend("nobody", k=10)
        assert pop["path"] == "popular" and len(pop["items"]) == 10
        for it in pop["items"]:  # the popular answer's explanation, or the explored one
            assert it["explanation"]["reason"] == (EXPLAINED if it["explored"] else "popular among all users")
    finally:
        eng.close()


def test_feedback_on_an_explored_item_joins_its_served_row(model_dir: Path, tmp_path: Path, token: str) -> None:
    eng = _engine(model_dir, tmp_path, 0.5, seed=4)
    try:
        out = eng.recommend(eng.snapshot.rec.user_ids[0], k=10)
        item = next(it for it in out["items"] if it["explored"])
        eng.feedback(out["user_id"], item["item_id"], "click", request_id=out["request_id"])
        fb, served = eng.store.read_feedback(), eng.store.read_served()
        row = served[(served["request_id"] == out["request_id"]) & (served["item_id"] == item["item_id"])]
        assert fb["position"].tolist() == [item["position"]] and row["explored"].tolist() == [True]
    finally:
        eng.close()


# --- the served table of a database written before the column -------------------------------
def test_old_database_gets_the_explored_column(db_url: str) -> None:
    import sqlalchemy as sa

    old = sa.create_engine(db_url)
    key = "INTEGER PRIMARY KEY" if old.dialect.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with old.begin() as conn:  # the served table as the store created it before the column existed
        conn.exec_driver_sql(
            f"CREATE TABLE served (id {key}, request_id VARCHAR(64) NOT NULL, user_id VARCHAR(256) "
            "NOT NULL, item_id VARCHAR(256) NOT NULL, position INTEGER NOT NULL, score FLOAT NOT NULL, "
            "model_version VARCHAR(128) NOT NULL, ts FLOAT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO served (request_id, user_id, item_id, position, score, model_version, ts) "
                             "VALUES ('old', 'u', 'a', 0, 1.0, 'v0', 1.0)")
    old.dispose()
    with FeedbackStore(db_url) as store:
        store.record_served("new", "u", ["a", "b"], [1.0, 0.5], "v1", ts=2.0, explored=[False, True])
        served = store.read_served()
    with FeedbackStore(db_url) as store:  # opening it again changes nothing
        again = store.read_served()
    expected = pd.DataFrame({"request_id": ["old", "new", "new"], "explored": [False, False, True]})
    pd.testing.assert_frame_equal(served[["request_id", "explored"]], expected)
    pd.testing.assert_frame_equal(again, served)


def test_diverse_draws_favour_near_misses_unlike_the_chosen_items() -> None:
    k, pool = 10, 20
    scores = -np.arange(k + pool, dtype=np.float32)  # item i is rank i
    vectors = np.zeros((k + pool, 2), np.float32)
    vectors[:, 0] = 1.0  # every item like the chosen ones ...
    vectors[k + 1 :: 2] = [0.0, 1.0]  # ... except every other near miss, which is orthogonal to them
    unlike = set(range(k + 1, k + pool, 2))

    def share_unlike(diverse: bool) -> float:
        ex = Explorer(0.2, pool, seed=1, diverse=diverse)
        picks = [i for _ in range(500) for i in ex.top_k(scores, k, np.zeros(0, np.int64), vectors)[0][k - 2 :].tolist()]
        return float(np.mean([i in unlike for i in picks]))

    assert share_unlike(True) > 0.95 and 0.35 < share_unlike(False) < 0.65
