"""Approximate top-k benchmark: recall@20 and in-process latency of known users at 100k and 1M items.

The catalogue is a small trained model (benchmarks/serving.py's 1.7k-item demo model, at the
TrainConfig default dim) tiled to n items as `scale()` does, but spread along the model's own
item neighbourhoods: each copy of a real item lies a random way (up to half) towards one of
that item's 10 nearest real items, plus isotropic noise of a tenth of the typical
nearest-neighbour distance, renormalised. The catalogue keeps the clusters and the
low-dimensional structure the model learned; `scale()`'s own noise (0.01) would make 588
near-identical copies of each item, where "the" top 20 is decided by ties, and isotropic
noise as wide as the neighbour distance (also tried while choosing the backend) fills the
space as uniform noise would, which no real embedding does. The model's real users are
the queries (plus noisy copies of them, keeping their histories), and the real never-trained
share (about 6%) is kept, so the index of cold items is measured too. EASE is off by default;
with --ease W the catalogue blends a sparse EASE with weight W: the sparse EASE fitted on the
base model's training history (train's ease_lambda / ease_head_items / ease_topk), each copy
of an item taking its item's column, so a history item's row reaches about ease_topk / items
of the catalogue, as at full size. The items a user's EASE reaches are scored exactly (their
count per request is reported).

Measured: index build time, size on disk, memory and load time; recall@20 of the index path
against exact scoring over 1,000 users, seen items excluded, by lists probed; p50 / p99 of the
engine's known-user path (exact: `InferenceEngine.recommend`; index: the same steps through
`fusionrec.inference.ann.user_top_k`, also with 1,000 items added at runtime), one BLAS
thread as in the service; and faiss IVF-Flat, faiss HNSW and hnswlib HNSW side by side at 100k.
Goal: recall@20 >= 0.99 and p99 <= 5 ms at 1M items.

    python -m benchmarks.ann [--work DIR] [--sizes 100000 1000000] [--users 1000] [--skip-backends]
                             [--ease 0.3] [--name ann_ease]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.report import write_report
from benchmarks.serving import _pcts, scale, train_base
from fusionrec.config import TrainConfig

USER_ROWS = ("user_base", "cold_user")
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100  # the graphs compared with the IVF index
NEIGHBOURS = 10  # a copy lies between its item and one of the item's 10 nearest real items
JITTER = 0.1  # plus isotropic noise, this share of the nearest-neighbour distance
PROBES = (16, 32, 64)  # lists scanned, in the recall sweep


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def catalogue(base: Any, n_items: int, n_users: int, seed: int = 0) -> Any:
    """base tiled to n_items along its own item neighbourhoods (see the module doc) and n_users, EASE off."""
    rng = np.random.default_rng(seed)
    rec = scale(base, n_items, seed)
    reps = np.arange(n_items) % base.n_items
    v = base.arrays["item_vecs"]
    sim = v @ v.T  # (b, b)
    np.fill_diagonal(sim, -np.inf)
    near = np.argsort(-sim, axis=1)[:, :NEIGHBOURS]  # (b, NEIGHBOURS) real neighbours
    other = near[reps, rng.integers(0, NEIGHBOURS, n_items)]  # (n,) a neighbour of each copy's item
    t = rng.uniform(0, 0.5, n_items).astype(np.float32)[:, None]  # how far towards it
    gap = float(np.median(np.sqrt(np.maximum(2 - 2 * sim.max(1), 0))))  # typical nearest-neighbour distance
    for key, jitter in (("item_vecs", JITTER * gap / np.sqrt(v.shape[1])),
                        ("cold_item", JITTER * float(base.arrays["cold_item"].std()))):
        src = base.arrays[key]
        rows = (1 - t) * src[reps] + t * src[other]  # (n, d): between an item and a neighbour
        rows += rng.normal(0, jitter, rows.shape).astype(np.float32)
        rows[: base.n_items] = src
        if key == "item_vecs":
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        rec.arrays[key] = rows.astype(np.float32)
    rec.arrays["trained"] = base.arrays["trained"][reps]
    rec.arrays.pop("ease", None)
    rec.meta = dict(base.meta, ease_blend=0.0)
    return more_users(rec, n_users, rng)


def with_sparse_ease(rec: Any, base: Any, blend: float, cfg: TrainConfig) -> Any:
    """rec (base tiled by `catalogue`) blending a sparse EASE fitted on base's history with weight blend.

    Copy j of item r takes r's column; rows stay the base items (the first base.n_items of rec),
    which are what the users' histories hold.
    """
    from fusionrec.models.sparse_ease import sparse_ease_weights

    b = sparse_ease_weights(base._history(), cfg.ease_lambda, cfg.ease_head_items, cfg.ease_topk,
                            weighted="hist_data" in base.arrays).tocsc()  # (b, b)
    n, m = rec.n_items, base.n_items
    whole, rest = divmod(n, m)  # columns repeat with period m
    end = int(b.indptr[rest])
    indices = np.concatenate([np.tile(b.indices, whole), b.indices[:end]])
    data = np.concatenate([np.tile(b.data, whole), b.data[:end]])
    lengths = np.diff(b.indptr)[np.arange(n) % m]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    big = sp.csc_matrix((data, indices, indptr), shape=(n, n)).tocsr()  # (n, n): rows < m only
    big.sort_indices()
    rec.arrays.pop("ease", None)
    rec.arrays.update(ease_indptr=big.indptr.astype(np.int64), ease_indices=big.indices.astype(np.int32),
                      ease_data=big.data.astype(np.float32))
    rec.meta = dict(rec.meta, ease_blend=blend)
    rec._ease_csr = None
    return rec


def ease_reach(rec: Any, users: np.ndarray) -> dict[str, float]:
    """Items a user's sparse EASE reaches (scored exactly by the index path): p50 / p99 / max."""
    from fusionrec.models.sparse_ease import sparse_row_sum

    a, sizes = rec.arrays, []
    for u in users:
        lo, hi = a["hist_indptr"][u], a["hist_indptr"][u + 1]
        rows = a["hist_indices"][lo:hi]
        weights = a["hist_data"][lo:hi] if "hist_data" in a else np.ones(len(rows), np.float32)
        sizes.append(np.count_nonzero(sparse_row_sum(a["ease_indptr"], a["ease_indices"], a["ease_data"],
                                                      rows, weights)))
    return {"p50": float(np.percentile(sizes, 50)), "p99": float(np.percentile(sizes, 99)),
            "max": float(np.max(sizes)), "share_p50": round(float(np.percentile(sizes, 50)) / rec.n_items, 4)}


def more_users(rec: Any, n_users: int, rng: np.random.Generator) -> Any:
    """Users tiled to n_users: copies keep the histories, with noisy user vectors."""
    base = rec.n_users
    reps = np.arange(n_users) % base
    for key in USER_ROWS:
        rows = rec.arrays[key][reps]
        rows[base:] += rng.normal(0, 0.1 * float(rows.std()), rows[base:].shape).astype(np.float32)
        rec.arrays[key] = rows
    for kind in ("hist", "seen"):
        ptr, idx = rec.arrays[f"{kind}_indptr"], rec.arrays[f"{kind}_indices"]
        parts = [idx[ptr[r] : ptr[r + 1]] for r in reps]
        rec.arrays[f"{kind}_indptr"] = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(ptr.dtype)
        rec.arrays[f"{kind}_indices"] = np.concatenate(parts).astype(idx.dtype)
        if kind == "hist" and "hist_data" in rec.arrays:
            rec.arrays["hist_data"] = np.concatenate([rec.arrays["hist_data"][ptr[r] : ptr[r + 1]] for r in reps])
    rec.user_ids = [u if i < base else f"{u}~{i}" for i, u in enumerate(rec.user_ids[r] for r in reps)]
    rec._user_pos = None
    return rec


def with_runtime_items(rec: Any, count: int, seed: int = 3) -> Any:
    """A copy of rec with `count` never-trained items appended, as `add_items` leaves them."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, rec.n_items, count)
    out = copy.copy(rec)
    out.arrays = dict(rec.arrays)
    for key in ("item_vecs", "cold_item", "cold_bias", "popularity", "trained"):
        rows = rec.arrays[key][src].copy()
        if key == "trained":
            rows[:] = 0
        out.arrays[key] = np.concatenate([rec.arrays[key], rows])
    out.item_ids = rec.item_ids + [f"runtime-{i}" for i in range(count)]
    out.titles = rec.titles + [""] * count
    out._item_pos = None
    return out


def recommend_with_index(engine: Any, user_id: str, k: int) -> dict[str, Any]:
    """The engine's known-user path with the index, until `InferenceEngine.recommend` takes it
    (then run with --engine): checks, exclusions, top-k, the response's items (no served log:
    the benchmark's engine has no store)."""
    import uuid

    from fusionrec.inference.ann import user_top_k
    from fusionrec.inference.checks import check_id, check_int

    user_id = check_id(user_id, "user_id")
    k = check_int(k, "k", 1, engine.cfg.max_k)
    snap = engine._snap
    rec = snap.rec
    uidx = rec.user_index(user_id)
    history = rec.seen(uidx)
    top, top_scores = user_top_k(rec, snap.ann, uidx, k, history)
    items = [{"item_id": rec.item_ids[i], "title": rec.titles[i], "score": float(s), "position": p}
             for p, (i, s) in enumerate(zip(top.tolist(), top_scores.tolist(), strict=True))]
    return {"request_id": uuid.uuid4().hex, "user_id": user_id, "path": "user", "items": items}


def timed(fn: Any, args: list[Any], warmup: int = 20) -> dict[str, float]:
    """Wall-clock p50 / p99 (ms) of fn over args, and the same of the CPU time the thread used:
    on a shared machine the wall clock also counts the time the process waited for a core."""
    for a in args[:warmup]:
        fn(a)
    wall, cpu = [], []
    for a in args:
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(a)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    c = _pcts(cpu)
    return {**_pcts(wall), "cpu_p50_ms": c["p50_ms"], "cpu_p99_ms": c["p99_ms"]}


def recall_at(rec: Any, index: Any, users: np.ndarray, k: int, probes: tuple[int, ...]) -> dict[str, float]:
    """Mean recall@k of the index path against exact scoring (seen items excluded), per probe count."""
    from fusionrec.inference import top_k
    from fusionrec.inference.ann import user_top_k

    exact = {int(u): set(top_k(rec.score_users(np.array([u]))[0], k, rec.seen(int(u))).tolist()) for u in users}
    out, default = {}, index.probe
    try:
        for probe in probes:
            index.probe = probe
            hits = [len(exact[int(u)] & set(user_top_k(rec, index, int(u), k, rec.seen(int(u)))[0].tolist()))
                    / max(len(exact[int(u)]), 1) for u in users]
            out[str(probe)] = round(float(np.mean(hits)), 5)
    finally:
        index.probe = default
    return out


def compare_backends(vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Raw indexes over the same unit vectors: faiss IVF-Flat, faiss HNSW, hnswlib HNSW.

    Recall@20 of the index alone (no exclusions) and the latency of one query, one thread.
    """
    import faiss
    import hnswlib

    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :20]
    x = np.hstack([vectors, np.zeros((len(vectors), 1), np.float32)])  # unit rows: the MIPS pad is 0
    qx = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
    threads = os.cpu_count() or 1

    def build_ivf() -> Any:
        from fusionrec.inference.ann import MipsIndex

        return MipsIndex.build(vectors, np.arange(len(vectors)), 0).index

    def build_faiss_hnsw() -> Any:
        index = faiss.IndexHNSWFlat(x.shape[1], HNSW_M)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(x)
        return index

    def build_hnswlib() -> Any:
        index = hnswlib.Index("l2", x.shape[1])
        index.init_index(len(x), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        index.set_num_threads(threads)
        index.add_items(x)
        index.set_num_threads(1)
        return index

    def set_ivf(index: Any, v: int) -> None:
        index.nprobe = v

    def set_faiss_hnsw(index: Any, v: int) -> None:
        index.hnsw.efSearch = v

    def query_faiss(index: Any, i: int) -> np.ndarray:
        return index.search(qx[i : i + 1], 20)[1][0]

    def query_hnswlib(index: Any, i: int) -> np.ndarray:
        return index.knn_query(qx[i : i + 1], 20)[0][0]

    plans = [("faiss-ivf-flat", "probe", (16, 32, 64), build_ivf, set_ivf, query_faiss),
             ("faiss-hnsw", "ef", (64, 128, 256), build_faiss_hnsw, set_faiss_hnsw, query_faiss),
             ("hnswlib", "ef", (64, 128, 256), build_hnswlib, lambda index, v: index.set_ef(v), query_hnswlib)]
    out: dict[str, Any] = {"hnsw_m": HNSW_M, "hnsw_ef_construction": HNSW_EF_CONSTRUCTION}
    for name, knob, values, build, set_knob, query in plans:
        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        index = build()
        row: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 1), "knob": knob}
        faiss.omp_set_num_threads(1)
        for v in values:
            set_knob(index, v)
            got = [query(index, i) for i in range(len(qx))]
            hit = float(np.mean([len(set(g.tolist()) & set(e.tolist())) / 20 for g, e in zip(got, exact, strict=True)]))
            row[str(v)] = {"recall@20": round(hit, 5), **timed(lambda i, ix=index, fn=query: fn(ix, i), list(range(len(qx))))}
        out[name] = row
        print(f"{name}: {row}", flush=True)
        del index
    return out


def bench_size(engine: Any, base: Any, model: Path, n: int, n_users: int, work: Path, cfg: TrainConfig,
               through_engine: bool = False, ease: float = 0.0) -> dict[str, Any]:
    import faiss

    from fusionrec.config import ServeConfig
    from fusionrec.inference import Snapshot
    from fusionrec.inference.ann import build_index, load_index, save_index, user_top_k
    from fusionrec.inference.engine import limit_threads
    from fusionrec.inference.slot import settle_heap

    rec = catalogue(base, n, n_users)
    if ease > 0:
        rec = with_sparse_ease(rec, base, ease, cfg)
    rss0 = rss_mb()
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # built with the model, at training's parallelism
    index = build_index(rec, cfg)
    limit_threads(ServeConfig().blas_threads)  # served as the service's worker does
    faiss.omp_set_num_threads(ServeConfig().blas_threads)
    built = {"build_s": index.meta["build_seconds"], "build_rss_mb": round(rss_mb() - rss0, 1)}
    folder = save_index(index, work / f"ann-{n}" / "ann")
    del index
    built["disk_mb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)
    t0 = time.perf_counter()
    index = load_index(folder.parent, rec)
    assert index is not None
    built["load_s"] = round(time.perf_counter() - t0, 3)
    rng = np.random.default_rng(n)
    users = rng.choice(rec.n_users, min(n_users, rec.n_users), replace=False)
    reach = ease_reach(rec, users) if ease > 0 else None
    recall = recall_at(rec, index, users, 20, PROBES)
    print(f"{n}: build {built}, recall@20 by probe {recall}, EASE reach {reach}", flush=True)
    ids = [rec.user_ids[int(u)] for u in rng.integers(0, rec.n_users, 2000)]
    engine._snap = Snapshot.build(rec, model, ann=None)  # benchmark only: serve the synthetic catalogue
    exact = timed(lambda u: engine.recommend(u, k=20, explain=False), ids[: 300 if n > 200_000 else 1000])
    def indexed_path(u: str) -> Any:
        return engine.recommend(u, k=20, explain=False) if through_engine else recommend_with_index(engine, u, 20)

    engine._snap = Snapshot.build(rec, model, ann=index)
    settle_heap()  # as the service does once its model is loaded: no full collection walks the libraries mid-run
    indexed = timed(indexed_path, ids)
    search_only = timed(lambda u: user_top_k(rec, index, rec.user_index(u), 20, rec.seen(rec.user_index(u))), ids)
    added = with_runtime_items(rec, 1000)
    engine._snap = Snapshot.build(added, model, ann=index)
    with_added = timed(indexed_path, ids)
    built["rss_after_queries_mb"] = round(rss_mb() - rss0, 1)
    out = {"items": n, "trained": int(index.n_trained), "cold_items_indexed": len(index.cold.rows) if index.cold else 0,
           "lists": index.meta["lists"], "cold_lists": index.meta["cold_lists"],
           "index": built, "recall@20": recall, "probe": index.probe, "users": len(users),
           "exact_recommend": exact, "index_recommend": indexed, "index_user_top_k": search_only,
           "index_recommend_1000_runtime_items": with_added, "ease_blend": ease, "ease_reach": reach}
    print(f"{n}: exact {exact}\n{n}: index {indexed}", flush=True)
    return out


def markdown(data: dict[str, Any]) -> str:
    p16, p32, p64 = (str(p) for p in PROBES)
    lines = ["## Approximate top-k (known users, k = 20, faiss IVF-Flat, in-process, 1 BLAS thread)", "",
             f"Lists 2 sqrt(items), probe {data['config']['ann_probe']} (latency columns); recall@20 against "
             f"exact scoring over {data['users']} users, seen items excluded; dim {data['dim']}.", "",
             f"| items | recall@20 (probe {p16} / {p32} / {p64}) | exact p50 / p99 ms | index p50 / p99 ms "
             "| index CPU p50 / p99 ms | + 1,000 runtime items p50 / p99 | build s | disk MB | load s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["sizes"]:
        rc, ix = r["recall@20"], r["index"]
        lines.append(f"| {r['items']:,} | {rc[p16]:.4f} / {rc[p32]:.4f} / {rc[p64]:.4f} | "
                     f"{r['exact_recommend']['p50_ms']:.2f} / {r['exact_recommend']['p99_ms']:.2f} | "
                     f"{r['index_recommend']['p50_ms']:.2f} / {r['index_recommend']['p99_ms']:.2f} | "
                     f"{r['index_recommend']['cpu_p50_ms']:.2f} / {r['index_recommend']['cpu_p99_ms']:.2f} | "
                     f"{r['index_recommend_1000_runtime_items']['p50_ms']:.2f} / "
                     f"{r['index_recommend_1000_runtime_items']['p99_ms']:.2f} | "
                     f"{ix['build_s']} | {ix['disk_mb']} | {ix['load_s']} |")
    if data.get("ease_blend"):
        lines += ["", f"Sparse EASE blended with weight {data['ease_blend']}. Items a user's EASE reaches "
                  "(scored exactly on the index path), p50 / p99 per request: "
                  + "; ".join(f"{r['items']:,} items: {r['ease_reach']['p50']:,.0f} / {r['ease_reach']['p99']:,.0f}"
                              for r in data["sizes"]) + "."]
    if data.get("backends"):
        b = data["backends"]
        lines += ["", f"### Backends at {b['items']:,} trained items (the index alone, no exclusions; "
                  f"HNSW M {b['hnsw_m']}, ef_construction {b['hnsw_ef_construction']})", "",
                  "| backend | build s | recall@20, p50 / p99 ms of one query (by probe or ef) |", "|---|---:|---|"]
        for name in ("faiss-ivf-flat", "faiss-hnsw", "hnswlib"):
            r = b[name]
            cells = [f"{r['knob']} {v}: {c['recall@20']:.4f}, {c['p50_ms']:.3f} / {c['p99_ms']:.3f}"
                     for v, c in r.items() if isinstance(c, dict)]
            lines.append(f"| {name} | {r['build_s']} | " + "; ".join(cells) + " |")
    lines += ["", "CPU: the thread's CPU time per request (what the request costs when it has a core to itself).",
              "Goal: recall@20 >= 0.99 against exact scoring and p99 <= 5 ms at 1,000,000 items on 2 cores.",
              f"Load average 1 min before / after: {data['load_before']} / {data['load_after']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from fusionrec.config import ServeConfig
    from fusionrec.inference import InferenceEngine
    from fusionrec.inference.engine import limit_threads
    from fusionrec.models.recommender import Recommender

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=1000, help="users in the recall measurement")
    parser.add_argument("--skip-backends", action="store_true", help="no faiss / hnswlib side-by-side")
    parser.add_argument("--ease", type=float, default=0.0,
                        help="blend a sparse EASE with this weight (0: off); see the module doc")
    parser.add_argument("--name", default=None, help="report name (default: ann, or ann_ease with --ease)")
    parser.add_argument("--engine", action="store_true",
                        help="time the index path through InferenceEngine.recommend (once it uses snapshot.ann)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fusionrec-bench-ann-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    model = train_base(work)
    base = Recommender.load(model)
    cfg = TrainConfig()
    data: dict[str, Any] = {"config": cfg.model_dump(include={"ann_min_items", "ann_lists", "ann_probe"}),
                            "dim": int(base.arrays["item_vecs"].shape[1]), "users": args.users,
                            "load_before": load_before, "sizes": [], "ease_blend": args.ease,
                            "index_path": "InferenceEngine.recommend" if args.engine else "recommend_with_index"}
    if not args.skip_backends:
        rec = catalogue(base, 100_000, args.users)
        queries = base._parts.user_matrix(rec.arrays["user_base"][:300], None)
        warm = rec.arrays["trained"].astype(bool)
        data["backends"] = {"items": int(warm.sum()), **compare_backends(rec.arrays["item_vecs"][warm], queries)}
        print(f"backends: {data['backends']}", flush=True)
        del rec
    limit_threads(ServeConfig().blas_threads)
    engine = InferenceEngine(model)
    for n in args.sizes:
        data["sizes"].append(bench_size(engine, base, model, n, args.users, work, cfg, args.engine, args.ease))
    data["load_after"] = round(os.getloadavg()[0], 2)
    data["seconds"] = round(time.perf_counter() - t_start, 1)
    paths = write_report(args.name or ("ann_ease" if args.ease > 0 else "ann"), data, markdown(data))
    print(markdown(data))
    print(f"report: {paths['json']} ({data['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
