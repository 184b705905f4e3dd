"""Inter-task planner benchmark: wall time and makespan of one plan per (scheduler, size).

Instances are Philly-like (GPU demands 1-32, heavy-tailed durations, most GPUs busy with
running tasks), drawn from a seed, so every row regenerates. For each scheduler and size it
records one plan's wall time (plan() end to end: greedy rules, CP-SAT, packaging), its CPU time
(all threads of this process: the machine's load shows as wall >> cpu), the 1-minute load
average, its makespan and the gap to the area/longest-task lower bound (`lower_bound`, real time, unrounded), as
(makespan - bound) / (bound - now), and the plan's mean completion time (what
`cpsat:completion`, CP-SAT with objective="completion", minimizes; the bound is on the makespan
only). Writes DIR/bench_planner.csv.

    python experiments/bench_planner.py --out DIR [--sizes 50x64,10000x1000]
        [--inter fifo,sjf,cpsat,cpsat:completion] [--time-limit 1.0] [--seeds 0] [--busy 0.9]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from altosim.argparser import OneLineParser, finite, share
from altosim.policy.inter import RunningTask, WaitingTask, lower_bound, validate_plan
from altosim.policy.registry import INTER_TASK
from altosim.report import write_csv

DEMANDS = np.array([1, 2, 4, 8, 16, 32])
DEMAND_P = np.array([0.55, 0.12, 0.15, 0.13, 0.03, 0.02])


def instance(tasks: int, gpus: int, seed: int, busy: float = 0.9) -> tuple[list[RunningTask], list[WaitingTask]]:
    """`tasks` waiting tasks and running tasks holding about `busy` of `gpus` GPUs (at now = 0)."""
    rng = np.random.default_rng(seed)
    demand = DEMANDS[DEMANDS <= gpus]
    p = DEMAND_P[: len(demand)] / DEMAND_P[: len(demand)].sum()
    running, used, k = [], 0, 0
    while True:
        g = int(rng.choice(demand, p=p))
        if used + g > busy * gpus:
            break
        running.append(RunningTask(f"r{k:05d}", tuple(range(used, used + g)), float(rng.uniform(60, 7200))))
        used, k = used + g, k + 1
    waiting = [
        WaitingTask(f"w{i:05d}", int(rng.choice(demand, p=p)), float(min(8 * 3600, rng.lognormal(np.log(1800), 1.0))),
                    float(-rng.uniform(0, 3600)))
        for i in range(tasks)
    ]
    return running, waiting


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for bench_planner.csv")
    ap.add_argument("--sizes", default="50x64,1000x1000,10000x1000", help="TASKSxGPUS, comma-separated")
    ap.add_argument("--inter", default="fifo,sjf,cpsat,cpsat:completion",
                    help="schedulers; cpsat:OBJECTIVE sets CP-SAT's objective (makespan or completion)")
    ap.add_argument("--time-limit", type=finite(1e-3, 86_400), default=1.0, help="cpsat time_limit_s (wall seconds)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--busy", type=share, default=0.9, help="share of the GPUs running tasks hold at the plan")
    args = ap.parse_args()
    try:
        sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        if min(seeds) < 0 or max(seeds) >= 2**32:
            raise ValueError
        if any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise ValueError
    except ValueError:
        ap.error(f"--sizes/--seeds: expected e.g. 50x64,10000x1000 and 0,1, got {args.sizes!r} / {args.seeds!r}")
    for label in args.inter.split(","):
        name, _, objective = label.partition(":")
        if name not in INTER_TASK.names() or (objective and (name != "cpsat" or objective not in ("makespan", "completion"))):
            print(f"error: --inter: {label!r} is not one of {', '.join(INTER_TASK.names())} "
                  "(cpsat:makespan or cpsat:completion for CP-SAT's objective)", file=sys.stderr)
            sys.exit(2)
    if "cpsat" in args.inter:
        import ortools.sat.python.cp_model  # noqa: F401  (imported once per process, not per plan)
    rows = []
    for tasks, gpus in sizes:
        for seed in seeds:
            running, waiting = instance(tasks, gpus, seed, args.busy)
            lb = lower_bound(0.0, gpus, running, waiting)
            for label in args.inter.split(","):
                name, _, objective = label.partition(":")
                params = {"time_limit_s": args.time_limit} if name == "cpsat" else {}
                if objective:
                    params["objective"] = objective
                sched = INTER_TASK.build(name, **params)
                t0, c0 = time.perf_counter(), time.process_time()
                plan = sched.plan(0.0, gpus, running, waiting)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                validate_plan(plan, 0.0, gpus, running, waiting)
                dur = {w.task_id: w.duration for w in waiting}
                mean_c = float(np.mean([a.start + dur[a.task_id] for a in plan.assignments]))
                rows.append({
                    "scheduler": label, "tasks": tasks, "gpus": gpus, "seed": seed, "busy": args.busy, "running": len(running),
                    "wall_s": wall, "cpu_s": cpu, "load1": os.getloadavg()[0], "makespan_h": plan.makespan / 3600, "lower_bound_h": lb / 3600,
                    "gap_to_bound": (plan.makespan - lb) / lb if lb > 0 else 0.0,
                    "mean_completion_h": mean_c / 3600,
                    "status": plan.status, "note": plan.note,
                })
                r = rows[-1]
                print(f"{label:16s} {tasks:6d} x {gpus:5d} seed {seed}: {wall:7.3f} s (cpu {cpu:.3f} s)  makespan {r['makespan_h']:8.2f} h"
                      f"  gap {r['gap_to_bound']:.2%}  mean completion {r['mean_completion_h']:.2f} h  {plan.status}", file=sys.stderr)
    write_csv(pd.DataFrame(rows), Path(args.out) / "bench_planner.csv")


if __name__ == "__main__":
    main()
