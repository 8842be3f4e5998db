"""The serving core in-process: paths, exclusions, explanations, limits, new items, swaps."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import ServeConfig
from fusionrec.inference import InferenceEngine, ServeError, top_k

pytestmark = pytest.mark.usefixtures("token")


def test_top_k_skips_excluded_and_sorts() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, np.nan], dtype=np.float32)
    assert top_k(scores, 2, np.array([1])).tolist() == [3, 2]
    assert top_k(scores, 10, np.array([], dtype=np.int64)).tolist() == [1, 3, 2, 0]


def test_known_user_gets_unseen_items_with_explanations(engine: InferenceEngine) -> None:
    rec = engine.snapshot.rec
    user = rec.user_ids[0]
    out = engine.recommend(user, k=5)
    assert out["path"] == "user" and out["fallback_reason"] is None and len(out["request_id"]) == 32
    ids = [it["item_id"] for it in out["items"]]
    assert len(ids) == 5 and not set(ids) & {rec.item_ids[i] for i in rec.seen(0)}
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    expl = out["items"][0]["explanation"]
    assert expl["top_modality"] in rec.modalities
    assert expl["closest_history_item"]["item_id"] in {rec.item_ids[i] for i in rec.seen(0)}


def test_exclude_seen_false_allows_seen_items(engine: InferenceEngine) -> None:
    rec = engine.snapshot.rec
    out = engine.recommend(rec.user_ids[0], k=engine.cfg.max_k, exclude_seen=False, explain=False)
    assert {it["item_id"] for it in out["items"]} & {rec.item_ids[i] for i in rec.seen(0)}


def test_unknown_user_is_folded_in_from_recent_items(engine: InferenceEngine) -> None:
    recent = engine.snapshot.rec.item_ids[:3]
    out = engine.recommend("new-user", k=5, recent_items=[*recent, "no-such-item"])
    assert out["path"] == "fold_in" and out["ignored_items"] == ["no-such-item"]
    assert not {it["item_id"] for it in out["items"]} & set(recent)


@pytest.mark.parametrize(("recent", "reason"), [(None, "unknown_user"), (["nope"], "no_known_recent_items")])
def test_popularity_fallback_names_its_reason(engine: InferenceEngine, recent: list[str] | None, reason: str) -> None:
    out = engine.recommend("stranger", k=3, recent_items=recent)
    assert (out["path"], out["fallback_reason"]) == ("popular", reason)
    assert out["items"][0]["item_id"] == engine.snapshot.rec.item_ids[int(engine.snapshot.popular[0])]


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"user_id": "u", "k": 0}, 400, "k"),
    ({"user_id": "u", "k": 10_000}, 400, "k"),
    ({"user_id": "u", "k": "5"}, 400, "k"),
    ({"user_id": ""}, 400, "user_id"),
    ({"user_id": "x" * 300}, 400, "user_id"),
    ({"user_id": "u", "recent_items": ["i"] * 500}, 413, "recent_items"),
    ({"user_id": "u", "recent_items": "i1"}, 400, "recent_items"),
    ({"user_id": "u", "recent_items": ["ok", ""]}, 400, "recent_items[1]"),
    ({"user_id": "u", "context": {"hour": {"nested": 1}}}, 400, "context.hour"),
])
def test_bad_recommend_input_names_the_field(engine: InferenceEngine, kwargs: dict, status: int, field: str) -> None:
    code, body = engine.call("recommend", **kwargs)
    assert (code, body["field"]) == (status, field)
    assert field in body["error"]


def test_similar_items_exclude_the_item(engine: InferenceEngine) -> None:
    item = engine.snapshot.rec.item_ids[0]
    out = engine.similar(item, k=4)
    assert len(out["items"]) == 4 and item not in [it["item_id"] for it in out["items"]]
    assert engine.call("similar", item_id="missing")[0] == 404


def test_feedback_is_joined_to_the_served_position(engine: InferenceEngine) -> None:
    out = engine.recommend(engine.snapshot.rec.user_ids[1], k=5)
    second = out["items"][1]["item_id"]
    status, body = engine.call("feedback", "Bearer test-token", True, user_id="u", item_id=second,
                               event="click", request_id=out["request_id"])
    assert status == 200 and body["position"] == 1
    engine.store.flush()
    fb = engine.store.read_feedback()
    assert fb["item_id"].tolist() == [second] and fb["position"].tolist() == [1]
    served = engine.store.read_served(request_id=out["request_id"])
    assert served["item_id"].tolist() == [it["item_id"] for it in out["items"]]


def test_write_apis_need_the_token(engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"user_id": "u", "item_id": "i", "event": "click"}
    assert engine.call("feedback", None, True, **args)[0] == 401
    assert engine.call("feedback", "Bearer wrong", True, **args)[0] == 401
    assert engine.call("feedback", "Bearer test-token", True, event="teleport", user_id="u", item_id="i")[0] == 400
    monkeypatch.delenv(engine.cfg.token_env)
    status, body = engine.call("feedback", "Bearer test-token", True, **args)
    assert status == 403 and engine.cfg.token_env in body["error"]


def _png(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"item_id": "n1"}, 400, "text"),
    ({"item_id": "n1", "image_base64": "!!not base64!!"}, 400, "image_base64"),
    ({"item_id": "n1", "image": b"not an image"}, 400, "image"),
    ({"item_id": "n1", "image": b"x" * 6_000_000}, 413, "image"),
    ({"item_id": "n1", "text": "y" * 6000}, 413, "text"),
    ({"item_id": "n1", "fields": {"title": 3}}, 400, "fields.title"),
])
def test_bad_new_items_are_refused(engine: InferenceEngine, kwargs: dict, status: int, field: str) -> None:
    code, body = engine.call("add_item", "Bearer test-token", True, **kwargs)
    assert (code, body["field"]) == (status, field)


def test_image_pixel_limit(model_dir: Path, token: str) -> None:
    eng = InferenceEngine(model_dir, ServeConfig(max_image_pixels=100))
    code, body = eng.call("add_item", "Bearer test-token", True, item_id="big", image=_png(size=64))
    assert (code, body["field"]) == (413, "image") and "pixels" in body["error"]


def test_new_item_is_served_at_once(engine: InferenceEngine) -> None:
    b64 = base64.b64encode(_png()).decode()
    out = engine.add_item("brand-new", fields={"title": "Red thing", "overview": "very red"}, image_base64=b64)
    assert out["modalities"] == {k: True for k in engine.snapshot.rec.modalities}
    assert engine.similar("brand-new", k=3)["items"]
    assert engine.call("add_item", "Bearer test-token", True, item_id="brand-new", text="again")[0] == 409
    assert engine.metadata()["n_items"] == out["n_items"]


def test_copy_of_a_known_item_reaches_its_fans(engine: InferenceEngine, ingested_dir: Path) -> None:
    rec = engine.snapshot.rec
    items = pd.read_parquet(ingested_dir / "items.parquet").set_index("item_id")
    pop = np.asarray(rec.popularity())
    source = int(np.argsort(-pop)[20])  # a popular item, so it has fans
    row = items.loc[rec.item_ids[source]]
    image = Path(row["image_path"]).read_bytes() if isinstance(row["image_path"], str) else None
    engine.add_item("copy", text=row["text"], image=image, title="copy")
    fans = [u for u in range(rec.n_users) if source in set(rec.seen(u).tolist())]
    others = [u for u in range(rec.n_users) if u not in set(fans)]

    def rank(u: int) -> int:  # position of the copy in the user's full list (max_k = 100 of 150 items)
        ids = [it["item_id"] for it in engine.recommend(rec.user_ids[u], k=100, explain=False)["items"]]
        return ids.index("copy") if "copy" in ids else 100

    assert len(fans) >= 5
    assert np.median([rank(u) for u in fans]) < np.median([rank(u) for u in others])
    assert rec.item_ids[source] in [it["item_id"] for it in engine.similar("copy", k=3)["items"]]


@pytest.mark.slow  # 10 s; promotions under requests are covered by tests/serving/test_replica_state.py
def test_model_swap_under_load_has_no_failures(engine: InferenceEngine, model_copy: Path) -> None:
    users = engine.snapshot.rec.user_ids[:20]
    failures: list[object] = []
    stop = threading.Event()
    count = [0]

    def loop() -> None:
        while not stop.is_set():
            for u in users:
                status, body = engine.call("recommend", user_id=u, k=10, recent_items=["no-such"])
                count[0] += 1
                if status != 200 or len(body["items"]) != 10:
                    failures.append(body)

    engine.add_item("kept-across-swaps", text="an item added before the swap")
    threads = [threading.Thread(target=loop) for _ in range(3)]
    for th in threads:
        th.start()
    versions = []
    for _ in range(4):
        versions.append(engine.reload(model_copy)["model_version"])
        engine.reload(engine.snapshot.model_dir)
    stop.set()
    for th in threads:
        th.join()
    assert not failures and count[0] > 20
    assert engine.snapshot.rec.item_index("kept-across-swaps") is not None  # replayed onto the new model
    assert engine.call("reload", "Bearer test-token", True, model="/no/such/model")[0] == 404


def test_metadata_describes_the_model(engine: InferenceEngine) -> None:
    meta = engine.metadata()
    assert meta["model_version"] and meta["trained_at"] and meta["data_fingerprint"]
    assert set(meta["modalities"]) == set(engine.snapshot.rec.modalities) and meta["metrics"]


def test_unexpected_type_never_raises(engine: InferenceEngine) -> None:
    with pytest.raises(ServeError):
        engine.recommend(None, k=3)  # type: ignore[arg-type]


def test_one_user_is_scored_as_in_a_batch(engine: InferenceEngine) -> None:
    """A request scores one user from the raw history arrays; evaluation scores batches through the
    sparse matrix: both give the same scores, with EASE blended in and with items added while serving."""
    import copy

    rec = copy.copy(engine.snapshot.rec)
    assert "ease" in rec.arrays and "cold_item" in rec.arrays
    rec.meta = {**rec.meta, "ease_blend": 0.3}  # whatever the tiny model chose, blend EASE in
    users = np.arange(rec.n_users)
    one_by_one = np.stack([rec.score_users(np.array([u]))[0] for u in users])
    np.testing.assert_allclose(one_by_one, rec.score_users(users), rtol=0, atol=1e-5)
    engine.add_item("added-later", text="a red cotton shirt")
    grown = copy.copy(engine.snapshot.rec)
    grown.meta = rec.meta
    assert grown.n_items == rec.n_items + 1 and not grown.arrays["trained"][-1]
    one_by_one = np.stack([grown.score_users(np.array([u]))[0] for u in users])
    np.testing.assert_allclose(one_by_one, grown.score_users(users), rtol=0, atol=1e-5)


def test_a_new_engine_has_run_every_read_path(engine: InferenceEngine) -> None:
    """Ready means fast: the user matrix and the explanation vectors exist before the first request."""
    assert engine.ready
    assert engine.snapshot.rec._users is not None and engine.snapshot._modality is not None


def test_a_polling_replica_is_ready_once_its_encoders_ran(model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.inference import slot as slot_module
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    release, entered = threading.Event(), threading.Event()
    real_warm = slot_module.warm

    def slow_warm(snap: object) -> None:
        entered.set()
        release.wait(30)
        real_warm(snap)

    monkeypatch.setattr(slot_module, "warm", slow_warm)
    store = FeedbackStore(tmp_path / "feedback.db")
    eng = InferenceEngine(model_dir, ServeConfig(), store, state=ServingState(store))
    try:
        assert eng.ready  # not polling: nothing runs in the background
        eng.start_polling(0.2)
        assert entered.wait(30) and not eng.ready
        release.set()
        deadline = time.monotonic() + 30
        while not eng.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.ready
    finally:
        release.set()
        eng.close()
