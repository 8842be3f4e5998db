"""Closed-loop benchmark: the `fusionrec loop` demo measured end to end.

    python -m benchmarks.loop [--params FILE] [--out DIR] [--rounds-before 4] [--max-shifted 14] [--rounds-after 4]
                              [--organic N] [--seeds 11,12,13] [--explore-share S] [--explore-pool P] [--name NAME]

The loop runs once per simulate seed (3 by default, a few minutes each on 2 cores).

Numbers (issue 8): feedback events until drift is detected after the taste shift;
click-through before the shift, after it, and after the retrained model is promoted (target:
recovers to at least 90% of the pre-shift level); retrain wall time; failed requests during the
model swap (target 0). Writes benchmarks/reports/loop.{json,md} and copies the CTR plot next to them.

Exploration (serve.explore_share, serve.explore_pool; `--explore-share 0` switches it off): every run
also appends its per-seed numbers to benchmarks/reports/loop_explore_trials.json, and each report
lists every trial recorded there, so what was tried stays next to what was chosen.
"""

from __future__ import annotations

import argparse
import json
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
        ("exploration (serve.explore_share of each answer, from the ranks k .. k + explore_pool - 1)",
         f"share {fmt(n.get('explore_share'))}, pool {fmt(n.get('explore_pool'))}, "
         f"diverse {n.get('explore_diverse')}"),
        ("click-through of explored impressions (before the shift / after the promotion)",
         f"{fmt(n.get('explored_ctr_before_shift'))} / {fmt(n.get('explored_ctr_after_promotion'))}"),
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
    ap.add_argument("--explore-share", type=float, default=None, help="serve.explore_share (0 = off)")
    ap.add_argument("--explore-pool", type=int, default=None, help="serve.explore_pool")
    ap.add_argument("--explore-diverse", choices=["true", "false"], default=None, help="serve.explore_diverse")
    ap.add_argument("--name", default=None, help="report name (default loop or loop_organic<N>)")
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
    params = params.model_copy(update={"serve": params.serve.with_overrides(
        explore_share=args.explore_share, explore_pool=args.explore_pool,
        explore_diverse=None if args.explore_diverse is None else args.explore_diverse == "true")})
    name = args.name or name
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    runs = []
    for n, seed in enumerate(seeds):
        run_params = params.model_copy(update={"simulate": params.simulate.with_overrides(seed=seed),  # draws too
                                               "serve": params.serve.with_overrides(explore_seed=seed)})
        with tempfile.TemporaryDirectory(prefix="fusionrec-loop-") as tmp:
            out = (args.out / f"seed{seed}") if args.out else Path(tmp)
            result = run_loop(out, run_params, args.rounds_before, args.max_shifted, args.rounds_after,
                              model_store=BentoStore())
            REPORTS.mkdir(parents=True, exist_ok=True)
            if n == 0 and (out / "ctr.png").is_file():
                shutil.copy(out / "ctr.png", REPORTS / f"{name}_ctr.png")
        result["numbers"].update(explored_ctr(result["rounds"]))
        runs.append({"seed": seed, **result})
    first = runs[0]
    numbers = {**first["numbers"], "organic_per_round": params.simulate.organic,
               "explore_share": params.serve.explore_share, "explore_pool": params.serve.explore_pool,
               "explore_diverse": params.serve.explore_diverse}
    per_seed = [{"seed": r["seed"], **{k: r["numbers"].get(k) for k in SEED_KEYS}} for r in runs]
    trials = record_trial(name, numbers, per_seed)
    data = {**numbers, "per_seed": per_seed, "events": first["events"], "rounds": first["rounds"],
            "config": first["config"]}
    paths = write_report(name, data, markdown(numbers, name) + seeds_markdown(per_seed) + trials_markdown(trials))
    print(paths["markdown"].read_text())
    return 0


SEED_KEYS = ("events_until_detection", "events_until_promotion", "ctr_before_shift", "ctr_after_shift",
             "ctr_after_promotion", "recovery", "failed_requests_swap", "explored_ctr_before_shift")
TRIALS = REPORTS / "loop_explore_trials.json"


def explored_ctr(rounds: list[dict[str, Any]]) -> dict[str, float | None]:
    """Click-through of the explored impressions before the shift and after the promotion."""
    out: dict[str, float | None] = {}
    for phase, key in (("before", "explored_ctr_before_shift"), ("retrained", "explored_ctr_after_promotion")):
        rs = [r for r in rounds if r["phase"] == phase]
        imps = sum(r.get("explored_impressions", 0) for r in rs)
        out[key] = round(sum(r.get("explored_clicks", 0) for r in rs) / imps, 5) if imps else None
    return out


def record_trial(name: str, numbers: dict[str, Any], per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append this run (settings and per-seed numbers) to the trials log; returns every trial logged."""
    trials = json.loads(TRIALS.read_text()) if TRIALS.is_file() else []
    trials.append({"report": name, "organic": numbers.get("organic_per_round"),
                   "explore_share": numbers.get("explore_share"), "explore_pool": numbers.get("explore_pool"),
                   "explore_diverse": numbers.get("explore_diverse"),
                   "seeds": [{k: r.get(k) for k in ("seed", "ctr_before_shift", "ctr_after_promotion", "recovery")}
                             for r in per_seed]})
    TRIALS.parent.mkdir(parents=True, exist_ok=True)
    TRIALS.write_text(json.dumps(trials, indent=1) + "\n")
    return trials


def trials_markdown(trials: list[dict[str, Any]]) -> str:
    """Every exploration setting tried (loop_explore_trials.json): per seed, pre-shift CTR and recovery."""
    if not trials:
        return ""
    head = ("| report | organic | explore_share | explore_pool | explore_diverse | seed: CTR before shift, recovery |\n"
            "|---|---|---|---|---|---|\n")
    rows = "".join(
        f"| {t['report']} | {t['organic']} | {t['explore_share']} | {t['explore_pool']} | {t.get('explore_diverse')} | "
        + "; ".join(f"{s['seed']}: {s['ctr_before_shift']}, {s['recovery']}" for s in t["seeds"])
        + (f" ({t['note']})" if t.get("note") else "") + " |\n"
        for t in trials)
    return f"\n## Exploration settings tried (every run of this benchmark, oldest first)\n\n{head}{rows}"


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
