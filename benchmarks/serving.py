"""Serving benchmark: in-process top-k latency at 1.7k / 20k / 200k items, HTTP load at 100 / 200 req/s.

A small model is trained on a generated demo catalogue (1.7k items, tfidf + colour features,
dim 64); larger catalogues tile its item vectors (with noise) to 20k and 200k items, so the
scoring work is that of a real model of that size. In-process: `InferenceEngine.recommend`
for known users (score + exclusions + top-k), its parts, fold-in and explanations. Over HTTP:
a real `bentoml serve` on 127.0.0.1 with the 1.7k- and 20k-item models, driven by locust in its own
process at a fixed rate for a fixed time. Targets (2 cores): top-k < 1 ms at 20k items,
HTTP p99 < 25 ms at 200 req/s with zero errors.

    python -m benchmarks.serving [--work DIR] [--duration 20] [--skip-http]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    cfg = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=64, epochs=3, patience=1, n_layers=1)
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


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("the service did not become ready")


def _locust(base: str, ids: Path, rate: int, duration: int, out: Path) -> dict[str, Any]:
    users = 20
    env = {**os.environ, "FUSIONREC_LOAD_IDS": str(ids), "FUSIONREC_RATE_PER_USER": str(rate / users)}
    cmd = [str(Path(sys.executable).parent / "locust"), "-f", str(REPO / "benchmarks" / "locustfile.py"),
           "--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--host", base,
           "--csv", str(out / f"locust-{rate}"), "--only-summary", "--loglevel", "WARNING"]
    subprocess.run(cmd, env=env, capture_output=True, timeout=duration + 120, check=False)
    with open(out / f"locust-{rate}_stats.csv") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    agg = rows["Aggregated"]
    return {"target_rps": rate, "duration_s": duration, "requests": int(agg["Request Count"]),
            "errors": int(agg["Failure Count"]), "throughput_rps": round(float(agg["Requests/s"]), 1),
            "p50_ms": float(agg["50%"]), "p99_ms": float(agg["99%"]), "max_ms": float(agg["Max Response Time"]),
            "per_endpoint_p99_ms": {k: float(v["99%"]) for k, v in rows.items() if k != "Aggregated"}}


def _server_buckets(base: str) -> dict[float, float]:
    """Cumulative request-duration histogram of /recommend and /similar from the service's /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_duration_seconds_bucket") and (
                'endpoint="/recommend"' in line or 'endpoint="/similar"' in line):
            le = float(line.split('le="')[1].split('"')[0])
            out[le] = out.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _server_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, float | None]:
    """p50 / p99 upper bucket bounds (ms) of the requests between two scrapes: time spent in the server."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    pick = {}
    for q in (0.5, 0.99):
        bound = next((le for le, c in delta if total and c >= q * total), None)
        pick[f"server_p{int(q * 100)}_ms_le"] = None if bound is None else round(bound * 1e3, 1)
    return pick


def bench_http(model: Path, work: Path, rates: tuple[int, ...], duration: int, n_items: int) -> dict[str, Any]:
    from fusionrec.models.recommender import Recommender

    big = work / f"model-{n_items}"
    rec = scale(Recommender.load(model), n_items)
    if not (big / "model.safetensors").exists():
        rec.save(big)
    ids = work / "ids.json"
    ids.write_text(json.dumps({"users": rec.user_ids, "items": rec.item_ids[:1_700]}))
    port = _free_port()
    env = {**os.environ, "FUSIONREC_MODEL": str(big), "FUSIONREC_FEEDBACK_URL": f"sqlite:///{work / 'fb.db'}",
           "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "FUSIONREC_PARAMS": str(work / "absent.yaml"), "PYTHONPATH": str(REPO / "src")}
    log = open(work / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FusionRec",
                             "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(REPO)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        _locust(base, ids, 50, 5, work)  # warm-up
        runs = []
        for rate in rates:
            before = _server_buckets(base)
            run = _locust(base, ids, rate, duration, work)
            runs.append({**run, **_server_quantiles(before, _server_buckets(base))})
        return {"items": n_items, "runs": runs}
    finally:
        stop_service(proc)
        log.close()


def markdown(data: dict[str, Any]) -> str:
    lines = ["## Serving latency (in-process, k=10, known users)", "",
             "| items | recommend p50 / p99 (ms) | score p50 | top-k select p50 | fold-in p50 | with explanation p50 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, r in data["in_process"].items():
        lines.append(f"| {int(n):,} | {r['recommend_topk']['p50_ms']:.3f} / {r['recommend_topk']['p99_ms']:.3f} | "
                     f"{r['score_only']['p50_ms']:.3f} | {r['select_topk_only']['p50_ms']:.3f} | "
                     f"{r['fold_in']['p50_ms']:.3f} | {r['recommend_explained']['p50_ms']:.3f} |")
    if data.get("http"):
        lines += ["", "## HTTP load (bentoml serve on 127.0.0.1, locust in its own process, 20 users)", "",
                  "| items | target req/s | requests | throughput req/s | p50 ms | p99 ms | max ms | errors "
                  "| server p50 / p99 ms (bucket bound) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for block in data["http"]:
            for r in block["runs"]:
                lines.append(f"| {block['items']:,} | {r['target_rps']} | {r['requests']} | {r['throughput_rps']} | "
                             f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']:.0f} | {r['errors']} | "
                             f"{r.get('server_p50_ms_le')} / {r.get('server_p99_ms_le')} |")
    lines += ["", "Targets on 2 cores: top-k < 1 ms at 20k items; HTTP p99 < 25 ms at 200 req/s, zero errors."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--duration", type=int, default=20, help="seconds per HTTP load run")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--http-items", type=int, nargs="+", default=[1_700, 20_000], help="catalogue sizes served")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fusionrec-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    model = train_base(work)
    previous = REPO / "benchmarks" / "reports" / "serving.json"
    data: dict[str, Any] = {"in_process": json.loads(previous.read_text())["data"]["in_process"]
                            if args.skip_in_process and previous.exists() else bench_in_process(model, SIZES)}
    if not args.skip_http:
        data["http"] = [bench_http(model, work, (100, 200), args.duration, n) for n in args.http_items]
    paths = write_report("serving", data, markdown(data))
    print(markdown(data))
    print(f"report: {paths['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
