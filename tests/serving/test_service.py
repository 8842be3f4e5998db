"""The BentoML service class in-process (its ASGI app under Starlette's TestClient): every API
and each bad-input case answers with the right status and a body that names the field."""

from __future__ import annotations

import base64
import io
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture(scope="module")
def client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from starlette.testclient import TestClient

    tmp = tmp_path_factory.mktemp("service")
    mp = pytest.MonkeyPatch()
    mp.setenv("BENTOML_HOME", str(tmp / "bentoml"))
    mp.setenv("FUSIONREC_MODEL", str(model_dir))
    mp.setenv("FUSIONREC_FEEDBACK_URL", f"sqlite:///{tmp / 'feedback.db'}")
    mp.setenv("FUSIONREC_PARAMS", str(tmp / "absent-params.yaml"))
    mp.setenv("FUSIONREC_TOKEN", "test-token")
    mp.syspath_prepend(str(REPO))
    from serving.service import FusionRec

    with TestClient(FusionRec.to_asgi()) as c:
        c.tmp = tmp  # type: ignore[attr-defined]
        yield c
    mp.undo()
    sys.modules.pop("serving.service", None)


def test_health_and_readiness(client) -> None:  # /metrics needs the real server: test_http.py
    assert client.get("/healthz").status_code == 200
    assert client.get("/livez").status_code == 200
    deadline, statuses = time.monotonic() + 60, []  # ready once the encoders have run (a background warm-up)
    while not statuses or (statuses[-1] != 200 and time.monotonic() < deadline):
        statuses.append(client.get("/readyz").status_code)
        time.sleep(0.1)
    assert set(statuses) <= {503, 200} and statuses[-1] == 200, statuses


def test_recommend_paths(client) -> None:
    meta = client.post("/metadata", json={}).json()
    assert meta["n_items"] > 0 and meta["model_version"]
    r = client.post("/recommend", json={"user_id": "stranger", "k": 3})
    assert r.status_code == 200 and r.json()["path"] == "popular" and len(r.json()["items"]) == 3
    recent = [it["item_id"] for it in r.json()["items"]]
    r = client.post("/recommend", json={"user_id": "stranger", "k": 3, "recent_items": recent})
    assert r.json()["path"] == "fold_in"


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/recommend", {"user_id": "u", "k": 0}, 400, "k"),
    ("/recommend", {"user_id": "u", "k": 1000}, 400, "k"),
    ("/recommend", {"user_id": ""}, 400, "user_id"),
    ("/recommend", {"user_id": "u", "recent_items": ["x"] * 1000}, 413, "recent_items"),
    ("/recommend", {"user_id": "u", "context": {"a": [1]}}, 400, "context.a"),
    ("/similar", {"item_id": "no-such-item"}, 404, "item_id"),
    ("/similar", {"item_id": "x", "k": -1}, 400, "k"),
])
def test_bad_input_is_a_4xx_naming_the_field(client, path: str, body: dict, status: int, field: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status and r.json()["field"] == field


@pytest.mark.parametrize("body", [{}, {"user_id": 5, "k": "many"}, {"user_id": "u", "k": 1.5}])
def test_schema_violations_are_400(client, body: dict) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == 400


def test_not_json_is_a_4xx(client) -> None:
    r = client.post("/recommend", content=b"{not json", headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500


def test_write_endpoints_need_the_token(client) -> None:
    body = {"user_id": "u", "item_id": "i", "event": "click"}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/add_item", json={"item_id": "z", "text": "t"}).status_code == 401
    assert client.post("/reload", json={"model": "x"}).status_code == 401


def test_feedback_round_trip(client) -> None:
    rec = client.post("/recommend", json={"user_id": "stranger", "k": 3}).json()
    item = rec["items"][2]["item_id"]
    r = client.post("/feedback", json={"user_id": "stranger", "item_id": item, "event": "like",
                                       "request_id": rec["request_id"]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["stored"] and r.json()["position"] == 2
    r = client.post("/feedback", json={"user_id": "u", "item_id": item, "event": "teleport"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "event"
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(client.tmp / "feedback.db") as store:  # type: ignore[attr-defined]
        assert store.read_feedback()["event"].tolist() == ["like"]


def _png(color: tuple[int, int, int] = (20, 200, 20)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def test_add_item_json_and_upload(client) -> None:
    b64 = base64.b64encode(_png()).decode()
    r = client.post("/add_item", json={"item_id": "svc-new", "text": "a green thing", "image_base64": b64},
                    headers=AUTH)
    assert r.status_code == 200 and all(r.json()["modalities"].values())
    assert client.post("/similar", json={"item_id": "svc-new", "k": 2}).status_code == 200
    r = client.post("/add_item_upload", data={"item_id": "svc-up", "text": "uploaded"},
                    files={"image": ("x.png", _png((1, 2, 3)), "image/png")}, headers=AUTH)
    assert r.status_code == 200, r.text
    r = client.post("/add_item", json={"item_id": "svc-bad", "image_base64": "%%%"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "image_base64"
    r = client.post("/add_item", json={"item_id": "svc-new", "text": "dup"}, headers=AUTH)
    assert r.status_code == 409
    r = client.post("/add_item", json={"item_id": "svc-vec", "vectors": {"audio": [0.1, 0.2]}}, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "vectors.audio" and "it has: none" in r.json()["error"]


def test_reload_swaps_the_model(client, model_dir: Path) -> None:
    r = client.post("/reload", json={"model": str(model_dir)}, headers=AUTH)
    assert r.status_code == 200 and r.json()["model_version"]
    assert client.post("/similar", json={"item_id": "svc-new", "k": 2}).status_code == 200  # replayed
    r = client.post("/reload", json={"model": "no-such-model:v1"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["field"] == "model"


def test_openapi_lists_every_api(client) -> None:
    paths = client.get("/docs.json").json()["paths"]
    for api in ("/recommend", "/similar", "/add_item", "/add_item_upload", "/feedback", "/metadata", "/reload"):
        assert api in paths


@pytest.mark.parametrize("body", [b"--x\r\n2.96e+181--x--\r\n", b"\x00\x01garbage"])
def test_malformed_multipart_is_a_400(client, body: bytes) -> None:
    r = client.post("/add_item_upload", content=body, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400


def test_oversized_upload_is_a_413(client) -> None:
    r = client.post("/add_item_upload", data={"item_id": "big"}, files={"image": ("x.png", b"0" * 6_500_000, "image/png")},
                    headers=AUTH)
    assert r.status_code == 413
