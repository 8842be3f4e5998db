"""Blend benchmark: z-scoring and blending one batch of full-catalogue score rows.

Ranking every item for a user ends in `Recommender._combine`: the network's scores and EASE's
are z-scored over the items the user could be recommended (trained, not in the history) and
blended. At 200,000 items a batch of 512 users is two 512 x 200,000 blocks, and this step was
most of the evaluate step's ranking time. The benchmark times `fusionrec.models.inference_parts.zscore`
as `_combine` calls it (chunked over rows, written into one output) against the whole-block
formulation it replaced (kept below as `whole_block_zscore`: each operation over the whole
block, one temporary array per operation), on random scores with 95% of the items trained and
50 history items a user, best of --repeats (numpy's elementwise operations use one thread).
Also checks that both give the same blend (largest absolute difference).

    python -m benchmarks.blend [--users 512] [--items 20000 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from benchmarks.report import write_report
from fusionrec.models.inference_parts import zscore


def whole_block_zscore(scores: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The formulation `zscore` replaced: every step over the whole (b, n) block."""
    ref = np.broadcast_to(ref, scores.shape)
    count = np.maximum(ref.sum(axis=1, keepdims=True), 1)
    mu = np.where(ref, scores, 0.0).sum(axis=1, keepdims=True) / count
    var = np.where(ref, (scores - mu) ** 2, 0.0).sum(axis=1, keepdims=True) / count
    sd = np.sqrt(var)
    return ((scores - mu) / np.where(sd > 1e-12, sd, 1.0)).astype(np.float32)


def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(users: int, items: int, weight: float, repeats: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    neural = rng.standard_normal((users, items), dtype=np.float32)
    ease = (rng.standard_normal((users, items), dtype=np.float32) * 0.01).astype(np.float32)
    trained = rng.random(items) < 0.95
    seen = np.zeros((users, items), dtype=bool)
    seen[np.repeat(np.arange(users), 50), rng.integers(0, items, users * 50)] = True
    ref = trained & ~seen

    def chunked() -> np.ndarray:
        out = zscore(neural, ref, weight=1 - weight)
        return zscore(ease, ref, out=out, weight=weight, add=True)

    def whole() -> np.ndarray:
        return ((1 - weight) * whole_block_zscore(neural, ref) + weight * whole_block_zscore(ease, ref)).astype(np.float32)

    new_s, new = _best(chunked, repeats)
    old_s, old = _best(whole, repeats)
    return {"users": users, "items": items, "ease_blend": weight, "chunked_s": round(new_s, 3),
            "whole_block_s": round(old_s, 3), "speedup": round(old_s / new_s, 2),
            "max_abs_difference": float(np.abs(new - old).max())}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["## Blend: z-scoring and blending network + EASE scores of one batch (best of repeats)", "",
             "| users x items | chunked (`zscore`) | whole block (replaced) | speed-up | largest difference |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['users']:,} x {r['items']:,} | {r['chunked_s']:.3f} s | {r['whole_block_s']:.3f} s | "
              f"{r['speedup']:.1f}x | {r['max_abs_difference']:.1e} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=512)
    parser.add_argument("--items", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--weight", type=float, default=0.2, help="the EASE blend weight")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [measure(args.users, n, args.weight, args.repeats) for n in args.items]
    text = markdown(rows)
    write_report("blend", {"rows": rows}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
