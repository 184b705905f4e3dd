"""Replay two weeks of the Philly GPU-cluster trace as LoRA tuning tasks (issue: Philly replay).

Each Philly job becomes a tuning task (arrival, GPUs, worst-case duration = the job's duration,
K configs with loss curves from the embedded pool). Policies FIFO, SJF and CP-SAT (time-limited,
minimizing the sum of completion times unless --cpsat-objective makespan; plans kept and
backfilled between full re-plans, altosim/policy/inter/incremental.py), each with and without early exit, on a cluster of
`--gpus` GPUs. Writes NAME.csv, NAME_jct_cdf.png and NAME_busy.png under the folder given by
--out (required: no default that overwrites committed results). A replay that runs past
--max-wall seconds (default 300, the issue's acceptance cap; `--budget-clock cpu` counts this
process's CPU seconds instead, for a shared machine) is stopped and its row says so (`finished`
False, `note` with the tasks done), beside the rows that finished. Rows carry wall_s, cpu_s and
the 1-minute load average at the end, so a loaded machine shows.

    python experiments/philly_replay.py --out DIR [--gpus 1024] [--evals 20] [--policies fifo,sjf,cpsat]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from altosim.argparser import OneLineParser, count, finite
from altosim.errors import InputError
from altosim.importers.philly import import_philly
from altosim.report import save_fig, write_csv
from altosim.schemas import RunConfig, WorkloadTrace
from altosim.simulate import SimRun, load_inputs, simulate

PHILLY = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly" / "philly_2017-10-01_14.csv"


class WallBudget(Exception):
    """A replay ran past --max-wall (the row says so instead of leaving a gap)."""


def philly_workload(path: Path, gpus: int, configs: int, evals: int, limit: int | None) -> WorkloadTrace:
    res = import_philly(path, configs_per_task=configs, max_gpus=gpus, skip_bad=True)
    wl = res.workload
    tasks = wl.tasks[:limit] if limit else wl.tasks
    # evaluations per job: fewer than the default 100 keeps two weeks of 386k jobs fast to replay
    tasks = [t.model_copy(update={"eval_every_samples": max(1, t.samples_per_job // evals)}) for t in tasks]
    print(f"imported {len(wl.tasks)} tasks ({len(res.skipped)} bad rows skipped, {len(res.too_large)} "
          f"larger than {gpus} GPUs left out); replaying {len(tasks)}", file=sys.stderr)
    return wl.model_copy(update={"tasks": tasks})


def metrics(run: SimRun, inter: str, early_exit: str, wall: float) -> dict:
    t = run.tasks_df
    plans = pd.DataFrame(run.result.plans)
    solved = plans[plans["waiting"] > 0] if len(plans) else plans
    stopped = solved[solved["status"] != "optimal"] if len(solved) else solved
    # gap to the real (unrounded) lower bound over the remaining horizon, as plans.csv gives it
    gap = stopped["gap"] if len(stopped) else pd.Series(dtype=float)
    return {
        "policy": inter, "early_exit": early_exit, "tasks": len(t), "gpus": run.result.num_gpus,
        "avg_jct_h": t["jct_s"].mean() / 3600, "p99_jct_h": t["jct_s"].quantile(0.99) / 3600,
        "avg_queue_h": t["queue_s"].mean() / 3600, "p99_queue_h": t["queue_s"].quantile(0.99) / 3600,
        "makespan_h": run.result.makespan / 3600,
        "gpu_busy_share": run.summary["gpu_busy_share"],
        "samples_saved": run.summary["samples_saved"],
        "replans": len(solved),
        "solve_median_ms": 1e3 * solved["solve_s"].median() if len(solved) else 0.0,
        "solve_max_ms": 1e3 * solved["solve_s"].max() if len(solved) else 0.0,
        "replans_not_optimal": len(stopped),
        "gap_median": gap.median() if len(gap) else 0.0, "gap_max": gap.max() if len(gap) else 0.0,
        "sim_events": run.result.sim_events, "wall_s": wall,
        "events_per_s": run.result.sim_events / max(wall, 1e-9),
    }


def busy_curve(run: SimRun, bins: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Share of GPUs allocated over time, from the run's GPU timeline."""
    g = np.array([(s, e) for _, _, s, e in run.result.gantt])
    span = max(run.result.makespan, 1.0)
    edges = np.linspace(0, span, bins + 1)
    used = np.zeros(bins)
    for s, e in g:
        lo, hi = np.searchsorted(edges, [s, e])
        used[max(lo - 1, 0):hi] += 1
    return edges[:-1] / 3600, used / run.result.num_gpus


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(PHILLY))
    ap.add_argument("--gpus", type=count(1, 10**9), default=1024)
    ap.add_argument("--configs", type=count(1, 100_000), default=16, help="configs per task")
    ap.add_argument("--evals", type=count(1, 100_000), default=20, help="evaluations per job")
    ap.add_argument("--policies", default="fifo,sjf,cpsat")
    ap.add_argument("--early-exits", default="alto,none", help="early-exit policies to pair with each")
    ap.add_argument("--time-limit", type=finite(1e-3, 86_400), default=0.2, help="CP-SAT wall seconds per re-plan")
    ap.add_argument("--cpsat-objective", choices=("completion", "makespan"), default="completion",
                    help="what CP-SAT minimizes: the sum of completion times (mean task completion) or the makespan")
    ap.add_argument("--limit", type=count(1, 10**9), help="replay only the first N tasks (smoke runs)")
    ap.add_argument("--max-wall", type=finite(1e-3, 1e9), default=300.0, help="seconds one replay may take")
    ap.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                    help="what --max-wall counts: wall seconds, or this process's CPU seconds (on a shared machine)")
    ap.add_argument("--out", required=True, help="folder for the CSV and PNGs")
    ap.add_argument("--name", default="philly_replay", help="file stem of the CSV and PNGs")
    args = ap.parse_args()
    import altosim.policy  # noqa: F401  (registers the policies)
    from altosim.policy.registry import EARLY_EXIT, INTER_TASK

    ap.name_list("--policies", args.policies, INTER_TASK.names())  # before the trace's long import
    ap.name_list("--early-exits", args.early_exits, EARLY_EXIT.names())
    try:
        wl = philly_workload(Path(args.trace), args.gpus, args.configs, args.evals, args.limit)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    rows, runs = [], {}
    inputs = None
    out = Path(args.out)
    for inter in args.policies.split(","):
        for ee in args.early_exits.split(","):
            params = {"time_limit_s": args.time_limit, "objective": args.cpsat_objective} if inter == "cpsat" else {}
            cfg = RunConfig.model_validate({
                "cluster": {"gpus": args.gpus},
                "policy": {"inter_task": {"name": inter, "params": params}, "early_exit": ee}})
            inputs = inputs or load_inputs(cfg, workload=wl)
            clock = time.process_time if args.budget_clock == "cpu" else time.perf_counter
            t0, c0, b0 = time.perf_counter(), time.process_time(), clock()

            def budget(done: int) -> None:
                if clock() - b0 > args.max_wall:
                    raise WallBudget(done)

            try:
                run = simulate(cfg, inputs, record_log=False, sparse_reports=True, regret=False, progress=budget)
            except WallBudget as e:
                rows.append({"policy": inter, "early_exit": ee, "tasks": len(wl.tasks), "gpus": args.gpus,
                             "finished": False, "wall_s": time.perf_counter() - t0,
                             "cpu_s": time.process_time() - c0, "load1": os.getloadavg()[0], "note": f"not finished: stopped at the {args.max_wall:.0f} s {args.budget_clock} budget with "
                                     f"{e.args[0]} of {len(wl.tasks)} tasks done"})
                print(f"{inter:5s} {ee:4s} {rows[-1]['note']}", file=sys.stderr)
                write_csv(pd.DataFrame(rows), out / f"{args.name}.csv")
                continue
            wall = time.perf_counter() - t0
            rows.append({**metrics(run, inter, ee, wall), "cpu_s": time.process_time() - c0,
                         "load1": os.getloadavg()[0], "finished": True, "note": ""})
            runs[(inter, ee)] = run
            write_csv(pd.DataFrame(rows), out / f"{args.name}.csv")  # after each replay
            r = rows[-1]
            print(f"{inter:5s} {ee:4s} avg JCT {r['avg_jct_h']:.2f} h  p99 {r['p99_jct_h']:.1f} h  "
                  f"queue {r['avg_queue_h']:.2f} h  busy {r['gpu_busy_share']:.1%}  wall {wall:.0f} s  "
                  f"{r['events_per_s']:.0f} ev/s", file=sys.stderr)
    df = pd.DataFrame(rows)
    if not runs:
        print(df.to_string(index=False))
        sys.exit("no replay finished")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (inter, ee), run in runs.items():
        jct = np.sort(run.tasks_df["jct_s"].to_numpy() / 3600)
        ax.plot(jct, np.arange(1, len(jct) + 1) / len(jct), ls="-" if ee == "alto" else "--",
                label=f"{inter}, {'early exit' if ee == 'alto' else 'no exit'}")
    ax.set_xscale("log")
    ax.set_xlabel("task completion time (h)")
    ax.set_ylabel("CDF")
    ax.set_title(f"Philly, 2 weeks, {len(wl.tasks)} tasks on {args.gpus} GPUs")
    ax.legend(fontsize=8)
    save_fig(fig, out / f"{args.name}_jct_cdf.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    for (inter, ee), run in runs.items():
        x, y = busy_curve(run)
        ax.plot(x, y, lw=0.8, ls="-" if ee == "alto" else "--", label=f"{inter}, {ee}")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("share of GPUs allocated")
    ax.legend(fontsize=8)
    save_fig(fig, out / f"{args.name}_busy.png")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
