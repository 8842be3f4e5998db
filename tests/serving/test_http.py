"""Once through a real `bentoml serve` on 127.0.0.1: every API over HTTP, Prometheus metrics,
a bounded schemathesis run (no 5xx), then SIGKILL and every acknowledged feedback event read back."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOKEN = "http-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, path: str, body: dict | None = None, token: bool = False) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A `bentoml serve` process group on a free loopback port; killed with SIGKILL at the end."""
    tmp = tmp_path_factory.mktemp("http")
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "FUSIONREC_MODEL": str(model_dir),
           "FUSIONREC_FEEDBACK_URL": f"sqlite:///{tmp / 'feedback.db'}", "FUSIONREC_TOKEN": TOKEN,
           "FUSIONREC_PARAMS": str(tmp / "absent.yaml"), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO / "src")}
    bentoml = Path(sys.executable).parent / "bentoml"
    log = open(tmp / "server.log", "wb")  # noqa: SIM115  (closed after the process is gone)
    proc = subprocess.Popen([str(bentoml), "serve", "serving.service:FusionRec", "--host", "127.0.0.1",
                             "--port", str(port), "--working-dir", str(REPO)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _call(base, "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"server did not become ready: {(tmp / 'server.log').read_text()[-3000:]}")
    info = {"base": base, "proc": proc, "tmp": tmp, "acked": []}
    yield info
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    log.close()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 10, 240)).save(buf, format="PNG")
    return buf.getvalue()


def test_every_api_over_http(server: dict, model_dir: Path) -> None:
    base = server["base"]
    assert _call(base, "/healthz")[0] == 200 and _call(base, "/readyz")[0] == 200
    status, meta = _call(base, "/metadata", {})
    assert status == 200 and meta["n_items"] > 0
    status, rec = _call(base, "/recommend", {"user_id": "stranger", "k": 5})
    assert status == 200 and rec["path"] == "popular" and len(rec["items"]) == 5
    recent = [rec["items"][0]["item_id"]]
    status, fold = _call(base, "/recommend", {"user_id": "stranger", "k": 5, "recent_items": recent})
    assert status == 200 and fold["path"] == "fold_in"
    assert _call(base, "/similar", {"item_id": recent[0], "k": 3})[0] == 200
    assert _call(base, "/recommend", {"user_id": "u", "k": 0})[0] == 400
    b64 = base64.b64encode(_png()).decode()
    status, added = _call(base, "/add_item", {"item_id": "http-new", "text": "blue", "image_base64": b64}, True)
    assert status == 200, added
    assert _call(base, "/similar", {"item_id": "http-new", "k": 3})[0] == 200
    assert _call(base, "/add_item", {"item_id": "x", "text": "no token"})[0] == 401
    for n, item in enumerate(rec["items"]):
        status, body = _call(base, "/feedback", {"user_id": "stranger", "item_id": item["item_id"],
                                                 "event": "click", "request_id": rec["request_id"]}, True)
        assert status == 200 and body["position"] == n
        server["acked"].append(body["id"])
    status, swapped = _call(base, "/reload", {"model": str(model_dir)}, True)
    assert status == 200 and swapped["n_items"] == meta["n_items"] + 1  # the new item was replayed
    status, metrics = _call(base, "/metrics")
    assert status == 200 and 'fusionrec_requests_total{api="recommend"' in metrics
    assert 'outcome="popular:unknown_user"' in metrics and 'outcome="fold_in"' in metrics


def test_schemathesis_finds_no_server_error(server: dict) -> None:
    """A bounded property-based run over the service's own OpenAPI: no 5xx anywhere."""
    st = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [str(st), "run", f"{server['base']}/docs.json", "--checks", "not_a_server_error", "--max-examples", "15",
         "-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", "20", "--phases", "examples,fuzzing",
         "--generation-deterministic", "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_acknowledged_feedback_survives_sigkill(server: dict) -> None:
    base, acked = server["base"], server["acked"]
    for n in range(20):
        status, body = _call(base, "/feedback", {"user_id": f"k{n}", "item_id": "http-new", "event": "like"}, True)
        assert status == 200
        acked.append(body["id"])
    os.killpg(server["proc"].pid, signal.SIGKILL)  # no graceful shutdown, no flush
    server["proc"].wait(timeout=30)
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(server["tmp"] / "feedback.db") as store:
        stored = set(store.read_feedback()["id"].tolist())
    assert len(acked) >= 20 and set(acked) <= stored
