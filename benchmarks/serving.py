"""Serving benchmark: fusionrec next to the framework's floor, measured in the same run.

Over HTTP, one worker each, on 127.0.0.1: the real service (`serving.service:FusionRec`, the
model from `make run` by default: 1,000 demo items, MiniLM + EffNet-Lite0) and a do-nothing
BentoML service with the same request and response shape (`benchmarks/floor_service.py`).
Both get the same load, `/recommend` with k=20 and explanations for known users:

- saturation: `wrk` (a C load generator, Debian package `wrk`), 16 connections, several
  alternating rounds; requests/s, and requests per CPU-second of the worker process (the
  number a busy machine changes least);
- latency at a fixed rate: `benchmarks/openloop.py` in its own process (open loop: a request
  is due on schedule and its latency counts from then) at 100, 200 and 400 req/s;
- readiness: seconds from start to /readyz, then the first requests' latency against the
  steady state (readiness is meant to pass only once requests are fast).

In-process (no HTTP): `InferenceEngine.recommend` at 1.7k / 20k / 200k items (the model's
items tiled with noise), its parts, fold-in and explanations. Goals on 2 cores: saturation
>= 0.6x the floor's, p99 <= 25 ms at 200 req/s, 0 errors.

    python -m benchmarks.serving [--model work/demo/model] [--rounds 3] [--duration 15] [--skip-in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from harness.loop import stop_service

from benchmarks.report import write_report
from fusionrec.config import DemoConfig, FeaturizeConfig, SplitConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_700, 20_000, 200_000)
ITEM_ROWS = ("cold_bias", "cold_item", "item_e", "item_h0", "item_vecs", "popularity", "trained")


def train_base(work: Path) -> Path:
    """Demo catalogue -> ingest -> split -> featurize (tfidf + colour) -> a 3-epoch model."""
    from fusionrec.data.demo import run_demo_data
    from fusionrec.data.ingest import run_ingest
    from fusionrec.data.splits import run_split
    from fusionrec.features.pipeline import run_featurize
    from fusionrec.training import run_train

    model = work / "model-base"
    if (model / "model.safetensors").exists():
        return model
    from fusionrec.config import IngestConfig

    run_demo_data(work / "data", DemoConfig(users=500, items=1_700, interactions=20_000, image_size=32))
    run_ingest(work / "data", work / "ingested", IngestConfig())
    run_split(work / "ingested", work / "split", SplitConfig())
    feats = FeaturizeConfig(text_encoders=["tfidf"], image_encoders=["color"], tfidf_dim=64, num_workers=0)
    run_featurize(work / "ingested", work / "features", feats)
    cfg = TrainConfig(text_encoder="tfidf", image_encoder="color", epochs=3, patience=1, n_layers=1)  # default dim
    run_train(work / "ingested", work / "features", work / "split", model, cfg)
    return model


def scale(rec: Any, n_items: int, seed: int = 0) -> Any:
    """A copy of rec with its items tiled (plus small noise) to n_items, all marked as trained."""
    import copy

    rng = np.random.default_rng(seed)
    base, big = rec.n_items, copy.copy(rec)
    reps = np.arange(n_items) % base
    big.arrays = dict(rec.arrays)
    for key in [*ITEM_ROWS, *[k for k in rec.arrays if k.startswith(("feat::", "mask::"))]]:
        if key in rec.arrays:
            rows = rec.arrays[key][reps]
            if rows.ndim == 2 and rows.dtype == np.float32:
                rows = rows + rng.normal(0, 0.01, rows.shape).astype(np.float32)
            big.arrays[key] = rows
    big.arrays["trained"] = np.ones(n_items, np.uint8)
    big.item_ids = [f"{rec.item_ids[r]}~{i}" if i >= base else rec.item_ids[r] for i, r in enumerate(reps)]
    big.titles = [rec.titles[r] for r in reps]
    return big


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "mean_ms": round(float(a.mean()), 4), "n": len(ms)}


def _time(fn: Any, args: list[Any], warmup: int = 20) -> dict[str, float]:
    for a in args[:warmup]:
        fn(a)
    out = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - t0) * 1e3)
    return _pcts(out)


def bench_in_process(model: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    from fusionrec.config import ServeConfig
    from fusionrec.inference import InferenceEngine, Snapshot, top_k
    from fusionrec.inference.engine import limit_threads
    from fusionrec.models.recommender import Recommender

    limit_threads(ServeConfig().blas_threads)  # as the service's worker does
    base = Recommender.load(model)
    engine = InferenceEngine(model)
    rng = np.random.default_rng(1)
    results = {}
    for n in sizes:
        rec = scale(base, n)
        engine._snap = Snapshot.build(rec, model)  # benchmark only: serve the scaled model
        results[str(n)] = _bench_size(engine, rec, base.n_items, 1000 if n <= 20_000 else 300, rng, top_k)
        print(f"{n} items: {results[str(n)]['recommend_topk']}", flush=True)
    return results


def _bench_size(engine: Any, rec: Any, n_base: int, reps: int, rng: np.random.Generator, top_k: Any
                ) -> dict[str, Any]:
    users = [rec.user_ids[i] for i in rng.integers(0, rec.n_users, reps)]
    idx = [int(i) for i in rng.integers(0, rec.n_users, reps)]
    scores = rec.score_users(np.array([0]))[0]
    recent = [list(rng.choice(rec.item_ids[:n_base], 5, replace=False)) for _ in range(reps // 4)]
    return {
        "recommend_topk": _time(lambda u: engine.recommend(u, k=10, explain=False), users),
        "score_only": _time(lambda i: rec.score_users(np.array([i])), idx),
        "select_topk_only": _time(lambda i: top_k(scores, 10, rec.seen(i)), idx),
        "recommend_explained": _time(lambda u: engine.recommend(u, k=10), users[: reps // 4]),
        "fold_in": _time(lambda r: engine.recommend("guest", k=10, recent_items=r, explain=False), recent),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One `bentoml serve` process tree on 127.0.0.1 (the real service or the floor)."""

    def __init__(self, name: str, target: str, env: dict[str, str], work: Path) -> None:
        self.name, self.port = name, _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"{name}.log", "wb")  # noqa: SIM115  (closed in stop)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", "127.0.0.1",
             "--port", str(self.port), "--working-dir", str(REPO)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from start until /readyz answers 200."""
        while time.monotonic() - self.started < timeout and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return round(time.monotonic() - self.started, 2)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready; see {self.log.name}")

    def worker(self) -> Any:
        """The API worker process (psutil), whose CPU time is the cost of the requests."""
        import psutil

        workers = [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                   if "_bentoml_impl.worker" in " ".join(p.cmdline())]
        if len(workers) != 1:
            raise RuntimeError(f"{self.name}: expected one API worker, found {len(workers)}")
        return workers[0]

    def stop(self) -> None:
        stop_service(self.proc)
        self.log.close()


def _post(url: str, body: dict[str, Any]) -> float:
    """Milliseconds for one request (it must succeed)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
    return (time.perf_counter() - t0) * 1e3


def first_requests(service: Service, path: str, bodies: list[dict[str, Any]], n: int = 20) -> dict[str, Any]:
    """Latency of the first n requests after readiness, one at a time, against the next 200."""
    first = [_post(service.base + path, b) for b in bodies[:n]]
    steady = [_post(service.base + path, b) for b in bodies[n : n + 200]]
    return {"first_ms": [round(x, 2) for x in first], "first_max_ms": round(max(first), 2),
            "steady_p50_ms": round(float(np.percentile(steady, 50)), 2),
            "steady_p99_ms": round(float(np.percentile(steady, 99)), 2)}


WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_ms": %.3f, "p99_ms": %.3f}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk_script(bodies: list[dict[str, Any]], path: str, out: Path) -> Path:
    """A wrk Lua script that cycles through the request bodies."""
    lines = ["local bodies = {", *[f"  [[{json.dumps(b)}]]," for b in bodies], "}", "local n = 0",
             "request = function()", "  n = n % #bodies + 1",
             f'  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, bodies[n])',
             "end", WRK_DONE]
    out.write_text("\n".join(lines))
    return out


def saturate(service: Service, script: Path, path: str, duration: int, connections: int = 16) -> dict[str, Any]:
    """wrk at full speed: requests/s, and requests per CPU-second of the API worker."""
    worker = service.worker()
    cpu0 = sum(worker.cpu_times()[:2])
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script),
                           service.base + path], capture_output=True, text=True, timeout=duration + 60, check=True)
    cpu = sum(worker.cpu_times()[:2]) - cpu0
    run = json.loads(done.stdout.strip().splitlines()[-1])
    rate = run["requests"] / (run["duration_us"] / 1e6)
    return {"rps": round(rate, 1), "requests": run["requests"], "errors": run["status_errors"] + run["socket_errors"],
            "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "worker_cpu_s": round(cpu, 2),
            "requests_per_cpu_s": round(run["requests"] / cpu, 1) if cpu else None,
            "load_average": round(os.getloadavg()[0], 2)}


def _tool(name: str) -> str | None:
    """A command on PATH or beside this interpreter (py-spy and locust install into the venv's bin)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


def profile(service: Service, script: Path, path: str, duration: int, out: Path) -> dict[str, Any]:
    """py-spy on the API worker while wrk saturates it: the share of GIL-holding samples per frame.

    Only the thread holding the interpreter lock is sampled (--gil), so the shares say where the
    worker's Python time goes, not where it waits.
    """
    raw = out / "profile.raw"
    wrk = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{duration + 4}s", "-s", str(script), service.base + path],
                           stdout=subprocess.DEVNULL)
    time.sleep(2)
    subprocess.run([str(_tool("py-spy")), "record", "-p", str(service.worker().pid), "-d", str(duration), "-r", "200",
                    "-f", "raw", "-o", str(raw), "--gil", "--nonblocking"], capture_output=True, check=True,
                   timeout=duration + 60)
    wrk.wait(timeout=duration + 60)
    total, inclusive = 0, Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(count)
    ours = [(f, n) for f, n in inclusive.most_common() if "fusionrec/" in f or "serving/" in f or "orjson" in f]
    return {"samples": total, "top_frames": {f: round(n / total, 3) for f, n in inclusive.most_common(40)},
            "fusionrec_frames": {f: round(n / total, 3) for f, n in ours[:15]}}


def open_loop(service: Service, bodies_file: Path, path: str, rate: int, duration: int) -> dict[str, Any]:
    """`benchmarks.openloop` in its own process at a fixed rate."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.openloop", "--url", service.base + path,
                           "--bodies", str(bodies_file), "--rate", str(rate), "--duration", str(duration)],
                          capture_output=True, text=True, timeout=duration + 120, check=True, cwd=REPO)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_average": round(os.getloadavg()[0], 2)}


def request_bodies(rec: Any, n: int = 2_000, k: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """Known users drawn at random, k items with explanations (the service's default)."""
    rng = np.random.default_rng(seed)
    return [{"user_id": rec.user_ids[int(i)], "k": k} for i in rng.integers(0, rec.n_users, n)]


def bench_http(model: Path, work: Path, rounds: int, duration: int, rates: tuple[int, ...],
               with_profile: bool = True) -> dict[str, Any]:
    """The floor and fusionrec side by side: readiness, saturation (alternating rounds), open loop."""
    from fusionrec.models.recommender import Recommender

    bodies = request_bodies(Recommender.load(model))
    bodies_file = work / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "FUSIONREC_PARAMS": str(REPO / "params.yaml"), "FUSIONREC_MODEL": str(model),
           "FUSIONREC_FEEDBACK_URL": f"sqlite:///{work / 'feedback.db'}"}
    services = {"floor": Service("floor", "benchmarks.floor_service:Floor", env, work),
                "fusionrec": Service("fusionrec", "serving.service:FusionRec", env, work)}
    endpoints = {"floor": "/recommend", "floor (BentoML encoding)": "/recommend_dict", "fusionrec": "/recommend"}
    owner = {"floor": "floor", "floor (BentoML encoding)": "floor", "fusionrec": "fusionrec"}
    try:
        ready = {name: svc.wait_ready() for name, svc in services.items()}
        warm = {name: first_requests(services[owner[name]], endpoints[name], bodies) for name in endpoints}
        out: dict[str, Any] = {"ready_s": ready, "first_requests": warm, "saturation": {}, "open_loop": {}}
        if shutil.which("wrk") is None:
            out["saturation_skipped"] = "wrk is not installed (Debian: apt-get install wrk)"
        else:
            for rnd in range(rounds):  # alternate, so a busy moment hits both sides
                for name, path in endpoints.items():
                    script = wrk_script(bodies[:500], path, work / f"wrk{path.replace('/', '_')}.lua")
                    run = saturate(services[owner[name]], script, path, duration)
                    out["saturation"].setdefault(name, []).append(run)
                    print(f"saturation round {rnd + 1} {name}: {run}", flush=True)
        if with_profile and shutil.which("wrk") and _tool("py-spy"):
            script = wrk_script(bodies[:500], "/recommend", work / "wrk_profile.lua")
            out["profile"] = profile(services["fusionrec"], script, "/recommend", duration, work)
        for rate in rates:
            for name in ("floor", "fusionrec"):
                run = open_loop(services[name], bodies_file, "/recommend", rate, duration)
                out["open_loop"].setdefault(name, {})[str(rate)] = run
                print(f"open loop {rate}/s {name}: {run}", flush=True)
        return out
    finally:
        for svc in services.values():
            svc.stop()


def summarize(http: dict[str, Any]) -> dict[str, Any]:
    """Medians over the saturation rounds, the ratios to the floor and the goals."""
    sat = {name: {"rps": float(np.median([r["rps"] for r in runs])),
                  "requests_per_cpu_s": float(np.median([r["requests_per_cpu_s"] for r in runs])),
                  "errors": int(sum(r["errors"] for r in runs))}
           for name, runs in http.get("saturation", {}).items()}
    out: dict[str, Any] = {"saturation": sat}
    if "fusionrec" in sat and "floor" in sat:
        out["ratio_rps"] = round(sat["fusionrec"]["rps"] / sat["floor"]["rps"], 3)
        out["ratio_per_cpu_s"] = round(sat["fusionrec"]["requests_per_cpu_s"] / sat["floor"]["requests_per_cpu_s"], 3)
    real = http["open_loop"].get("fusionrec", {})
    errors = sum(r["errors"] for r in real.values()) + sum(s["errors"] for s in sat.values())
    p99_200 = real.get("200", {}).get("p99_ms")
    out["goals"] = {
        "saturation >= 0.6x the floor": {"measured": out.get("ratio_rps"), "met": (out.get("ratio_rps") or 0) >= 0.6},
        "p99 <= 25 ms at 200 req/s": {"measured": p99_200, "met": p99_200 is not None and p99_200 <= 25},
        "0 errors": {"measured": errors, "met": errors == 0},
    }
    return out


def markdown(data: dict[str, Any]) -> str:
    lines = []
    http = data.get("http")
    if http:
        summary = data["summary"]
        lines += ["## fusionrec next to the framework's floor (HTTP, one worker each, same run)", "",
                  f"Model: `{data['model']}` ({data['model_items']:,} items). Requests: `/recommend`, known users, "
                  "k=20, explanations on (the default).", "",
                  "| goal | measured | met |", "|---|---:|---|"]
        lines += [f"| {goal} | {g['measured']} | {'yes' if g['met'] else 'no'} |" for goal, g in summary["goals"].items()]
        if http.get("saturation"):
            lines += ["", f"### Saturation (wrk, 16 connections, {data['duration_s']} s, median of "
                      f"{data['rounds']} alternating rounds)", "",
                      "| service | req/s | requests per worker CPU-second | x floor (req/s) | rounds req/s | errors |",
                      "|---|---:|---:|---:|---|---:|"]
            floor = summary["saturation"]["floor"]["rps"]
            for name, runs in http["saturation"].items():
                agg = summary["saturation"][name]
                per_round = ", ".join(f"{r['rps']:.0f}" for r in runs)
                lines.append(f"| {name} | {agg['rps']:.0f} | {agg['requests_per_cpu_s']:.0f} | "
                             f"{agg['rps'] / floor:.2f} | {per_round} | {agg['errors']} |")
            lines += ["", "Requests per worker CPU-second is the rate one fully used core would serve "
                      "(requests/s per core)."]
        else:
            lines += ["", f"Saturation not measured: {http.get('saturation_skipped')}"]
        lines += ["", "### Open loop (benchmarks/openloop.py, latency counted from when a request was due)", "",
                  "| req/s | service | p50 ms | p90 ms | p99 ms | max ms | answered / sent | errors | load avg |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for rate in data["rates"]:
            for name in ("floor", "fusionrec"):
                r = http["open_loop"][name][str(rate)]
                lines.append(f"| {rate} | {name} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                             f"{r['answered']} / {r['requests']} | {r['errors']} | {r['load_average']} |")
        lines += ["", "### Readiness and the first requests", "",
                  "| service | start to /readyz s | first 20 requests max ms | steady p50 / p99 ms (one at a time) |",
                  "|---|---:|---:|---:|"]
        for name, w in http["first_requests"].items():
            ready = http["ready_s"].get(name, http["ready_s"]["floor"])
            lines.append(f"| {name} | {ready} | {w['first_max_ms']} | {w['steady_p50_ms']} / {w['steady_p99_ms']} |")
    if data.get("in_process"):
        lines += ["", "## In-process latency (k=10, known users)", "",
                  "| items | recommend p50 / p99 (ms) | score p50 | top-k select p50 | fold-in p50 | with explanation p50 |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for n, r in data["in_process"].items():
            lines.append(f"| {int(n):,} | {r['recommend_topk']['p50_ms']:.3f} / {r['recommend_topk']['p99_ms']:.3f} | "
                         f"{r['score_only']['p50_ms']:.3f} | {r['select_topk_only']['p50_ms']:.3f} | "
                         f"{r['fold_in']['p50_ms']:.3f} | {r['recommend_explained']['p50_ms']:.3f} |")
    if data.get("profile"):
        lines += ["", "## Where the time went", "", data["profile"]]
    if http and http.get("profile"):
        prof = http["profile"]
        lines += ["", f"### This run's profile (py-spy --gil on the fusionrec worker under wrk, {prof['samples']} "
                  "samples): fusionrec's own frames, share of the worker's Python time", "",
                  "| frame | share |", "|---|---:|"]
        lines += [f"| `{frame}` | {share:.1%} |" for frame, share in prof["fusionrec_frames"].items()]
    return "\n".join(lines)


PROFILE_NOTE = REPO / "benchmarks" / "serving_profile.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "work" / "demo" / "model",
                        help="the model served (default: the one `make run` trains; a small one is trained if absent)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating saturation rounds")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400], help="open-loop rates, req/s")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fusionrec-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    from fusionrec.models.recommender import Recommender

    model = args.model if (args.model / "model.safetensors").exists() else train_base(work)
    data: dict[str, Any] = {"model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
                            "model_items": Recommender.load(model).n_items, "duration_s": args.duration,
                            "rounds": args.rounds, "rates": args.rates}
    if not args.skip_http:
        data["http"] = bench_http(model, work, args.rounds, args.duration, tuple(args.rates))
        data["summary"] = summarize(data["http"])
    if not args.skip_in_process:
        data["in_process"] = bench_in_process(model, SIZES)
    if PROFILE_NOTE.exists():
        data["profile"] = PROFILE_NOTE.read_text().strip()
    paths = write_report("serving", data, markdown(data))
    print(markdown(data))
    print(f"report: {paths['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
