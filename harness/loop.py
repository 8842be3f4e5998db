"""The closed loop end to end (`fusionrec loop`, `make loop`).

demo data -> train -> serve (a real `bentoml serve` on 127.0.0.1) -> simulate -> tastes shift ->
monitor after every round -> retrain on the merged feedback -> gate -> promote (published under the
models root and the champion pointer moved in the database; the service's poll swaps it in while a
request loop keeps calling it) -> simulate on -> click-through recovers.
Writes loop.json (every round, every event, the numbers) and ctr.png (CTR over time, events marked).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fusionrec.config import Params
from fusionrec.io import write_json
from harness.simulate import RoundStats, Simulator

if TYPE_CHECKING:
    from fusionrec.packaging import ModelStore

logger = logging.getLogger(__name__)
TOKEN_DEFAULT = "fusionrec-loop-token"

DEMO_OVERLAY = Path(__file__).resolve().parent / "demo_loop.yaml"  # the demo loop's declared settings


def overlay_params(params: Params, overlay: Path | str | None) -> Params:
    """params with a partial params file (section -> fields) laid over it, validated like params.yaml.

    None: params as they are. The demo loop's settings live in such a file (DEMO_OVERLAY), not in code.
    """
    if overlay is None or str(overlay) == "":
        return params
    from fusionrec.config import ConfigError, Params

    path = Path(overlay)
    if not path.is_file():
        raise ConfigError(f"{path}: params overlay not found")
    fields = yaml.safe_load(path.read_text()) or {}
    if not isinstance(fields, dict) or not all(isinstance(v, dict) for v in fields.values()):
        raise ConfigError(f"{path}: expected sections of fields, e.g. `train: {{dim: 32}}`")
    unknown = sorted(set(fields) - set(Params.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown params section(s) {', '.join(unknown)}")
    try:
        update = {name: type(getattr(params, name))(**{**getattr(params, name).model_dump(), **section})
                  for name, section in fields.items()}
    except ValueError as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    return params.model_copy(update=update)


def quick_params(params: Params) -> Params:
    """params with the demo loop's declared settings (DEMO_OVERLAY) laid over."""
    return overlay_params(params, DEMO_OVERLAY)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(model_dir: Path, port: int, store_url: str, token: str, home: Path,
                  log_path: Path, ready_timeout: float = 180.0, params_file: Path | None = None
                  ) -> subprocess.Popen[bytes]:
    """Start `bentoml serve serving.service:FusionRec` on 127.0.0.1:port and wait for /readyz.

    The process gets its own session so `stop_service` can end it and its workers by its id.
    params_file: the params file the service reads (FUSIONREC_PARAMS; its serve section, e.g. the
    exploration share); None = the service's defaults.
    """
    import httpx

    env = {**os.environ, "FUSIONREC_MODEL": str(Path(model_dir).resolve()), "FUSIONREC_TOKEN": token,
           "FUSIONREC_FEEDBACK_URL": store_url, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    if params_file is not None:
        env["FUSIONREC_PARAMS"] = str(Path(params_file).resolve())
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:FusionRec", "--host", "127.0.0.1",
           "--port", str(port)]
    log = open(log_path, "ab")  # noqa: SIM115 (the child writes to it for its lifetime)
    proc = subprocess.Popen(cmd, cwd=Path(log_path).parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + ready_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    stop_service(proc)
    raise TimeoutError(f"service not ready after {ready_timeout}s; see {log_path}")


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM every process of the service's tree (its workers have process groups of their own),
    then SIGKILL what is still running after `timeout` seconds."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_for_version(url: str, version: str, timeout: float) -> float | None:
    """Seconds until the service's /metadata reports `version` (it follows the champion pointer); None = never."""
    import httpx

    started = time.time()
    while time.time() - started < timeout:
        try:
            meta = httpx.post(f"{url}/metadata", json={}, timeout=5).json()
            if str(meta.get("model_version")) == version:
                return round(time.time() - started, 2)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    return None


class RequestProbe:
    """A background loop of /recommend calls (bounded), counting failures, e.g. during a model swap."""

    def __init__(self, url: str, user_id: str, max_requests: int = 100_000) -> None:
        self.url, self.user_id, self.max_requests = url, user_id, max_requests
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and self.ok + self.failed < self.max_requests:
                try:
                    r = client.post(f"{self.url}/recommend", json={"user_id": self.user_id, "k": 10, "explain": False})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.ok, self.failed = self.ok + ok, self.failed + (not ok)
                time.sleep(0.02)

    def __enter__(self) -> RequestProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class LoopState:
    """What happened, in order; written to loop.json."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # {"round", "t", "kind", ...}
    numbers: dict[str, Any] = field(default_factory=dict)

    def mark(self, round_: int, kind: str, **info: Any) -> None:
        self.events.append({"round": round_, "t": time.time(), "kind": kind, **info})
        logger.info("loop: round %d %s %s", round_, kind, info)


def _phase_ctr(rounds: list[dict[str, Any]], phase: str, last: int | None = None) -> float | None:
    rs = [r for r in rounds if r["phase"] == phase]
    rs = rs[-last:] if last else rs
    imps = sum(r["impressions"] for r in rs)
    return round(sum(r["clicks"] for r in rs) / imps, 5) if imps else None


def plot_ctr(state: LoopState, path: Path) -> Path:
    """CTR per round (observed and expected) with the shift, detection and promotion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = [r["round"] for r in state.rounds]
    ax.plot(xs, [r["ctr"] for r in state.rounds], marker="o", label="click-through (observed)")
    ax.plot(xs, [r["expected_ctr"] for r in state.rounds], ls="--", alpha=0.7, label="click-through (expected)")
    colours = {"shift": "tab:red", "drift_detected": "tab:orange", "promoted": "tab:green", "rejected": "tab:gray"}
    per_round: dict[int, int] = {}
    top = ax.get_ylim()[1]
    for ev in state.events:
        if ev["kind"] in colours:
            nth = per_round.get(ev["round"], 0)  # several events after one round: side by side
            per_round[ev["round"]] = nth + 1
            x = ev["round"] - 0.5 + 0.12 * nth
            ax.axvline(x, color=colours[ev["kind"]], ls=":", lw=2)
            ax.text(x + 0.03, top, ev["kind"].replace("_", " "), rotation=90, va="top",
                    color=colours[ev["kind"]], fontsize=8)
    ax.set_xlabel("simulation round")
    ax.set_ylabel("click-through")
    ax.set_title("fusionrec closed loop: click-through over time")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stats_row(stats: RoundStats, phase: str) -> dict[str, Any]:
    stats.phase = phase
    return stats.to_dict()


def run_loop(out: Path, params: Params, rounds_before: int = 4, max_shifted: int = 14, rounds_after: int = 4,
             token: str = TOKEN_DEFAULT, *, model_store: ModelStore, swap_timeout: float = 120.0) -> dict[str, Any]:
    """The whole closed loop (see the module doc); returns the numbers written to loop.json.

    Args:
        out: working folder (data/, base/, store, monitor/, retrain/, loop.json, ctr.png).
        params: every section; `demo`, `featurize`, `train` size the run, `simulate` the users,
            `monitor` the thresholds (its windows are set from the traffic, see below).
        rounds_before: rounds with the original tastes (the monitor's reference window).
        max_shifted: at most this many shifted rounds waiting for detection and a promoted
            challenger (a rejected one is recorded, and the next round's monitor may ask again).
        rounds_after: rounds after the promotion.
        model_store: the model store the base model and promoted challengers are packaged into
            (`serving.store.BentoStore()`: the service resolves its model there; it reads
            $BENTOML_HOME, which this function points at `out/bentoml` first).
        swap_timeout: seconds a promoted model may take to reach the service through the pointer.
    """
    from fusionrec.data.demo import run_demo_data
    from fusionrec.monitoring.monitor import load_model_view, monitor_frames
    from fusionrec.monitoring.retrain import retrain, train_local
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore
    from fusionrec.packaging import run_package

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state, t0 = LoopState(), time.time()
    run_demo_data(out / "data", params.demo)
    model_dir = train_local(out / "data", out / "base", params)
    state.numbers["base_train_wall_s"] = round(time.time() - t0, 1)
    # the service module resolves its BentoML model at import time: package the base model first
    os.environ["BENTOML_HOME"] = str(out / "bentoml")
    run_package(model_dir, out / "base" / "package", params.package, model_store)
    store_url, port = f"sqlite:///{out / 'feedback.db'}", free_port()
    url = f"http://127.0.0.1:{port}"
    serve_params = out / "serve_params.yaml"  # the service answers with this run's serve section
    serve_params.write_text(yaml.safe_dump({"serve": params.serve.model_dump(mode="json")}, sort_keys=False))
    proc = start_service(model_dir, port, store_url, token, out / "bentoml", out / "service.log",
                         params_file=serve_params)
    # a promotion reaches the service the way it reaches every replica on a cluster: published under
    # the models root, the champion pointer moved in the database, the service's poll swaps it in
    params = params.model_copy(update={"monitor": params.monitor.with_overrides(
        service_url="", models_root=str(out / "models"))})
    os.environ[params.monitor.token_env] = token
    sim = Simulator(url, out / "data", params.simulate, token)
    with RequestProbe(url, sim.users[0], max_requests=5) as warmup:  # first requests load lazily
        while warmup.ok + warmup.failed < 5 and time.time() - t0 < 3600:
            time.sleep(0.2)
    try:
        r = 0
        for _ in range(rounds_before):
            state.rounds.append(_stats_row(sim.run_round(shifted=False), "before"))
            r += 1
        with FeedbackStore(store_url) as store:
            ref_events = store.count()
        # equal windows (one round of traffic): per-user statistics compare like with like
        window = max(params.monitor.min_events, ref_events // max(rounds_before, 1))
        cfg = params.monitor.with_overrides(reference_window=window, current_window=window)
        state.numbers["monitor_windows"] = {"reference": window, "current": window}
        state.mark(r, "shift")
        promoted = False
        for _ in range(max_shifted):
            state.rounds.append(_stats_row(sim.run_round(shifted=True), "shifted"))
            r += 1
            with FeedbackStore(store_url) as store:
                fb, served = store.read_feedback(), store.read_served()
            decision = monitor_frames(fb, served, load_model_view(model_dir), out / "monitor" / f"round{r:02d}", cfg,  # type: ignore[arg-type]
                                      state_file=out / "monitor" / "drift_streak.json")
            if decision.reasons and "events_until_detection" not in state.numbers:  # first flagged, due or not
                state.numbers["events_until_detection"] = len(fb) - ref_events
                state.mark(r, "drift_detected", reasons=decision.reasons, events_since_shift=len(fb) - ref_events)
            if not decision.retrain:  # no drift, or not yet persistent (monitor.persistence)
                continue
            state.mark(r, "retrain", reasons=decision.reasons, events_since_shift=len(fb) - ref_events)
            with RequestProbe(url, sim.users[0]) as probe, FeedbackStore(store_url) as store:
                record = retrain(out / "data", fb, model_dir, out / "retrain", params, reason=",".join(decision.reasons),
                                 trainer=train_local, served=served, model_store=model_store,
                                 state=ServingState(store))
                champion = record.get("promotion", {}).get("champion")
                if champion:  # wait for the service to follow the pointer, the probe still calling it
                    state.numbers["swap_wait_s"] = wait_for_version(url, champion["model_version"], swap_timeout)
            swaps = state.numbers.setdefault("swap_probe", {"ok": 0, "failed": 0})
            swaps["ok"], swaps["failed"] = swaps["ok"] + probe.ok, swaps["failed"] + probe.failed
            state.numbers.setdefault("retrains", []).append(
                {"round": r, "wall_s": record.get("wall_s"), "train_wall_s": record.get("train_wall_s"),
                 "gate": record.get("decision"), "holdout": record.get("holdout"),
                 "challenger": record.get("challenger_metrics"), "champion": record.get("champion_metrics")})
            promoted = bool(record.get("decision", {}).get("promote"))
            state.mark(r, "promoted" if promoted else "rejected", reason=record.get("decision", {}).get("reason"))
            if promoted:  # a rejected challenger is kept on record; the monitor will ask again next round
                model_dir = Path(record["promoted_dir"])
                state.numbers["events_until_promotion"] = len(fb) - ref_events
                state.numbers["retrain_wall_s"] = record.get("wall_s")
                state.numbers["gate"] = record.get("decision")
                break
        if "events_until_detection" not in state.numbers:
            state.mark(r, "not_detected")
        for _ in range(rounds_after if promoted else 0):
            state.rounds.append(_stats_row(sim.run_round(shifted=True), "retrained"))
            r += 1
    finally:
        sim.close()
        stop_service(proc)
    rounds = state.rounds
    state.numbers.update({
        "ctr_before_shift": _phase_ctr(rounds, "before"),
        "ctr_after_shift": _phase_ctr(rounds, "shifted"),
        "ctr_after_promotion": _phase_ctr(rounds, "retrained"),
        "failed_requests_rounds": sum(x["errors"] for x in rounds),
        "failed_requests_swap": state.numbers.get("swap_probe", {}).get("failed"),
        "wall_s": round(time.time() - t0, 1),
    })
    before, after = state.numbers["ctr_before_shift"], state.numbers["ctr_after_promotion"]
    state.numbers["recovery"] = round(after / before, 4) if before and after else None
    result = {"numbers": state.numbers, "events": state.events, "rounds": rounds,
              "config": {"simulate": params.simulate.model_dump(), "demo": params.demo.model_dump(),
                         "serve": params.serve.model_dump()}}
    write_json(out / "loop.json", result)
    plot_ctr(state, out / "ctr.png")
    return result
