"""CP-SAT makespan scheduler (the paper's inter-task scheduler), time-limited, never worse
than the greedy schedules.

Per plan() call:
1. Greedy plans: FIFO and shortest-job-first list schedules (exact, real time). If the better
   one meets the cheap lower bound it is optimal and CP-SAT is skipped.
2. Integer time. The time unit is u = `time_unit_s` if given, else
   (greedy makespan of the tasks given to CP-SAT - now) / `resolution`: durations and
   running tasks' remaining times are rounded *up* to whole units (>= 1), so every integer
   schedule is feasible in real time. Default resolution: max(1000, 50 * tasks given to CP-SAT)
   (11 tasks -> 1,000 units, 200 -> 10,000): coarse enough that CP-SAT can still prove small
   instances optimal, fine enough that rounding (<= one unit per task, undone by step 4
   anyway) does not steer it.
3. CP-SAT (`model="cumulative"` default, or `"paper"`) minimizes C_max, then with the time left
   and C_max fixed maximizes the GPUs started now and minimizes the sum of starts
   (lexicographic; see cpsat_models), within `time_limit_s` of wall time, hinted
   with the better integer greedy schedule. Only the first `max_tasks`
   waiting tasks by arrival go to CP-SAT; the rest are list-scheduled
   after them in arrival order (filling holes), and `note` says so.
4. Compaction: CP-SAT's order (by integer start) is replayed as a serial list schedule in real
   time. Each task then starts no later than its CP-SAT start mapped to real time (a standard
   property of serial schedule generation along a feasible schedule's start order), so rounding
   slack is removed and the makespan can only drop.
5. The best of {compacted CP-SAT, FIFO, SJF} by (makespan, -GPUs started now, sum of starts)
   is returned, so makespan <= FIFO's always; unless CP-SAT proved optimality, it first goes
   through forward-backward justification (improve.py), kept only if it scores better.

`lower_bound` is max(cheap bound, CP-SAT's bound converted to real time). The conversion is
rigorous: a real schedule shifted to integers (start ceil(s/u) + 2*rank) is feasible in the
rounded model, so OPT_real >= u * (bound_int - 2 * n_cp) with n_cp the tasks given to CP-SAT.

Determinism: a wall-clock limit with parallel workers means the same inputs can give different
plans when the limit is hit (never when CP-SAT proves optimality in time, nor when the greedy
plan meets the bound: then no solver runs). `deterministic=True` makes plans reproducible (for
`alto replay`): one search worker and CP-SAT's work-based limit of `time_limit_s` units, which
took 1-5x that in wall time here; a wall cap of 10x is a safety net (hitting it breaks
reproducibility). With the justification of step 5, short limits lose little: on 200 tasks x
1,024 GPUs, 0.1 s gave makespans within 1% of 2 s runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

from altosim.policy.inter.base import (
    FreeProfile,
    InterTaskScheduler,
    Plan,
    RunningTask,
    WaitingTask,
    check_inputs,
    fifo_order,
    list_schedule,
    lower_bound,
    make_plan,
    makespan_of,
    sjf_order,
)
from altosim.policy.inter.cpsat_models import IntInstance, build_cumulative, build_paper, solve
from altosim.policy.inter.improve import justify
from altosim.policy.inter.validate import assign_gpu_ids
from altosim.policy.registry import INTER_TASK

_MODELS = {"cumulative": build_cumulative, "paper": build_paper}


@INTER_TASK.register("cpsat")
@dataclass
class CpSatScheduler(InterTaskScheduler):
    """Minimize makespan of all waiting tasks around the running ones."""

    time_limit_s: float = 2.0  # CP-SAT wall time per plan() (both phases); greedy work comes on top
    num_workers: int = 2
    model: str = "cumulative"  # or "paper"
    max_tasks: int = 200  # waiting tasks given to CP-SAT (first by arrival); the rest are greedy
    resolution: int | None = None  # integer time units over the greedy horizon (None: auto)
    time_unit_s: float | None = None  # seconds per integer unit; overrides resolution
    deterministic: bool = True  # reproducible plans, so `alto replay` gets the same decisions
    seed: int = 0

    name = "cpsat"

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s!r}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers!r}")
        if self.model not in _MODELS:
            raise ValueError(f"model must be one of {sorted(_MODELS)}, got {self.model!r}")
        if self.max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {self.max_tasks!r}")
        if self.resolution is not None and self.resolution < 10:
            raise ValueError(f"resolution must be >= 10, got {self.resolution!r}")
        if self.time_unit_s is not None and not (0 < self.time_unit_s < math.inf):
            raise ValueError(f"time_unit_s must be > 0, got {self.time_unit_s!r}")

    def plan(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> Plan:
        # -- greedy plans and the cheap bound
        t0 = time.perf_counter()
        check_inputs(now, num_gpus, running, waiting)
        lb = lower_bound(now, num_gpus, running, waiting)
        greedy = [
            list_schedule(now, num_gpus, running, fifo_order(waiting), head_of_line=True),
            list_schedule(now, num_gpus, running, sjf_order(waiting)),
        ]
        best = min(greedy, key=lambda st: _score(now, running, waiting, st))
        best_ms = makespan_of(now, running, waiting, best)
        free_now = int(FreeProfile(now, num_gpus, running).free[0])
        idles_now = any(w.gpus <= free_now for w in waiting) and not any(t <= now for t in best.values())
        if not waiting or (best_ms <= lb * (1 + 1e-9) + 1e-9 and not idles_now):
            return make_plan(now, running, waiting, best, "optimal", t0, lb, "greedy plan meets the lower bound")

        # -- the part CP-SAT sees
        by_arrival = fifo_order(waiting)
        sub, rest = by_arrival[: self.max_tasks], by_arrival[self.max_tasks :]
        truncated = bool(rest)
        horizon = best_ms
        if truncated:  # the unit follows the horizon of what CP-SAT sees
            horizon = min(
                makespan_of(now, running, sub, list_schedule(now, num_gpus, running, order))
                for order in (sub, sjf_order(sub))
            )
        unit = self.time_unit_s or (horizon - now) / (self.resolution or max(1000, 50 * len(sub)))
        inst = _discretize(now, num_gpus, running, sub, unit, with_ids=self.model == "paper")

        # -- solve
        try:
            res = solve(_MODELS[self.model](inst), self.time_limit_s, self.num_workers, self.seed, self.deterministic)
        except Exception as e:  # ortools missing or failing must not stop the cluster
            return make_plan(now, running, waiting, best, "fallback", t0, lb, f"cp-sat error: {type(e).__name__}: {e}")
        lb = max(lb, now + unit * (res.cmax_bound - 2 * len(sub)))
        note = f"cp-sat {res.status} (left shift {res.left_shift}) in {res.wall_s:.3f}s, unit={unit:.4g}s"
        if truncated:
            note += f"; cp-sat on the first {len(sub)} of {len(waiting)} waiting by arrival, rest list-scheduled"
        if res.starts is None:
            return make_plan(now, running, waiting, best, "fallback", t0, lb, note)

        # -- extract: compact CP-SAT's order in real time, then the rest
        rank = {w.task_id: k for k, w in enumerate(sub)}
        order = sorted(sub, key=lambda w: (res.starts[rank[w.task_id]], rank[w.task_id]))
        prof = FreeProfile(now, num_gpus, running)
        cp_starts = list_schedule(now, num_gpus, running, order, profile=prof)
        cp_starts.update(list_schedule(now, num_gpus, running, rest, profile=prof))

        # -- choose, then squeeze out slack a time-limited solve leaves (never worse)
        chosen = min([cp_starts, *greedy], key=lambda st: _score(now, running, waiting, st))  # ties: CP-SAT's
        if not (res.status == "OPTIMAL" and not truncated):
            better = justify(now, num_gpus, running, waiting, chosen)
            if _score(now, running, waiting, better) < _score(now, running, waiting, chosen):
                chosen = cp_starts = better  # counts as CP-SAT's plan, improved
                note += "; improved by forward-backward justification"
        proved = res.status == "OPTIMAL" and not truncated
        if proved or makespan_of(now, running, waiting, chosen) <= lb:
            status = "optimal"
        else:
            status = "feasible" if chosen is cp_starts else "greedy"
        return make_plan(now, running, waiting, chosen, status, t0, lb, note)


def _score(
    now: float, running: Sequence[RunningTask], waiting: Sequence[WaitingTask], starts: dict[str, float]
) -> tuple[float, int, float]:
    """(makespan, -GPUs started now, sum of starts): smaller is better."""
    busy_now = sum(w.gpus for w in waiting if starts[w.task_id] <= now)
    return makespan_of(now, running, waiting, starts), -busy_now, sum(starts.values())


def _units(x: float, unit: float) -> int:
    """x seconds rounded up to whole units (float noise of 1e-9 units tolerated)."""
    return max(1, math.ceil(x / unit - 1e-9))


def _discretize(
    now: float, num_gpus: int, running: Sequence[RunningTask], sub: Sequence[WaitingTask], unit: float, with_ids: bool
) -> IntInstance:
    """Integer instance at time 0 = now, with the better integer greedy schedule as hint."""
    run = [r for r in running if r.remaining > 0 and r.gpus]
    iruns = [RunningTask(r.task_id, r.gpus, float(_units(r.remaining, unit))) for r in run]
    iwait = [WaitingTask(w.task_id, w.gpus, float(_units(w.duration, unit)), w.arrival) for w in sub]
    hints = [
        list_schedule(0.0, num_gpus, iruns, fifo_order(iwait), head_of_line=True),
        list_schedule(0.0, num_gpus, iruns, sjf_order(iwait)),
    ]
    hint = min(hints, key=lambda st: _score(0.0, iruns, iwait, st))
    horizon = int(makespan_of(0.0, iruns, iwait, hint))
    hint_gpus: tuple[tuple[int, ...], ...] = ()
    if with_ids:
        hplan = make_plan(0.0, iruns, iwait, hint, "greedy", 0.0, 0.0)
        ids = assign_gpu_ids(hplan, 0.0, num_gpus, iruns, iwait)
        hint_gpus = tuple(ids[w.task_id] for w in iwait)
    return IntInstance(
        num_gpus=num_gpus,
        dur=tuple(int(w.duration) for w in iwait),
        demand=tuple(w.gpus for w in iwait),
        run_end=tuple(int(r.remaining) for r in iruns),
        run_gpus=tuple(r.gpus for r in iruns),
        horizon=horizon,
        hint=tuple(int(hint[w.task_id]) for w in iwait),
        hint_gpus=hint_gpus,
    )


__all__ = ["CpSatScheduler"]
