"""Closed-loop benchmark: the `fusionrec loop` demo measured end to end.

    python -m benchmarks.loop [--params FILE] [--out DIR] [--rounds-before 4] [--max-shifted 14] [--rounds-after 4]
                              [--organic N] [--seeds 11,12,13]

The loop runs once per simulate seed (3 by default, a few minutes each on 2 cores).

Numbers (issue 8): feedback events until drift is detected after the taste shift;
click-through before the shift, after it, and after the retrained model is promoted (target:
recovers to at least 90% of the pre-shift level); retrain wall time; failed requests during the
model swap (target 0). Writes benchmarks/reports/loop.{json,md} and copies the CTR plot next to them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import REPORTS, write_report
from fusionrec.config import load_params


def markdown(n: dict[str, Any], name: str = "loop") -> str:
    """The summary table of one loop run."""
    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    recovery = n.get("recovery")
    target = "met" if recovery is not None and recovery >= 0.9 else "NOT met"
    gate = n.get("gate") or {}
    rows = [
        ("organic finds per user and round (simulate.organic; the feedback not chosen by the model)",
         fmt(n.get("organic_per_round"))),
        ("feedback events until drift detected (after the shift)", fmt(n.get("events_until_detection"))),
        ("feedback events until the promotion (after the shift)", fmt(n.get("events_until_promotion"))),
        ("click-through before the shift", fmt(n.get("ctr_before_shift"))),
        ("click-through after the shift (old model)", fmt(n.get("ctr_after_shift"))),
        ("click-through after the promotion", fmt(n.get("ctr_after_promotion"))),
        ("recovery (after promotion / before shift; target >= 0.9)", f"{fmt(recovery)} ({target})"),
        ("retrain wall time, s (merge + train + gate + package + reload)", fmt(n.get("retrain_wall_s"))),
        ("failed requests during the swap (request loop while retraining + reload)", fmt(n.get("failed_requests_swap"))),
        ("failed requests in all simulation rounds", fmt(n.get("failed_requests_rounds"))),
        ("swap probe requests ok", fmt((n.get("swap_probe") or {}).get("ok"))),
        ("gate", f"promote={gate.get('promote')}: {gate.get('reason', '')}"),
        ("whole loop wall time, s", fmt(n.get("wall_s"))),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"# Closed loop (`fusionrec loop`)\n\n| measure | value |\n|---|---|\n{table}\n\n"
            f"![CTR over time]({name}_ctr.png)\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=None,
                    help="params.yaml used as it is (default: harness.loop.QUICK sizes)")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--rounds-before", type=int, default=4)
    ap.add_argument("--max-shifted", type=int, default=14)
    ap.add_argument("--rounds-after", type=int, default=4)
    ap.add_argument("--organic", type=int, default=None,
                    help="organic finds per user and round (simulate.organic); the report is then loop_organic<N>")
    ap.add_argument("--seeds", default="11,12,13",
                    help="comma-separated simulate seeds: the loop runs once per seed (same data and base "
                         "model, other users, clicks and finds); the first seed's run is the one detailed")
    args = ap.parse_args(argv)

    from harness.loop import quick_params, run_loop
    from serving.store import BentoStore

    params = load_params(args.params) if args.params else quick_params(load_params(None))
    name = "loop"
    if args.organic is not None:
        params = params.model_copy(update={"simulate": params.simulate.with_overrides(organic=args.organic)})
        name = f"loop_organic{args.organic}"
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    runs = []
    for n, seed in enumerate(seeds):
        run_params = params.model_copy(update={"simulate": params.simulate.with_overrides(seed=seed)})
        with tempfile.TemporaryDirectory(prefix="fusionrec-loop-") as tmp:
            out = (args.out / f"seed{seed}") if args.out else Path(tmp)
            result = run_loop(out, run_params, args.rounds_before, args.max_shifted, args.rounds_after,
                              model_store=BentoStore())
            REPORTS.mkdir(parents=True, exist_ok=True)
            if n == 0 and (out / "ctr.png").is_file():
                shutil.copy(out / "ctr.png", REPORTS / f"{name}_ctr.png")
        runs.append({"seed": seed, **result})
    first = runs[0]
    numbers = {**first["numbers"], "organic_per_round": params.simulate.organic}
    per_seed = [{"seed": r["seed"], **{k: r["numbers"].get(k) for k in SEED_KEYS}} for r in runs]
    data = {**numbers, "per_seed": per_seed, "events": first["events"], "rounds": first["rounds"],
            "config": first["config"]}
    paths = write_report(name, data, markdown(numbers, name) + seeds_markdown(per_seed))
    print(paths["markdown"].read_text())
    return 0


SEED_KEYS = ("events_until_detection", "events_until_promotion", "ctr_before_shift", "ctr_after_shift",
             "ctr_after_promotion", "recovery", "failed_requests_swap")


def seeds_markdown(per_seed: list[dict[str, Any]]) -> str:
    """One row per simulate seed, and the mean recovery when there are several."""
    if len(per_seed) < 2:
        return ""
    head = "| seed | " + " | ".join(SEED_KEYS) + " |\n|" + "---|" * (len(SEED_KEYS) + 1) + "\n"
    rows = "".join("| " + " | ".join(str(r.get(k)) for k in ("seed", *SEED_KEYS)) + " |\n" for r in per_seed)
    rec = [r["recovery"] for r in per_seed if r.get("recovery") is not None]
    mean = f"\nMean recovery over {len(rec)} seeds: {sum(rec) / len(rec):.4f}; lowest {min(rec):.4f}.\n" if rec else ""
    return f"\n## Every seed\n\n{head}{rows}{mean}"


if __name__ == "__main__":
    sys.exit(main())
