"""Simulator throughput: 10,000 jobs in 1,000 tasks on 1,000 GPUs (goal: < 60 s on 2 cores).

Tasks draw 10-config grids (5 learning rates x 2 batch sizes) over the embedded loss-trace sets,
arrive as a Poisson stream, and need 1/1/2/4 GPUs. Prints wall time, simulator events and
events/s for each inter-task scheduler asked for; with `--out DIR` also writes them to
DIR/bench_sim.csv, with the process's CPU seconds and the 1-minute load average beside the wall
(on a shared machine the wall follows the load).

    python experiments/bench_sim.py [--tasks 1000] [--gpus 1000] [--inter fifo,sjf,cpsat] [--out DIR]
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pandas as pd

from altosim.argparser import OneLineParser, count, finite
from altosim.outdir import check_out
from altosim.report import write_csv
from altosim.schemas import RunConfig, SearchSpace, TaskRecord, WorkloadTrace
from altosim.simulate import load_inputs, simulate
from altosim.traces_io import load_trace_dir
from altosim.workloads import default_loss_dir


def workload(n_tasks: int, seed: int, mean_gap_s: float) -> WorkloadTrace:
    rng = random.Random(seed)
    sets = sorted(load_trace_dir(default_loss_dir()).values(), key=lambda s: s.name)
    gpus = {"Llama-3.2-1B": 1, "Llama-3.2-3B": 1, "Llama-3.1-8B": 2, "Qwen2.5-14B": 4}
    space = SearchSpace(lr=[1e-5, 5e-5, 2e-4, 3e-4, 5e-4], rank=[16], batch_size=[2, 4])
    t, tasks = 0.0, []
    for i in range(n_tasks):
        s = rng.choice(sets)
        t += rng.expovariate(1.0 / mean_gap_s)
        tasks.append(TaskRecord(id=f"b{i:05d}", arrival=round(t, 3), model=s.model, dataset=s.dataset,
                                gpus=gpus[s.model], search_space=space, seq_len=512,
                                samples_per_job=rng.choice([2400, 4800, 9600]), loss_trace=s.name))
    return WorkloadTrace(name=f"bench-{n_tasks}", synthetic=True, source="experiments/bench_sim.py", tasks=tasks)


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=count(1, 10**9), default=1000)
    ap.add_argument("--gpus", type=count(1, 10**9), default=1000)
    ap.add_argument("--gap", type=finite(0, 1e9), default=2.0, help="mean seconds between arrivals")
    ap.add_argument("--inter", default="fifo,sjf,cpsat")
    ap.add_argument("--early-exit", default="alto")
    ap.add_argument("--out", type=Path, default=None, help="also write DIR/bench_sim.csv")
    args = ap.parse_args()
    if args.out is not None:  # a file or an unwritable place: said before the benchmark, not after
        check_out(args.out)
    wl = workload(args.tasks, 0, args.gap)
    jobs = sum(len(t.search_space.configs()) for t in wl.tasks)
    print(f"{len(wl.tasks)} tasks, {jobs} jobs, {args.gpus} GPUs")
    rows = []
    for inter in args.inter.split(","):
        cfg = RunConfig.model_validate({"cluster": {"gpus": args.gpus},
                                        "policy": {"inter_task": inter, "early_exit": args.early_exit}})
        inputs = load_inputs(cfg, workload=wl)
        t0, c0 = time.perf_counter(), time.process_time()
        run = simulate(cfg, inputs, record_log=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = run.summary
        rows.append({"inter": inter, "early_exit": args.early_exit, "tasks": len(wl.tasks),
                     "jobs": jobs, "gpus": args.gpus,
                     "wall_s": wall, "cpu_s": cpu, "load1": os.getloadavg()[0],
                     "sim_events": s["sim_events"], "events_per_s": s["sim_events"] / wall,
                     "makespan_h": s["makespan_h"], "samples_saved": s["samples_saved"]})
        print(f"{inter:6s} wall {wall:6.1f} s  sim events {s['sim_events']:>8d}  "
              f"{s['sim_events'] / wall:>9.0f} events/s  makespan {s['makespan_h']:.2f} h  "
              f"samples saved {s['samples_saved']:.1%}  goal <60 s: {'met' if wall < 60 else 'MISSED'}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(pd.DataFrame(rows), args.out / "bench_sim.csv")
        print(f"wrote {args.out / 'bench_sim.csv'}")


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
