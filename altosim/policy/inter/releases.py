"""Offline planning with known future arrivals: CP-SAT with release times (for planning studies).

`plan_with_releases` plans the waiting tasks and the `future` ones (not arrived yet; each may not
start before its `arrival`) around the running ones, minimizing the makespan of all of them:
1. greedy plans by release-aware serial list scheduling (each task at its earliest feasible start
   no earlier than its release) in arrival, shortest-first and longest-first order;
2. integer time (unit = greedy horizon / `resolution`, durations and running ends rounded up,
   releases rounded up, so every integer schedule is feasible in real time) and the cumulative
   CP-SAT model of `cpsat_models` with each start's domain beginning at its release, hinted with
   the best greedy plan, solved as the online scheduler solves (same time limit and determinism);
3. CP-SAT's order compacted in real time (release-aware list schedule), and the better of it and
   the greedy plans returned.
The plan covers waiting and future tasks; the Controller starts only the waiting tasks it says
start now, and re-plans on every arrival and completion, as online.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from altosim.policy.inter.base import (
    FreeProfile,
    Plan,
    RunningTask,
    WaitingTask,
    check_inputs,
    fifo_order,
    lower_bound,
    lpt_order,
    make_plan,
    makespan_of,
    sjf_order,
)
from altosim.policy.inter.cpsat_models import IntInstance, build_cumulative, solve


def release_schedule(now: float, num_gpus: int, running: Sequence[RunningTask],
                     order: Sequence[WaitingTask]) -> dict[str, float]:
    """Each task, in `order`, at its earliest feasible start no earlier than max(now, arrival)."""
    prof = FreeProfile(now, num_gpus, running)
    starts: dict[str, float] = {}
    for w in order:
        s = prof.earliest_start(w.gpus, w.duration, max(now, w.arrival))
        prof.place(s, w.duration, w.gpus)
        starts[w.task_id] = s
    return starts


def release_bound(now: float, num_gpus: int, running: Sequence[RunningTask], tasks: Sequence[WaitingTask]) -> float:
    """The cheap bound of the online planner, and no task ends before its release + duration."""
    return max(lower_bound(now, num_gpus, running, tasks), max(max(now, w.arrival) + w.duration for w in tasks))


def plan_with_releases(
    now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask],
    future: Sequence[WaitingTask], *, time_limit_s: float, num_workers: int, seed: int, deterministic: bool,
    work_limit: float | None, resolution: int | None = None,
) -> Plan:
    """A plan of `waiting` and `future` tasks (module doc); `future` tasks' starts >= their arrival."""
    t0 = time.perf_counter()
    tasks = [*waiting, *future]
    check_inputs(now, num_gpus, running, tasks)
    lb = release_bound(now, num_gpus, running, tasks)
    greedy = [release_schedule(now, num_gpus, running, order(tasks)) for order in (fifo_order, sjf_order, lpt_order)]
    best = min(greedy, key=lambda st: makespan_of(now, running, tasks, st))
    best_ms = makespan_of(now, running, tasks, best)
    if best_ms <= lb * (1 + 1e-9) + 1e-9:
        return make_plan(now, running, tasks, best, "optimal", t0, lb, "greedy plan with releases meets the bound")

    # -- integer instance: durations, running ends and releases rounded up
    unit = (best_ms - now) / (resolution or max(1000, 50 * len(tasks)))

    def units(x: float) -> int:
        return max(0, math.ceil(x / unit - 1e-9))

    run = [r for r in running if r.remaining > 0 and r.gpus]
    dur = tuple(max(1, units(w.duration)) for w in tasks)
    rel = tuple(units(max(0.0, w.arrival - now)) for w in tasks)
    hint = tuple(units(best[w.task_id] - now) for w in tasks)
    run_end = tuple(max(1, units(r.remaining)) for r in run)
    horizon = max([h + d for h, d in zip(hint, dur)] + list(run_end)) + len(tasks) + 1  # rounding slack
    inst = IntInstance(num_gpus=num_gpus, dur=dur, demand=tuple(w.gpus for w in tasks), run_end=run_end,
                       run_gpus=tuple(r.gpus for r in run), horizon=horizon, hint=hint, release=rel)
    elapsed = time.perf_counter() - t0
    try:
        res = solve(build_cumulative(inst), max(0.05, 0.9 * (time_limit_s - 3 * elapsed)), num_workers, seed,
                    deterministic, work_limit=work_limit)
    except Exception as e:  # ortools missing or failing must not stop the study
        return make_plan(now, running, tasks, best, "fallback", t0, lb, f"cp-sat error: {type(e).__name__}: {e}")
    note = f"cp-sat with releases {res.status} in {res.wall_s:.3f}s, unit={unit:.4g}s, {len(future)} not arrived"
    if res.starts is None:
        return make_plan(now, running, tasks, best, "fallback", t0, lb, note)

    # -- compact CP-SAT's order in real time, keep the better of it and the greedy plans
    rank = {w.task_id: k for k, w in enumerate(tasks)}
    order = sorted(tasks, key=lambda w: (res.starts[rank[w.task_id]], rank[w.task_id]))
    cp = release_schedule(now, num_gpus, running, order)
    chosen = min([cp, *greedy], key=lambda st: makespan_of(now, running, tasks, st))  # ties: CP-SAT's
    status = "optimal" if makespan_of(now, running, tasks, chosen) <= lb * (1 + 1e-12) else (
        "feasible" if chosen is cp else "greedy")
    return make_plan(now, running, tasks, chosen, status, t0, lb, note)
