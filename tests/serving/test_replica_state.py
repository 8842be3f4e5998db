"""Replicas in-process, each an InferenceEngine with its own store on one database (SQLite and a real
PostgreSQL): items added on one are served by the others after a poll and after a restart, the
champion pointer reaches every replica without a failed request, a champion that cannot load is
refused, and closing an engine commits its queued served impressions."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.serving.serving_fixtures import versioned_copy

from fusionrec.config import ServeConfig
from fusionrec.inference import InferenceEngine
from fusionrec.monitoring.rollout import promote
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore

pytestmark = pytest.mark.usefixtures("token")
AUTH = "Bearer test-token"


def _png(color: tuple[int, int, int] = (20, 200, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


class Replicas:
    """Engines on one database, closed at the end of the test."""

    def __init__(self, model_dir: Path, url: str, cache: Path) -> None:
        self.model_dir, self.url, self.cache = model_dir, url, cache
        self.engines: list[InferenceEngine] = []
        self.outcomes: list[tuple[str, str]] = []

    def start(self, background_served: bool = False) -> InferenceEngine:
        store = FeedbackStore(self.url, background_served=background_served)
        engine = InferenceEngine(self.model_dir, ServeConfig(), store, state=ServingState(store),
                                 model_cache=self.cache, observer=lambda api, out: self.outcomes.append((api, out)))
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


@pytest.fixture
def replicas(model_dir: Path, db_url: str, tmp_path: Path):
    group = Replicas(model_dir, db_url, tmp_path / "cache")
    yield group
    group.close()


def test_an_item_added_on_one_replica_is_served_by_the_others(replicas: Replicas) -> None:
    a, b = replicas.start(), replicas.start()
    image = base64.b64encode(_png()).decode()
    status, body = a.call("add_item", AUTH, True, item_id="shared-1", fields={"title": "Green", "overview": "leafy"},
                          image_base64=image)
    assert status == 200, body
    assert b.snapshot.rec.item_index("shared-1") is None
    assert b.poll() == {"items": 1, "champion": None}
    out = b.recommend("someone", k=5, recent_items=["shared-1"])
    assert out["path"] == "fold_in" and out["ignored_items"] == []
    a_vec = a.snapshot.rec.item_vectors()[a.snapshot.rec.item_index("shared-1")]
    b_vec = b.snapshot.rec.item_vectors()[b.snapshot.rec.item_index("shared-1")]
    assert np.allclose(a_vec, b_vec, atol=1e-5)  # the same content, encoded alike on both
    assert b.poll()["items"] == 0 and a.poll()["items"] == 0  # each item is applied once
    assert b.metadata()["added_items"] == 1


def test_one_id_is_added_once_across_replicas(replicas: Replicas) -> None:
    a, b = replicas.start(), replicas.start()
    assert a.call("add_item", AUTH, True, item_id="race", text="first")[0] == 200
    status, body = b.call("add_item", AUTH, True, item_id="race", text="second")  # b has not polled yet
    assert status == 409 and "already added" in body["error"]
    b.poll()
    assert b.call("add_item", AUTH, True, item_id="race", text="third")[0] == 409
    assert b.snapshot.rec.item_index("race") is not None


def test_a_restarted_replica_replays_every_runtime_item(replicas: Replicas) -> None:
    a = replicas.start()
    a.add_item("kept-1", text="a lamp", image=_png((200, 10, 10)))
    a.add_item("kept-2", fields={"title": "Blue", "genres": "decor"})
    fresh = replicas.start()  # a restart: nothing in memory, all from the database
    rec = fresh.snapshot.rec
    assert rec.item_index("kept-1") is not None and rec.item_index("kept-2") is not None
    for item in ("kept-1", "kept-2"):
        assert np.allclose(rec.item_vectors()[rec.item_index(item)],
                           a.snapshot.rec.item_vectors()[a.snapshot.rec.item_index(item)], atol=1e-5)
    assert fresh.metadata()["added_items"] == 2


def test_a_promotion_reaches_every_replica_without_a_failed_request(replicas: Replicas, model_dir: Path,
                                                                   tmp_path: Path) -> None:
    a, b = replicas.start(), replicas.start()
    a.add_item("before-promotion", text="an item added before the new model")
    b.poll()
    v2 = versioned_copy(model_dir, tmp_path / "v2", "v2")
    users = a.snapshot.rec.user_ids[:10]
    failures: list[object] = []
    count = [0]
    stop = threading.Event()

    def load(engine: InferenceEngine) -> None:
        while not stop.is_set():
            for user in users:
                status, body = engine.call("recommend", user_id=user, k=10, recent_items=["before-promotion"])
                count[0] += 1
                if status != 200 or len(body["items"]) != 10:
                    failures.append(body)

    threads = [threading.Thread(target=load, args=(e,)) for e in (a, b, a, b)]
    for th in threads:
        th.start()
    champ = promote(v2, ServingState(a.store), str(tmp_path / "models"), source="test")
    before = count[0]
    moved = [a.poll()["champion"], b.poll()["champion"]]
    during = count[0] - before
    stop.set()
    for th in threads:
        th.join()
    assert moved == [champ.to_dict(), champ.to_dict()]
    assert not failures and count[0] > 20 and during > 0
    for engine in (a, b):
        assert engine.snapshot.version == champ.model_version and engine.snapshot.version.startswith("v2+")
        assert engine.metadata()["champion"]["id"] == champ.id
        assert engine.snapshot.rec.item_index("before-promotion") is not None  # replayed onto the new model
        assert engine.poll()["champion"] is None  # the pointer did not move again: nothing reloaded


def test_a_champion_that_cannot_load_is_refused_and_serving_goes_on(replicas: Replicas, model_dir: Path,
                                                                    tmp_path: Path) -> None:
    a = replicas.start()
    version = a.snapshot.version
    state = ServingState(a.store)
    state.set_champion("broken", str(tmp_path / "no-such-model"))
    assert a.poll()["champion"] is None and a.snapshot.version == version
    assert ("champion", "refused") in replicas.outcomes
    assert a.call("recommend", user_id="u", k=3)[0] == 200
    good = state.set_champion("v3", str(versioned_copy(model_dir, tmp_path / "v3", "v3")))
    assert a.poll()["champion"]["id"] == good.id and a.snapshot.version.startswith("v3+")


def test_the_polling_thread_follows_the_state_on_its_own(replicas: Replicas) -> None:
    a, b = replicas.start(), replicas.start()
    b.start_polling(0.1)
    a.add_item("by-thread", text="found without a call")
    deadline = time.monotonic() + 5
    while b.snapshot.rec.item_index("by-thread") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.snapshot.rec.item_index("by-thread") is not None
    b.close()
    assert not [t for t in threading.enumerate() if t.name == "fusionrec-state-poller"], "close() stops polling"


def test_close_commits_the_queued_served_impressions(replicas: Replicas, db_url: str) -> None:
    engine = replicas.start(background_served=True)
    shown = sum(len(engine.recommend(f"user-{n}", k=7, explain=False)["items"]) for n in range(60))
    engine.close()
    with FeedbackStore(db_url) as store:
        assert store.count("served") == shown == 60 * 7


def test_replay_reads_the_runtime_items_a_page_at_a_time(replicas: Replicas, monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionrec.inference import slot

    a = replicas.start()
    for n in range(7):
        a.add_item(f"paged-{n}", text=f"item number {n}")
    reads: list[int] = []
    real = ServingState.items_since

    def counting(self: ServingState, after_id: int = 0, limit: int | None = None) -> list:
        rows = real(self, after_id, limit)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(slot, "REPLAY_PAGE", 3)
    monkeypatch.setattr(ServingState, "items_since", counting)
    fresh = replicas.start()
    assert reads == [3, 3, 1] and fresh.metadata()["added_items"] == 7
    assert all(fresh.snapshot.rec.item_index(f"paged-{n}") is not None for n in range(7))


def test_a_champion_in_an_object_store_is_fetched_then_served(replicas: Replicas, model_dir: Path,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    a = replicas.start()
    v4 = versioned_copy(model_dir, tmp_path / "v4", "v4")
    champ = promote(v4, ServingState(a.store), "memory://fusionrec-replicas/models")
    assert champ.uri.startswith("memory://") and a.poll()["champion"]["id"] == champ.id
    assert a.snapshot.version.startswith("v4+") and a.snapshot.model_dir.parent == replicas.cache
    for version in ("v5", "v6"):  # each swap keeps the new and the previous copy, deletes the rest
        promote(versioned_copy(model_dir, tmp_path / version, version), ServingState(a.store),
                "memory://fusionrec-replicas/models")
        previous = a.snapshot.model_dir
        assert a.poll()["champion"] is not None and a.snapshot.version.startswith(f"{version}+")
        assert sorted(replicas.cache.iterdir()) == sorted([previous, a.snapshot.model_dir])


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch):
    """An empty bucket of a local S3 API, its credentials and endpoint in this process's env. Yields its URI."""
    from tests.object_store import local_s3, reach_from_this_process

    with local_s3() as s3:
        reach_from_this_process(s3, monkeypatch)
        yield s3.bucket


def test_a_champion_in_an_s3_bucket_is_published_fetched_served_and_pruned(replicas: Replicas, model_dir: Path,
                                                                          tmp_path: Path, s3_bucket: str) -> None:
    import fsspec

    root = f"{s3_bucket}/models"
    a = replicas.start()
    for version in ("v4", "v5", "v6"):
        champ = promote(versioned_copy(model_dir, tmp_path / version, version), ServingState(a.store), root, keep=2)
        assert champ.uri.startswith(root + "/"), champ.uri
        assert a.poll()["champion"]["id"] == champ.id
        assert a.snapshot.version.startswith(f"{version}+") and a.snapshot.model_dir.parent == replicas.cache
    status, body = a.call("recommend", AUTH, False, user_id=a.snapshot.rec.user_ids[0], k=5)
    assert status == 200 and len(body["items"]) == 5, body
    published = sorted(p.rsplit("/", 1)[1] for p in fsspec.filesystem("s3").ls(root, refresh=True))
    assert len(published) == 2 and all(n.startswith(("v5", "v6")) for n in published), published


def test_a_started_replica_reads_only_what_is_new(replicas: Replicas, monkeypatch: pytest.MonkeyPatch) -> None:
    a = replicas.start()
    a.add_item("old-1", text="before the start")
    b = replicas.start()  # replays old-1 at start
    cursors: list[int] = []
    real = ServingState.items_since
    monkeypatch.setattr(ServingState, "items_since",
                        lambda self, after_id=0, limit=None: cursors.append(after_id) or real(self, after_id, limit))
    b.poll()
    assert cursors and min(cursors) > 0, "a poll after the replay starts past the items already applied"


def test_a_starting_replica_serves_the_champion_else_its_given_model(model_dir: Path, db_url: str,
                                                                     tmp_path: Path) -> None:
    from fusionrec.inference import build_engine

    params = tmp_path / "params.yaml"
    params.write_text(f"serve:\n  feedback_url: '{db_url}'\n  model_cache: '{tmp_path / 'cache'}'\n")
    with FeedbackStore(db_url) as store:
        state = ServingState(store)
        broken = state.set_champion("gone", str(tmp_path / "no-such-model"))
        engine = build_engine(model_dir, params, poll=False)  # a bad promotion must not keep a pod down
        assert engine.champion is None and engine.snapshot.model_dir == model_dir
        assert engine.poll()["champion"] is None, f"champion {broken.id} is not retried until the pointer moves"
        engine.close()
        good = state.set_champion("v5", str(versioned_copy(model_dir, tmp_path / "v5", "v5")))
        engine = build_engine(model_dir, params, poll=False)
        assert engine.champion == good and engine.snapshot.version.startswith("v5+")
        assert engine.metadata()["champion"]["uri"] == good.uri
        engine.close()
