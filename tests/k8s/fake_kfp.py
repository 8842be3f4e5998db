"""A small stand-in for the Kubeflow Pipelines API server, for the real `kfp.Client`.

It answers the REST calls `kfp.Client(...).create_run_from_pipeline_package` makes (kfp SDK
2.x, API v2beta1): the health check, listing experiments by name, creating an experiment and
creating a run, and records every request (method, path, query, headers, JSON body). Anything
else gets a 404 and is recorded too, so a test sees calls it did not expect. It listens on
127.0.0.1 only, serves at most `max_requests`, and `stop()` (or leaving the `with`) shuts it down.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: Any


@dataclass
class FakeKfp:
    """The fake API server (see the module doc); `url` is its endpoint once started."""

    max_requests: int = 50
    calls: list[Call] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> FakeKfp:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # quiet
                pass

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = Call(method, parts.path, parse_qs(parts.query), headers, body)
                with fake._lock:
                    fake.calls.append(call)
                    if len(fake.calls) > fake.max_requests:
                        self._answer(429, {"error": "fake KFP: too many requests"})
                        return
                    status, payload = fake.respond(call)
                self._answer(status, payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.timeout = 5
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kfp", daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def respond(self, call: Call) -> tuple[int, dict[str, Any]]:
        """The API's answer to one call (status, JSON)."""
        if call.method == "GET" and call.path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if call.method == "GET" and call.path == f"{API}/experiments":
            wanted = [p["stringValue"] for f in call.query.get("filter", [])
                      for p in json.loads(f).get("predicates", []) if p.get("key") == "display_name"]
            found = [e for e in self.experiments if not wanted or e["display_name"] in wanted]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if call.method == "POST" and call.path == f"{API}/experiments":
            experiment = {**call.body, "experiment_id": f"experiment-{len(self.experiments) + 1}"}
            self.experiments.append(experiment)
            return 200, experiment
        if call.method == "POST" and call.path == f"{API}/runs":
            run = {"run_id": f"run-{len(self.runs) + 1}", "experiment_id": call.body.get("experiment_id"),
                   "display_name": call.body.get("display_name"), "state": "PENDING"}
            self.runs.append({**call.body, **run})
            return 200, run
        return 404, {"error": f"fake KFP: no route {call.method} {call.path}"}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __exit__(self, *_exc: object) -> None:
        self.stop()
