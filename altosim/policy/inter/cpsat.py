"""CP-SAT inter-task scheduler (the paper's, which minimizes makespan; or, with
`objective="completion"`, the sum of completion times, what the mean task completion users
judge comes from) within a wall-clock limit, never worse than the fast greedy rules, re-planning
incrementally.

`objective="completion"` changes steps 1-6 below as follows: the greedy plans are the non-delay
(backfilling, event by event) schedules of arrival order, SJF and smallest-area-first (GPUs x
duration, the classic rule for the sum of completion times of wide tasks), and the `sjf`
policy's own plan (serial SJF for its first `sjf.RESERVE` tasks: holding GPUs for a wide task
beats starting a long narrow one in them on some queues, so the plan is never worse than that
policy's by the sum it predicts); CP-SAT's hint is the best of the integer SJF (non-delay and
serial) and area schedules; plans are compared by (sum of
completion times, makespan); only a plan that starts every task now is "optimal" without
CP-SAT; the head given to CP-SAT is the first `max_tasks` by the best greedy plan's starts (the
rest follow in that order by the fast rule); CP-SAT minimizes the sum of starts, then, with
that sum fixed, C_max (cpsat_models.solve); no forward-backward justification (it serves the
makespan). `lower_bound` and `gap` still concern the makespan (the area/longest-task bound):
such a plan trades makespan for mean completion, and its status is "optimal" only when CP-SAT
proved the sum optimal for the whole queue. Under early exit (a waiting task's `spread` > 0)
the plan is the sjf policy's unless its predicted gain over that plan beats the error of both
plans' predicted starts (`robust_choice`): the predicted sum ties often (tasks that fill GPUs
as running tasks release them give the same sum in any pairing), the makespan tie-break then
put long tasks in the early releases, and plans that won the predicted sum by such trades
lost on the Philly replay to the short tasks still to arrive, which no plan of today's queue
sees (README, "CP-SAT vs SJF where queues are deeper").

Per plan() call (`time_limit_s` is wall seconds for the whole call, as users read it):
1. Greedy plans, event by event (fast.py, O(n log n) in the queue): arrival order with
   backfilling, SJF, longest-first (LPT, the classic makespan rule), and FIFO for a queue of
   at most `max_tasks`, which also gets SJF and LPT by serial list scheduling (holes filled,
   reservations kept); a longer one gets only the event-driven rules (a serial head of 200
   cost 30 ms per plan).
   If the best meets the cheap lower bound (area / longest task) it is optimal and CP-SAT is
   skipped.
2. The head of the queue: the first `max_tasks` waiting tasks by arrival go to CP-SAT; the rest
   are placed by the fast rule (arrival order, backfilling) around them, and `note` says so.
   Incremental: when nothing material changed since the last solve (at most `resolve_share`
   of today's head is new since then, and with none new the old order still ends the head no
   later than it did), the last order is kept (new tasks last) and CP-SAT is not called.
3. Integer time. The time unit is u = `time_unit_s` if given, else (greedy makespan of the head
   - now) / `resolution`: durations and running tasks' remaining times are rounded *up* to
   whole units (>= 1), so every integer schedule is feasible in real time. Default resolution:
   max(1000, 50 * head size).
4. CP-SAT (`model="cumulative"` default, or `"paper"`) minimizes C_max, then with C_max fixed
   maximizes the GPUs started now and minimizes the sum of starts weighted by GPU-time
   (lexicographic; see cpsat_models), hinted with the best integer greedy schedule (FIFO, SJF, LPT), within 90% of what is left of
   `time_limit_s` once the time steps 1-3 took is spent three times (extraction and
   justification cost about twice that). Under 10 ms left (a long queue's greedy plans took
   the limit): no solve (it found nothing in that time, and building the model costs CPU),
   the best greedy plan, status "fallback" (as when a solve finds nothing), and the note
   says so (the wall decided it).
5. Compaction: CP-SAT's order is replayed as a serial list schedule in real time (each task
   starts no later than its CP-SAT start mapped to real time, so rounding slack goes and the
   makespan can only drop), then the rest of the queue by the fast rule.
6. The best of {compacted CP-SAT, the greedy plans} by (makespan, -GPUs started now, sum of
   starts weighted by GPU-time) is returned, so it is never worse than the fast rules alone (nor than FIFO for queues
   of at most `max_tasks`); unless CP-SAT proved it optimal, in a queue no longer than
   `max_tasks` it and the longest-first plan go through forward-backward justification
   (improve.py, O(n^2)), and the better result is kept if it scores better.
7. Uncertain durations (`WaitingTask.spread` > 0, predictions under early exit): CP-SAT's C_max
   and the comparison of plans (step 6's makespan) count each waiting task as ending `spread` x its duration late
   (`robust_makespan`), so a long task is not left for the end where its error becomes the
   makespan; its bound is then not a bound on the real makespan and is not used.

`lower_bound` is max(cheap bound, CP-SAT's bound in real time): with no rounding (step 3 exact)
that is u * bound_int; otherwise OPT_real >= u * (bound_int - 2 * n_cp), since a real schedule
shifted to integers (start ceil(s/u) + 2*rank) is feasible in the rounded model. `status` is
"optimal" only when the real makespan meets that real bound (or CP-SAT proved the unrounded
model optimal): plans.csv's gap, (makespan - lower_bound) / (lower_bound - now), is to the real bound.

Determinism (what `alto replay` relies on): with `deterministic=True` (default) CP-SAT runs one
worker under a fixed work budget, `work_limit` CP-SAT work units per plan (default
WORK_PER_S * time_limit_s = 0.1 units per second of limit: on these models a unit took 1-5 s of
wall here, so the budget usually ends first). The budget is a pure function of the scheduler's
parameters, which the event-log header records, so a replay gets the same plans. The wall
limit stays on as a cap: a plan it cut short says so in its note ("stopped by the wall-clock
limit") and may not replay identically. The incremental reuse (step 2) depends only on the
plans' inputs, so it replays too. `deterministic=False`: `num_workers` workers, wall limit only.
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
    lpt_order,
    make_plan,
    makespan_of,
    sjf_order,
)
from altosim.policy.inter.cpsat_models import IntInstance, build_cumulative, build_paper, solve
from altosim.policy.inter.fast import event_schedule, reserve_then_fill
from altosim.policy.inter.improve import justify
from altosim.policy.inter.releases import plan_with_releases
from altosim.policy.inter.sjf import RESERVE as SJF_RESERVE
from altosim.policy.inter.validate import assign_gpu_ids
from altosim.policy.registry import INTER_TASK

_MODELS = {"cumulative": build_cumulative, "paper": build_paper}
WORK_PER_S = 0.1  # deterministic CP-SAT work units per second of time_limit_s (see the module docstring)
_SOLVER_SHARE = 0.9  # of the wall time left for CP-SAT (see step 4 of the module docstring)
_MIN_SOLVE_S = 0.01  # a solve given less wall than this is skipped (it found nothing in that time)
_NO_TIME = "no wall time left for cp-sat; the best greedy plan (may not replay identically)"


@INTER_TASK.register("cpsat")
@dataclass
class CpSatScheduler(InterTaskScheduler):
    """Minimize makespan of all waiting tasks around the running ones."""

    time_limit_s: float = 2.0  # wall seconds for a whole plan() call (greedy rules, CP-SAT, extraction)
    num_workers: int = 2
    model: str = "cumulative"  # or "paper"
    max_tasks: int = 200  # waiting tasks given to CP-SAT (first by arrival); the rest by the fast rule
    resolution: int | None = None  # integer time units over the greedy horizon (None: auto)
    time_unit_s: float | None = None  # seconds per integer unit; overrides resolution
    deterministic: bool = True  # reproducible plans, so `alto replay` gets the same decisions
    work_limit: float | None = None  # CP-SAT work units per plan when deterministic (None: WORK_PER_S * limit)
    resolve_share: float = 0.1  # re-solve once this share of the head entered since the last solve
    seed: int = 0
    objective: str = "makespan"  # or "completion": the sum of completion times (mean task completion)

    name = "cpsat"
    plans_releases = True

    def __post_init__(self) -> None:
        if not (0 < self.time_limit_s < math.inf):
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
        if self.work_limit is not None and not (0 < self.work_limit < math.inf):
            raise ValueError(f"work_limit must be > 0, got {self.work_limit!r}")
        if not 0 <= self.resolve_share < 1:
            raise ValueError(f"resolve_share must be in [0, 1), got {self.resolve_share!r}")
        if self.objective not in ("makespan", "completion"):
            raise ValueError(f"objective must be 'makespan' or 'completion', got {self.objective!r}")
        self._memo: _Memo | None = None  # the last CP-SAT solve (incremental re-planning)

    def plan(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> Plan:
        # -- greedy plans and the cheap bound
        t0 = time.perf_counter()
        check_inputs(now, num_gpus, running, waiting)
        lb = lower_bound(now, num_gpus, running, waiting)
        by_arrival, by_sjf = fifo_order(waiting), sjf_order(waiting)
        serial = self.max_tasks if len(waiting) <= self.max_tasks else 0  # long queues: event by event only
        completion = self.objective == "completion"
        if completion:  # non-delay schedules of the rules for the sum of completion times, and the sjf policy's plan
            greedy = [event_schedule(now, num_gpus, running, order)
                      for order in (by_arrival, by_sjf, area_order(waiting))]
            greedy.append(reserve_then_fill(now, num_gpus, running, by_sjf, SJF_RESERVE))
        else:
            greedy = [
                event_schedule(now, num_gpus, running, by_arrival),  # arrival order, backfilling
                reserve_then_fill(now, num_gpus, running, by_sjf, serial),  # SJF
                reserve_then_fill(now, num_gpus, running, lpt_order(waiting), serial),  # longest first
            ]
            if len(waiting) <= self.max_tasks:  # FIFO (backfilling is rarely worse, but can be)
                greedy.append(event_schedule(now, num_gpus, running, by_arrival, head_of_line=True))
        score = _completion_score if completion else _score
        best = min(greedy, key=lambda st: score(now, running, waiting, st))
        if completion:  # every return below: the sjf policy's plan unless a gain over it survives the error
            best = robust_choice(now, waiting, best, greedy[-1])
        best_ms = makespan_of(now, running, waiting, best)
        free_now = int(FreeProfile(now, num_gpus, running).free[0])
        idles_now = any(w.gpus <= free_now for w in waiting) and not any(t <= now for t in best.values())
        if completion:
            if not waiting or all(t <= now for t in best.values()):
                return make_plan(now, running, waiting, best, "optimal", t0, lb, "every task starts now")
        elif not waiting or (best_ms <= lb * (1 + 1e-9) + 1e-9 and not idles_now):
            return make_plan(now, running, waiting, best, "optimal", t0, lb, "greedy plan meets the lower bound")

        # -- the head of the queue goes to CP-SAT, unless its previous order still holds
        queue = sorted(waiting, key=lambda w: (best[w.task_id], w.arrival, w.task_id)) if completion else by_arrival
        sub, rest = queue[: self.max_tasks], queue[self.max_tasks :]
        truncated = bool(rest)
        key = (now, num_gpus, tuple(running), tuple(sub))
        reused = self._reusable(now, num_gpus, running, sub)
        proved = False
        if reused is not None:
            order, res = reused, None
            note = "kept the last cp-sat order (nothing material changed)"
            if self._memo is not None and self._memo.key == key:  # the very same head: its bound holds
                lb, proved = max(lb, self._memo.lb), self._memo.proved
        elif self.time_limit_s - 3 * (time.perf_counter() - t0) < _MIN_SOLVE_S / _SOLVER_SHARE:
            return make_plan(now, running, waiting, best, "fallback", t0, lb, _NO_TIME)
        else:
            horizon = best_ms
            if truncated:  # the unit follows the horizon of what CP-SAT sees
                horizon = min(
                    makespan_of(now, running, sub, list_schedule(now, num_gpus, running, order))
                    for order in (sub, sjf_order(sub))
                )
            unit = self.time_unit_s or (horizon - now) / (self.resolution or max(1000, 50 * len(sub)))
            inst, exact = _discretize(now, num_gpus, running, sub, unit, with_ids=self.model == "paper",
                                      objective=self.objective)
            elapsed = time.perf_counter() - t0  # extraction and justification: about twice that
            budget = _SOLVER_SHARE * (self.time_limit_s - 3 * elapsed)
            if budget < _MIN_SOLVE_S:
                return make_plan(now, running, waiting, best, "fallback", t0, lb, _NO_TIME)
            try:
                res = solve(_MODELS[self.model](inst), budget,
                            self.num_workers, self.seed,
                            self.deterministic, work_limit=self._work_limit(), objective=self.objective)
            except Exception as e:  # ortools missing or failing must not stop the cluster
                return make_plan(now, running, waiting, best, "fallback", t0, lb, f"cp-sat error: {type(e).__name__}: {e}")
            slack = 0 if exact else 2 * len(sub)
            lb_cp = now + unit * (res.cmax_bound - slack)
            robust = any(w.spread for w in sub)  # CP-SAT's C_max counts the tails: no bound on the real one
            if robust or completion:  # (CP-SAT's bound is on the sum of starts, not on C_max)
                lb_cp = lb
            lb = max(lb, lb_cp)
            proved = res.status == "OPTIMAL" and exact and not robust
            note = f"cp-sat {res.status} (left shift {res.left_shift}) in {res.wall_s:.3f}s, unit={unit:.4g}s"
            if res.wall_capped:
                note += "; stopped by the wall-clock limit (may not replay identically)"
            if res.starts is None:
                self._memo = None
                return make_plan(now, running, waiting, best, "fallback", t0, lb, note)
            rank = {w.task_id: k for k, w in enumerate(sub)}
            order = sorted(sub, key=lambda w: (res.starts[rank[w.task_id]], rank[w.task_id]))
        if truncated:
            by = "the best greedy plan's starts" if completion else "arrival"
            note += f"; cp-sat on the first {len(sub)} of {len(waiting)} waiting by {by}, rest by the fast rule"

        # -- extract: compact CP-SAT's order in real time, then the rest event by event around it
        prof = FreeProfile(now, num_gpus, running)
        cp_starts = list_schedule(now, num_gpus, running, order, profile=prof)
        if rest:
            cp_starts.update(event_schedule(now, num_gpus, running, rest, profile=prof))
        if res is not None:
            self._memo = _Memo(frozenset(w.task_id for w in sub), tuple(w.task_id for w in order),
                               makespan_of(now, running, sub, cp_starts), key, lb_cp, proved)
        proved = proved and not truncated

        # -- choose, then squeeze out slack a time-limited solve leaves (never worse)
        chosen = min([cp_starts, *greedy], key=lambda st: score(now, running, waiting, st))  # ties: CP-SAT's
        if completion:  # the sjf policy's plan unless the predicted gain over it survives the predictions' error
            chosen = robust_choice(now, waiting, chosen, greedy[-1])
            status = "optimal" if proved and chosen is cp_starts else ("feasible" if chosen is cp_starts else "greedy")
            return make_plan(now, running, waiting, chosen, status, t0, lb, note)
        if not proved and not truncated:  # justify the chosen plan and the longest-first one
            tried = [justify(now, num_gpus, running, waiting, st, rounds=4) for st in (chosen, greedy[2])]
            better = min(tried, key=lambda st: _score(now, running, waiting, st))
            if _score(now, running, waiting, better) < _score(now, running, waiting, chosen):
                chosen = cp_starts = better  # counts as CP-SAT's plan, improved
                note += "; improved by forward-backward justification"
        if proved or makespan_of(now, running, waiting, chosen) <= lb * (1 + 1e-12):
            status = "optimal"
        else:
            status = "feasible" if chosen is cp_starts else "greedy"
        return make_plan(now, running, waiting, chosen, status, t0, lb, note)

    def plan_with_releases(self, now: float, num_gpus: int, running: Sequence[RunningTask],
                           waiting: Sequence[WaitingTask], future: Sequence[WaitingTask]) -> Plan:
        """Offline planning with known future arrivals (releases.py), same limits and determinism."""
        return plan_with_releases(now, num_gpus, running, waiting, future, time_limit_s=self.time_limit_s,
                                  num_workers=self.num_workers, seed=self.seed, deterministic=self.deterministic,
                                  work_limit=self._work_limit(), resolution=self.resolution)

    def _work_limit(self) -> float | None:
        if not self.deterministic:
            return None
        return self.work_limit if self.work_limit is not None else WORK_PER_S * self.time_limit_s

    def _reusable(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], sub: Sequence[WaitingTask]
    ) -> list[WaitingTask] | None:
        """The last solve's order for today's head, when nothing material changed: at most
        `resolve_share` of the head is new since that solve (new tasks go last, by arrival),
        and, with none new, the order still ends the head no later than it did then."""
        memo = self._memo
        if memo is None:
            return None
        new = [w for w in sub if w.task_id not in memo.head]
        if len(new) > self.resolve_share * len(sub):
            return None
        by_id = {w.task_id: w for w in sub}
        order = [by_id[i] for i in memo.order if i in by_id] + new
        if not new:
            ms = makespan_of(now, running, sub, list_schedule(now, num_gpus, running, order))
            if ms > memo.head_makespan * (1 + 1e-9) + 1e-9:
                return None
        return order


@dataclass(frozen=True)
class _Memo:
    head: frozenset[str]  # the task ids CP-SAT solved for
    order: tuple[str, ...]  # their order by CP-SAT's starts
    head_makespan: float  # the compacted head's makespan then (absolute time)
    key: tuple  # (now, num_gpus, running, head) it was solved for
    lb: float  # the bound CP-SAT proved for that head (absolute time)
    proved: bool  # CP-SAT proved that head's order optimal (exact integer model)


def _score(
    now: float, running: Sequence[RunningTask], waiting: Sequence[WaitingTask], starts: dict[str, float]
) -> tuple[float, int, float]:
    """(makespan, -GPUs started now, sum of starts weighted by GPU-time): smaller is better
    (the order of CP-SAT's phases; cpsat_models says why large tasks go first)."""
    busy_now = sum(w.gpus for w in waiting if starts[w.task_id] <= now)
    weighted = sum(w.gpus * w.duration * (starts[w.task_id] - now) for w in waiting)
    return robust_makespan(now, running, waiting, starts), -busy_now, weighted


def _completion_score(
    now: float, running: Sequence[RunningTask], waiting: Sequence[WaitingTask], starts: dict[str, float]
) -> tuple[float, float]:
    """(sum of completion times, makespan): smaller is better (objective="completion")."""
    return sum(starts[w.task_id] + w.duration for w in waiting), makespan_of(now, running, waiting, starts)


_TIE_REL = 1e-9  # relative float noise of sums of completion times (absolute times)


def robust_choice(
    now: float, waiting: Sequence[WaitingTask], plan: dict[str, float], ref: dict[str, float]
) -> dict[str, float]:
    """`plan` where its predicted gain over `ref` in the sum of completion times survives the
    predictions' error, else `ref` (objective="completion": `ref` is the sjf policy's plan).

    A predicted start t after `now` is the end of a chain of predicted durations (running
    tasks' remaining times, then waiting tasks'), each off by about `spread` of itself, so t is
    off by up to spread x (t - now); a start at `now` is sure. The gain sum(ref's start - plan's
    start) counts only above the sum of both plans' such errors (worst case: errors aligned
    against the plan); ties go to `ref`. With exact durations (every spread 0) `plan` stands:
    its sum is then sure, and its ties broken by makespan kept 12% below SJF on the Philly
    replay without early exit (9% when ties went to `ref`)."""
    if plan is ref or not any(w.spread for w in waiting):
        return plan
    gain = err = scale = 0.0
    for w in waiting:
        a, b = ref[w.task_id], plan[w.task_id]
        gain += a - b
        err += w.spread * ((a - now) + (b - now))
        scale += abs(a) + w.duration
    return plan if gain > err + _TIE_REL * scale else ref


def area_order(waiting: Sequence[WaitingTask]) -> list[WaitingTask]:
    """Smallest GPU-time (GPUs x duration) first, ties by duration, arrival, task id."""
    return sorted(waiting, key=lambda w: (w.gpus * w.duration, w.duration, w.arrival, w.task_id))


def robust_makespan(
    now: float, running: Sequence[RunningTask], waiting: Sequence[WaitingTask], starts: dict[str, float]
) -> float:
    """The makespan with each waiting task's end pushed late by its `spread` (= makespan_of
    when no duration is uncertain): what plans are compared by (module docstring, step 7)."""
    ends = [now] + [now + r.remaining for r in running]
    ends += [starts[w.task_id] + w.duration * (1.0 + w.spread) for w in waiting]
    return max(ends)


def _units(x: float, unit: float) -> int:
    """x seconds rounded up to whole units (float noise of 1e-9 units tolerated)."""
    return max(1, math.ceil(x / unit - 1e-9))


def _discretize(
    now: float, num_gpus: int, running: Sequence[RunningTask], sub: Sequence[WaitingTask], unit: float, with_ids: bool,
    objective: str = "makespan",
) -> tuple[IntInstance, bool]:
    """Integer instance at time 0 = now, with the better integer greedy schedule as hint, and
    whether it is exact (every duration and release a whole number of units: no rounding)."""
    run = [r for r in running if r.remaining > 0 and r.gpus]
    iruns = [RunningTask(r.task_id, r.gpus, float(_units(r.remaining, unit))) for r in run]
    iwait = [WaitingTask(w.task_id, w.gpus, float(_units(w.duration, unit)), w.arrival, w.spread) for w in sub]
    if objective == "completion":
        hints = [event_schedule(0.0, num_gpus, iruns, order) for order in (sjf_order(iwait), area_order(iwait))]
        hints.append(list_schedule(0.0, num_gpus, iruns, sjf_order(iwait)))  # serial SJF (the sjf policy's)
        hint = min(hints, key=lambda st: _completion_score(0.0, iruns, iwait, st))
        # a smaller sum of completions may cost makespan: leave room past the hint's
        horizon = math.ceil(robust_makespan(0.0, iruns, iwait, hint) + max(w.duration for w in iwait))
    else:
        hints = [
            list_schedule(0.0, num_gpus, iruns, fifo_order(iwait), head_of_line=True),
            list_schedule(0.0, num_gpus, iruns, sjf_order(iwait)),
            list_schedule(0.0, num_gpus, iruns, lpt_order(iwait)),
        ]
        hint = min(hints, key=lambda st: _score(0.0, iruns, iwait, st))
        horizon = math.ceil(robust_makespan(0.0, iruns, iwait, hint))
    tail = tuple(math.ceil(w.duration * w.spread - 1e-9) for w in iwait) if any(w.spread for w in iwait) else ()
    hint_gpus: tuple[tuple[int, ...], ...] = ()
    if with_ids:
        hplan = make_plan(0.0, iruns, iwait, hint, "greedy", 0.0, 0.0)
        ids = assign_gpu_ids(hplan, 0.0, num_gpus, iruns, iwait)
        hint_gpus = tuple(ids[w.task_id] for w in iwait)
    exact = all(_units(x, unit) * unit == x for x in [r.remaining for r in run] + [w.duration for w in sub])
    return IntInstance(
        num_gpus=num_gpus,
        dur=tuple(int(w.duration) for w in iwait),
        demand=tuple(w.gpus for w in iwait),
        run_end=tuple(int(r.remaining) for r in iruns),
        run_gpus=tuple(r.gpus for r in iruns),
        horizon=horizon,
        hint=tuple(int(hint[w.task_id]) for w in iwait),
        hint_gpus=hint_gpus,
        tail=tail,
    ), exact


__all__ = ["CpSatScheduler", "area_order", "robust_choice"]
