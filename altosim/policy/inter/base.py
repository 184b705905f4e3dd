"""Inter-task scheduling: shared types, the free-GPU profile, list scheduling, plan checks.

A scheduler sees the cluster at time `now`: running tasks (never moved; each keeps its GPUs
until `now + remaining`) and waiting tasks (GPU demand, worst-case duration). It returns a
`Plan` with an absolute start time for *every* waiting task. GPUs are interchangeable, so a
schedule that keeps the number of GPUs in use <= num_gpus at every instant can always be
realized with concrete GPU ids (hand out free ids at each start); plans therefore carry GPU
counts, and the Controller starts the tasks whose planned start <= now on free GPUs and
re-plans on every arrival and completion.

Intervals are half-open [start, start + duration): a task may start at the instant another ends.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

PlanStatus = Literal["optimal", "feasible", "greedy", "fallback"]


@dataclass(frozen=True)
class WaitingTask:
    task_id: str
    gpus: int
    duration: float  # seconds: the worst case, or a prediction under early exit
    arrival: float
    spread: float = 0.0  # relative error of `duration` (0: exact); cpsat keeps uncertain long tasks off the end


@dataclass(frozen=True)
class RunningTask:
    task_id: str
    gpus: tuple[int, ...]  # concrete GPU ids it holds
    remaining: float  # seconds until it releases them


@dataclass(frozen=True)
class Assignment:
    task_id: str
    start: float  # absolute time
    gpus: int  # how many GPUs (ids are chosen when it starts)


@dataclass(frozen=True)
class Plan:
    """`makespan`: absolute time when running and planned tasks are all done (`now` if none).

    `status`: "optimal" (the plan meets `lower_bound`, or CP-SAT proved it optimal in its
    integer time model), "feasible" (CP-SAT's solution, not proved optimal: time limit or a
    truncated instance), "greedy" (a list schedule: the fifo/sjf schedulers, or cpsat when its
    solution was no better), "fallback" (CP-SAT failed, found nothing or had no time left; the
    best greedy plan is returned). `lower_bound` is an absolute time no plan can finish before; `solve_s` the
    wall time plan() took (for reports only). `note` says anything else worth logging (solver
    status, time unit, that only part of the queue went to CP-SAT).
    """

    assignments: tuple[Assignment, ...]
    makespan: float
    status: PlanStatus
    solve_s: float
    lower_bound: float
    note: str = ""
    now: float = 0.0  # the time the plan was made for

    def starts_now(self, now: float) -> tuple[Assignment, ...]:
        """Assignments the Controller should start at `now`."""
        return tuple(a for a in self.assignments if a.start <= now)

    @property
    def gap(self) -> float:
        """Relative optimality gap over the remaining horizon:
        (makespan - lower_bound) / (lower_bound - now); 0 when nothing remains."""
        span = self.lower_bound - self.now
        return max(0.0, self.makespan - self.lower_bound) / span if span > 0 else 0.0


class InterTaskScheduler:
    """Interface: plan(now, num_gpus, running, waiting) -> Plan covering all waiting tasks."""

    name = "base"
    plans_releases = False  # True: `plan_with_releases` also plans tasks that have not arrived yet

    def plan(
        self,
        now: float,
        num_gpus: int,
        running: Sequence[RunningTask],
        waiting: Sequence[WaitingTask],
    ) -> Plan:
        raise NotImplementedError

    def plan_with_releases(self, now: float, num_gpus: int, running: Sequence[RunningTask],
                           waiting: Sequence[WaitingTask], future: Sequence[WaitingTask]) -> Plan:
        """A plan of the waiting tasks and of `future` ones (known arrivals, each no earlier than
        its `arrival`), for offline planning studies; only where `plans_releases`."""
        raise NotImplementedError(f"the {self.name} scheduler does not plan known future arrivals")

    def starts_now(self, free: int, waiting: Iterable[WaitingTask]) -> list[str] | None:
        """The tasks `plan` would start at `now`, when that is known without planning the rest
        (long queues make full plans costly); None: call `plan`. `waiting` comes lazily, in
        arrival order (ties by task id). Here: nothing when no GPU is free, else None."""
        return [] if free <= 0 else None


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def check_inputs(
    now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
) -> None:
    """Raise one clear ValueError for inputs no plan can honour."""
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now!r}")
    if num_gpus <= 0:
        raise ValueError(f"num_gpus must be > 0, got {num_gpus!r}")
    held: set[int] = set()
    ids: set[str] = set()
    for r in running:
        if r.task_id in ids:
            raise ValueError(f"running: duplicate task_id {r.task_id!r}")
        ids.add(r.task_id)
        if not math.isfinite(r.remaining) or r.remaining < 0:
            raise ValueError(f"running task {r.task_id!r}: remaining must be finite and >= 0, got {r.remaining!r}")
        for g in r.gpus:
            if not 0 <= g < num_gpus:
                raise ValueError(f"running task {r.task_id!r}: GPU id {g} outside 0..{num_gpus - 1}")
            if g in held:
                raise ValueError(f"running task {r.task_id!r}: GPU {g} already held by another task")
            held.add(g)
    for w in waiting:
        if w.task_id in ids:
            raise ValueError(f"waiting: duplicate task_id {w.task_id!r}")
        ids.add(w.task_id)
        if not 1 <= w.gpus <= num_gpus:
            raise ValueError(f"waiting task {w.task_id!r}: gpus={w.gpus} but the cluster has {num_gpus}")
        if not math.isfinite(w.duration) or w.duration <= 0:
            raise ValueError(f"waiting task {w.task_id!r}: duration must be finite and > 0, got {w.duration!r}")
        if not (math.isfinite(w.spread) and w.spread >= 0):
            raise ValueError(f"waiting task {w.task_id!r}: spread must be finite and >= 0, got {w.spread!r}")
        if not math.isfinite(w.arrival):
            raise ValueError(f"waiting task {w.task_id!r}: arrival must be finite, got {w.arrival!r}")


# ---------------------------------------------------------------------------------------------
# Free-GPU profile and list scheduling
# ---------------------------------------------------------------------------------------------


class FreeProfile:
    """Free GPUs over time as a step function: free[k] on [times[k], times[k+1]), last to +inf.

    Running tasks only release GPUs, so the initial profile is non-decreasing; placing a task
    subtracts its GPUs over its interval. All times are absolute.
    """

    def __init__(self, now: float, num_gpus: int, running: Iterable[RunningTask]) -> None:
        self.num_gpus = num_gpus
        ends: dict[float, int] = {}
        busy = 0
        for r in running:
            end = now + r.remaining
            if end > now and r.gpus:
                ends[end] = ends.get(end, 0) + len(r.gpus)
                busy += len(r.gpus)
        times = [now]
        free = [num_gpus - busy]
        for end in sorted(ends):
            times.append(end)
            free.append(free[-1] + ends[end])
        self.times = np.asarray(times, dtype=float)
        self.free = np.asarray(free, dtype=np.int64)

    def earliest_start(self, gpus: int, duration: float, not_before: float) -> float:
        """Earliest t >= not_before with >= gpus free on all of [t, t + duration)."""
        times, free = self.times, self.free
        k0 = max(0, int(np.searchsorted(times, not_before, side="right")) - 1)
        ok = free[k0:] >= gpus
        cand = np.flatnonzero(ok)  # always holds the last segment (everything free by then)
        bad = np.flatnonzero(~ok)
        # run end for each candidate segment: start of the next bad segment, else +inf
        nxt = np.searchsorted(bad, cand, side="right")
        run_end = np.full(len(cand), np.inf)
        has = nxt < len(bad)
        run_end[has] = times[k0 + bad[nxt[has]]]
        starts = np.maximum(times[k0 + cand], not_before)
        fit = np.flatnonzero(starts + duration <= run_end)
        return float(starts[fit[0]])

    def latest_start(self, gpus: int, duration: float, end_by: float, not_before: float) -> float | None:
        """Latest t with t + duration <= end_by, t >= not_before and >= gpus free on all of
        [t, t + duration); None if there is none."""
        times, free = self.times, self.free
        bad = np.flatnonzero(free < gpus)  # never the last segment (all GPUs free by then)
        bad_start, bad_end = times[bad], times[bad + 1]
        # a latest placement ends at end_by or where a blocking segment begins
        ends = np.concatenate(([end_by], bad_start[bad_start < end_by]))
        starts = ends - duration
        for _ in range(4):  # float: (e - d) + d may exceed e by an ulp; place() uses s + d
            over = starts + duration > ends
            if not over.any():
                break
            starts[over] = np.nextafter(starts[over], -np.inf)
        # blocked if the last blocking segment starting before `end` ends after `start`
        k = np.searchsorted(bad_start, ends, side="left") - 1
        prev_end = bad_end[np.maximum(k, 0)] if len(bad) else np.zeros(len(ends))
        prev_end = np.where(k >= 0, prev_end, -np.inf)
        ok = (prev_end <= starts) & (starts >= not_before)
        return float(starts[ok].max()) if ok.any() else None

    def place(self, start: float, duration: float, gpus: int) -> None:
        """Take `gpus` GPUs off [start, start + duration), duration > 0."""
        ks = self._breakpoint(start)
        ke = self._breakpoint(start + duration)
        self.free[ks:ke] -= gpus
        if self.free[ks:ke].min(initial=0) < 0:
            raise AssertionError("FreeProfile.place: capacity exceeded (caller bug)")

    def _breakpoint(self, t: float) -> int:
        """Index of a segment starting exactly at t (splitting the one containing t)."""
        k = int(self.times.searchsorted(t, side="left"))
        if k == len(self.times) or self.times[k] != t:
            self.times = np.concatenate((self.times[:k], (t,), self.times[k:]))
            self.free = np.concatenate((self.free[:k], self.free[k - 1 : k], self.free[k:]))
        return k


def list_schedule(
    now: float,
    num_gpus: int,
    running: Sequence[RunningTask],
    order: Sequence[WaitingTask],
    head_of_line: bool = False,
    profile: FreeProfile | None = None,
) -> dict[str, float]:
    """Serial schedule generation: each task, in `order`, at its earliest feasible start.

    `head_of_line`: a task may not start before the previous one in `order` (a FIFO queue).
    A given `profile` is used (and consumed) instead of one built from `running`.

    The same starts as `FreeProfile.earliest_start` then `place` per task, on plain lists: a
    task scans the profile from its earliest start only until a window fits, where the numpy
    methods pay a dozen array calls per task (3x slower on the Philly replay's queues).
    """
    prof = profile if profile is not None else FreeProfile(now, num_gpus, running)
    T: list[float] = prof.times.tolist()
    F: list[int] = prof.free.tolist()
    starts: dict[str, float] = {}
    floor = now
    for w in order:
        g, d = w.gpus, w.duration
        nb = floor if head_of_line else now
        k = max(0, bisect_right(T, nb) - 1)
        n = len(T)
        while True:  # the first segment from k with >= g free whose run of such segments holds d
            while F[k] < g:  # the last segment has every GPU free: the scan ends there
                k += 1
            s = T[k] if T[k] > nb else nb
            e = s + d
            j = k + 1
            while j < n and T[j] < e and F[j] >= g:
                j += 1
            if j == n or T[j] >= e:
                break
            k = j  # segment j blocks the window: search on from it
        if T[k] != s:  # split at the start
            k += 1
            T.insert(k, s)
            F.insert(k, F[k - 1])
        j = bisect_left(T, e, k)
        if j == len(T) or T[j] != e:  # split at the end
            T.insert(j, e)
            F.insert(j, F[j - 1])
        for x in range(k, j):  # every segment of the window had >= g free (the scan above)
            F[x] -= g
        starts[w.task_id] = s
        if head_of_line:
            floor = s
    prof.times = np.asarray(T, dtype=float)
    prof.free = np.asarray(F, dtype=np.int64)
    return starts


def fifo_order(waiting: Sequence[WaitingTask]) -> list[WaitingTask]:
    return sorted(waiting, key=lambda w: (w.arrival, w.task_id))


def sjf_order(waiting: Sequence[WaitingTask]) -> list[WaitingTask]:
    return sorted(waiting, key=lambda w: (w.duration, w.arrival, w.task_id))


def lpt_order(waiting: Sequence[WaitingTask]) -> list[WaitingTask]:
    """Longest first: the classic list-scheduling order for makespan."""
    return sorted(waiting, key=lambda w: (-w.duration, w.arrival, w.task_id))


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


def makespan_of(now: float, running: Sequence[RunningTask], waiting: Sequence[WaitingTask], starts: dict[str, float]) -> float:
    ends = [now] + [now + r.remaining for r in running] + [starts[w.task_id] + w.duration for w in waiting]
    return max(ends)


def lower_bound(now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]) -> float:
    """Cheap absolute lower bound on any plan's makespan.

    max of: the last running end; for each waiting task, the first time enough GPUs are free
    with only running tasks placed, plus its duration; and `now` + total GPU-seconds still owed
    divided by num_gpus (the area bound).
    """
    prof = FreeProfile(now, num_gpus, running)
    lb = float(prof.times[-1])
    for g in sorted({w.gpus for w in waiting}):
        k = int(np.flatnonzero(prof.free >= g)[0])
        longest = max(w.duration for w in waiting if w.gpus == g)
        lb = max(lb, float(prof.times[k]) + longest)
    area = sum(len(r.gpus) * r.remaining for r in running) + sum(w.gpus * w.duration for w in waiting)
    # shave float noise: the sum above and a schedule's end times round differently
    return max(lb, now + area / num_gpus * (1.0 - 1e-12))


def make_plan(
    now: float,
    running: Sequence[RunningTask],
    waiting: Sequence[WaitingTask],
    starts: dict[str, float],
    status: PlanStatus,
    t0: float,
    lb: float,
    note: str = "",
) -> Plan:
    """Package starts into a Plan (assignments sorted by start, then task_id)."""
    assignments = tuple(
        sorted((Assignment(w.task_id, starts[w.task_id], w.gpus) for w in waiting), key=lambda a: (a.start, a.task_id))
    )
    return Plan(
        assignments=assignments,
        makespan=makespan_of(now, running, waiting, starts),
        status=status,
        solve_s=time.perf_counter() - t0,  # reporting only; never feeds a decision
        lower_bound=lb,
        note=note,
        now=now,
    )


class ListScheduler(InterTaskScheduler):
    """A greedy plan by a priority rule (fifo.py, sjf.py): `schedule` gives the starts."""

    def schedule(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> dict[str, float]:
        raise NotImplementedError

    def plan(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> Plan:
        t0 = time.perf_counter()
        check_inputs(now, num_gpus, running, waiting)
        starts = self.schedule(now, num_gpus, running, waiting)
        return make_plan(now, running, waiting, starts, "greedy", t0, lower_bound(now, num_gpus, running, waiting))
