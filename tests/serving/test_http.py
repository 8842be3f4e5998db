"""Once through a real `bentoml serve` on 127.0.0.1: every API over HTTP, Prometheus metrics,
a bounded schemathesis run (no 5xx), then every process of the server killed in the middle of
32 concurrent feedback writers, and every acknowledged event read back."""

from __future__ import annotations

import base64
import http.client
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.serving.servers import TOKEN, Server, call, start_server

pytestmark = pytest.mark.integration
WRITERS = 32  # concurrent feedback writers while the server is killed
KILL_AFTER_ACKS = 1000  # the kill comes once this many events are acknowledged (or after KILL_AFTER_S)
KILL_AFTER_S = 30.0


def _call(base: str, path: str, body: dict | None = None, token: bool = False) -> tuple[int, dict | str]:
    return call(base, path, body, token)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One `bentoml serve` tree on a free loopback port with a SQLite store; killed (all of it) at the end."""
    tmp = tmp_path_factory.mktemp("http")
    srv = start_server(model_dir, tmp, f"sqlite:///{tmp / 'feedback.db'}")
    try:
        srv.wait_ready()
        yield {"base": srv.base, "server": srv, "tmp": tmp, "acked": []}
    finally:
        srv.kill()


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


def test_acknowledged_feedback_survives_killing_every_server_process(server: dict) -> None:
    """SIGKILL to the arbiter and every worker at once (no shutdown, no flush) while 32 writers are
    mid-stream: every event the server acknowledged is in the store, and no process is left."""
    srv: Server = server["server"]
    acked: list[int] = list(server["acked"])
    lock, killed, errors_after_kill, failures = threading.Lock(), threading.Event(), [0], []

    def write(n: int) -> None:
        for k in range(400):  # bounded: the kill ends it long before
            try:
                status, body = _call(srv.base, "/feedback", {"user_id": f"w{n}", "item_id": "http-new",
                                                             "event": "like", "request_id": f"r{n}-{k}"}, True)
            except (OSError, http.client.HTTPException) as exc:  # a connection cut by the kill
                with lock:
                    if killed.is_set():
                        errors_after_kill[0] += 1
                    else:
                        failures.append(repr(exc))
                return
            with lock:
                if status != 200:
                    failures.append(f"{status} {body}")
                    return
                acked.append(int(body["id"]))

    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(WRITERS)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + KILL_AFTER_S
    while len(acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = {p.pid for p in srv.tree()}
    assert len(pids) >= 2, "the arbiter and at least one worker"
    killed.set()
    assert srv.kill() == len(pids)
    for th in threads:
        th.join(timeout=60)
    assert not [th for th in threads if th.is_alive()]
    assert srv.tree() == [], "a process of the server survived"
    with pytest.raises(OSError):  # nobody answers on the port any more
        call(srv.base, "/healthz", timeout=5)
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(server["tmp"] / "feedback.db") as store:
        stored = set(store.read_feedback()["id"].tolist())
    lost = set(acked) - stored
    print(f"crash: {len(acked)} acknowledged by {WRITERS} writers, {len(lost)} lost, "
          f"{len(stored) - len(acked)} stored but unacknowledged, {errors_after_kill[0]} writers cut off")
    assert not failures, failures[:5]  # before the kill every write was acknowledged
    assert len(acked) >= 100 and errors_after_kill[0] > 0, "the kill must land while writers are writing"
    assert not lost
