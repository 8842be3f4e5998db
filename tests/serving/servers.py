"""Real serving processes for the HTTP tests: start, stop gracefully, crash, and prove nothing is left.

`bentoml serve` starts an arbiter that spawns the API workers in process groups of their own,
so signalling the group of the command we started misses the worker that answers requests.
Here every process of the tree is signalled (psutil), and every process a test starts carries
MARK in its environment (inherited by the workers), so a session-end check finds any survivor.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fusionrec.cli.serve import serve_command

MARK = "FUSIONREC_TEST_SERVER"
SESSION = str(os.getpid())  # the pytest process: MARK's value for every server this session starts
TOKEN = "http-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, path: str, body: dict | None = None, token: bool = False, timeout: float = 30.0
         ) -> tuple[int, Any]:
    """(status, JSON body or text) of one request; a GET when body is None."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


@dataclass
class Server:
    """One `bentoml serve` process tree on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    log: Path
    known: dict[int, psutil.Process] = field(default_factory=dict)  # every process seen in its tree

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tree(self) -> list[psutil.Process]:
        """The live processes of the tree (the command and every descendant)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        self.known.update({p.pid: p for p in procs})
        # a process seen before and orphaned since (its parent died) is no child any more: still ours
        procs += [p for pid, p in self.known.items() if pid not in {q.pid for q in procs}]
        return [p for p in procs if _alive(p)]

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if call(self.base, "/readyz", timeout=5)[0] == 200:
                    self.tree()
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.kill()
        raise AssertionError(f"server on port {self.port} did not become ready:\n{self.log_tail()}")

    def kill(self) -> int:
        """SIGKILL every process of the tree at once (the arbiter is stopped first so it cannot
        spawn a replacement worker); returns how many processes were killed."""
        procs = self.tree()
        for p in procs[:1]:
            _signal(p, signal.SIGSTOP)
        procs = self.tree()  # the stopped arbiter spawns nothing more
        for p in procs:
            _signal(p, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        self._reap()
        return len(procs)

    def stop(self, timeout: float = 60.0) -> list[str]:
        """SIGTERM to the command, as Kubernetes stops a container; wait for the whole tree to exit.

        Returns:
            The processes still alive after `timeout` (then killed), as "pid cmdline": [] on a clean stop.
        """
        procs = self.tree()
        if procs:
            _signal(procs[0], signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        survivors = [f"{p.pid} {' '.join(_cmdline(p))}" for p in alive]
        if alive:
            self.kill()
        self._reap()
        return survivors

    def _reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        p.send_signal(sig)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ["?"]


def start_server(model_dir: Path, folder: Path, feedback_url: str, params: Path | None = None,
                 port: int | None = None, name: str = "server") -> Server:
    """`bentoml serve serving.service:FusionRec` as `fusionrec serve` runs it (installed packages, the
    folder as working directory and BentoML home), not yet ready: call `wait_ready()`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({MARK: SESSION, "BENTOML_HOME": str(folder / "bentoml"), "FUSIONREC_MODEL": str(model_dir),
                "FUSIONREC_FEEDBACK_URL": feedback_url, "FUSIONREC_TOKEN": TOKEN,
                "FUSIONREC_PARAMS": str(params or folder / "absent.yaml"), "BENTOML_DO_NOT_TRACK": "true",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    log = folder / f"{name}-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(serve_command("127.0.0.1", port), cwd=folder, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Server(proc, port, log)


def leftovers() -> list[str]:
    """Processes this test session started (MARK in their environment) that are still running."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and _alive(p) and p.environ().get(MARK) == SESSION:
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class Load:
    """Concurrent /recommend calls on every replica until stopped (or max_requests), counting failures."""

    def __init__(self, bases: list[str], users: list[str], threads: int = 4, max_requests: int = 3000) -> None:
        self.bases, self.users, self.threads, self.max_requests = bases, users, threads, max_requests
        self.ok = self.failed = self.shown = 0
        self.errors: list[str] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, n: int) -> None:
        k = 0
        while not self._stop.is_set() and self.ok + self.failed < self.max_requests:
            base, user = self.bases[(n + k) % len(self.bases)], self.users[k % len(self.users)]
            k += 1
            try:
                status, body = call(base, "/recommend", {"user_id": user, "k": 10, "explain": False}, timeout=30)
                good = status == 200 and len(body["items"]) == 10
            except OSError as exc:
                status, body, good = 0, str(exc), False
            with self._lock:
                if good:
                    self.ok, self.shown = self.ok + 1, self.shown + len(body["items"])
                else:
                    self.failed += 1
                    self.errors.append(f"{base} {status} {str(body)[:200]}")

    def __enter__(self) -> Load:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)
