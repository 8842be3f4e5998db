"""Two real `bentoml serve` replicas on one PostgreSQL database, as the pods of a Deployment run:
an item added on one is recommended by the other within seconds and after both restart; a
promotion (the champion pointer moved) reaches both under a bounded concurrent load with no
failed request; a graceful stop commits every served impression; nothing is left running."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from tests.serving.servers import Load, Server, call, start_server

from fusionrec.monitoring.rollout import promote
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore

pytestmark = pytest.mark.integration
POLL_S = 0.5  # serve.poll_interval_s of both replicas
NEW_ITEM_WITHIN_S = 5.0


def _params(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(f"serve:\n  poll_interval_s: {POLL_S}\n  max_k: 1000\n")
    return path


def _start_pair(model_dir: Path, folder: Path, url: str, params: Path) -> list[Server]:
    servers = [start_server(model_dir, folder / name, url, params, name=name) for name in ("a", "b")]
    for srv in servers:
        srv.wait_ready()
    return servers


SHOWN = [0]  # items in every successful /recommend answer of this test: the served rows to expect


def _ranked(base: str, source: str) -> list[str]:
    """Every item the replica ranks for a visitor who just looked at `source` (k = the whole catalogue)."""
    status, body = call(base, "/recommend", {"user_id": "visitor", "k": 1000, "recent_items": [source],
                                             "explain": False})
    assert status == 200, body
    SHOWN[0] += len(body["items"])
    return [it["item_id"] for it in body["items"]]


def _version(base: str) -> str:
    return str(call(base, "/metadata", {})[1]["model_version"])


@pytest.mark.slow  # 28 s; the rendered Deployment's two replicas (tests/k8s) cover this in the default suite
def test_two_replicas_share_items_and_follow_the_champion(model_dir: Path, ingested_dir: Path, postgres,  # noqa: ANN001
                                                          tmp_path: Path) -> None:
    url = postgres.new_database("replicas")
    params = _params(tmp_path / "conf")
    servers = _start_pair(model_dir, tmp_path, url, params)
    try:
        a, b = (srv.base for srv in servers)
        # a copy of a popular item, added on replica a only
        catalogue = pd.read_parquet(ingested_dir / "items.parquet").set_index("item_id")
        source = str(call(a, "/similar", {"item_id": str(catalogue.index[0]), "k": 1})[1]["items"][0]["item_id"])
        row = catalogue.loc[source]
        image = base64.b64encode(Path(row["image_path"]).read_bytes()).decode() if isinstance(
            row["image_path"], str) else None
        assert "replica-new" not in _ranked(b, source)
        status, added = call(a, "/add_item", {"item_id": "replica-new", "text": row["text"], "title": "copy",
                                              "image_base64": image}, token=True)
        assert status == 200, added
        acked = time.monotonic()
        while "replica-new" not in _ranked(b, source) and time.monotonic() - acked < 30:
            time.sleep(0.1)
        seen_after = time.monotonic() - acked
        assert seen_after < NEW_ITEM_WITHIN_S, f"replica b served the new item after {seen_after:.1f} s"
        similar = [it["item_id"] for it in call(b, "/similar", {"item_id": "replica-new", "k": 3})[1]["items"]]
        assert source in similar  # b encoded the same content: the copy sits next to its original

        # a promotion while both replicas serve a bounded concurrent load
        v2 = Path(shutil.copytree(model_dir, tmp_path / "v2"))
        config = json.loads((v2 / "config.json").read_text())
        config["meta"]["version"] = "v2"
        (v2 / "config.json").write_text(json.dumps(config))
        users = [str(u) for u in pd.read_parquet(model_dir / "users.parquet")["user_id"].head(20)]
        before = {_version(a), _version(b)}
        with Load([a, b], users) as load:
            while load.ok < 50 and not load.failed:
                time.sleep(0.05)
            ok_before = load.ok
            with FeedbackStore(url) as store:
                champ = promote(v2, ServingState(store), str(tmp_path / "models"), source="test")
            moved = time.monotonic()
            while {_version(a), _version(b)} != {champ.model_version} and time.monotonic() - moved < 60:
                time.sleep(0.1)
            swap_s = time.monotonic() - moved
            ok_at_swap = load.ok
            time.sleep(1.0)  # keep the load on the new model for a moment
        assert {_version(a), _version(b)} == {champ.model_version} != before
        assert load.failed == 0, load.errors[:5]
        assert load.ok > ok_at_swap > ok_before >= 50, "requests before, during and after the swap"
        for base in (a, b):
            assert call(base, "/metadata", {})[1]["champion"]["id"] == champ.id
            assert "replica-new" in _ranked(base, source)  # replayed onto the new model
        print(f"replicas: new item served by the other after {seen_after:.2f} s; promotion on both after "
              f"{swap_s:.2f} s; load {load.ok} ok / {load.failed} failed ({ok_at_swap - ok_before} while the pointer "
              f"moved and both swapped, {load.ok - ok_at_swap} after)")

        # a graceful stop (SIGTERM, as Kubernetes sends) commits every impression and ends every process
        for srv in servers:
            assert srv.stop() == []
        with FeedbackStore(url) as store:
            assert store.count("served") == load.shown + SHOWN[0]

        # both restart: the champion and the new item come from the database
        servers = _start_pair(model_dir, tmp_path, url, params)
        a, b = (srv.base for srv in servers)
        for base in (a, b):
            assert _version(base) == champ.model_version
            assert "replica-new" in _ranked(base, source)
    finally:
        survivors = [line for srv in servers for line in srv.stop()]
    assert survivors == []
