"""Keep the last plan while nothing material changed: incremental re-planning for long queues.

A full plan costs O(n log n) or more in the queue length n; re-planning on every arrival and
completion made replays of long traces quadratic. `PlanCache` keeps the last full plan (its
start times and the free-GPU profile of running and planned tasks) and answers "what starts
now" from it while it still holds:

- a task ends when the plan said (within `tol_s` plus float noise): the profile is still exact;
- an arrival is placed at its earliest feasible start in the kept profile, after everything
  planned (no planned start moves), until `resolve_share` of the queue planned in the last full
  plan (at least `min_new` tasks) has arrived since; then the next event re-plans in full (amortized O(log n) per event
  beyond that);
- anything else is material and the next event re-plans in full: a task ends earlier or later
  than planned (early exit, a wrong prediction), a planned start finds its GPUs busy (unless a
  task planned to end by then has yet to report it: `postpone`), the caller
  says a prediction moved (`invalidate`).

With nothing material changed, the starts it gives are exactly the kept plan's (so with exact
durations and no arrivals a replay starts every task when the first plan said). Pure stdlib and
numpy; the Controller owns when to ask.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

from altosim.policy.inter.base import FreeProfile, Plan, RunningTask, WaitingTask


class PlanCache:
    """The last full plan, kept valid under the events that do not change it."""

    def __init__(self, resolve_share: float = 0.1, tol_s: float = 1e-6, min_new: int = 8) -> None:
        if not 0 <= resolve_share <= 1:
            raise ValueError(f"resolve_share must be in [0, 1], got {resolve_share!r}")
        if not tol_s >= 0:
            raise ValueError(f"tol_s must be >= 0, got {tol_s!r}")
        self.resolve_share = resolve_share
        self.min_new = min_new  # arrivals a short queue may take before a full plan (those are cheap anyway)
        self.tol_s = tol_s
        self.valid = False
        self.profile: FreeProfile | None = None
        self.heap: list[tuple[float, str]] = []  # (planned start, task id) of planned, not started tasks
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}  # running or planned task -> its planned end
        self.new_allowed = 0.0
        self.new = 0

    def keep(self, plan: Plan, now: float, num_gpus: int, running: Sequence[RunningTask],
             waiting: Sequence[WaitingTask]) -> None:
        """Remember a full plan made at `now` for these running and waiting tasks."""
        dur = {w.task_id: w.duration for w in waiting}
        self.start = {a.task_id: a.start for a in plan.assignments}
        self.end = {r.task_id: now + r.remaining for r in running}
        self.end.update((t, s + dur[t]) for t, s in self.start.items())
        self.heap = [(s, t) for t, s in self.start.items()]
        heapq.heapify(self.heap)
        # profile of running and planned tasks in one vectorized pass (no O(n) split per task)
        pts = [(now + r.remaining, len(r.gpus)) for r in running if r.remaining > 0 and r.gpus]
        pts += [(s, -g) for s, g in ((a.start, a.gpus) for a in plan.assignments)]
        pts += [(a.start + dur[a.task_id], a.gpus) for a in plan.assignments]
        busy0 = sum(len(r.gpus) for r in running if r.remaining > 0 and r.gpus)
        if pts:
            t = np.array([p[0] for p in pts], dtype=float)
            d = np.array([p[1] for p in pts], dtype=np.int64)
            times, inv = np.unique(np.maximum(t, now), return_inverse=True)
            delta = np.zeros(len(times), dtype=np.int64)
            np.add.at(delta, inv, d)
            free = num_gpus - busy0 + np.cumsum(delta)
            if times[0] > now:  # nothing starts or ends at `now`: the first segment is as now
                times = np.concatenate(([now], times))
                free = np.concatenate(([num_gpus - busy0], free))
        else:
            times, free = np.array([now], dtype=float), np.array([num_gpus], dtype=np.int64)
        prof = FreeProfile(now, num_gpus, ())
        prof.times, prof.free = times, free
        if prof.free.min() < 0:
            raise AssertionError("PlanCache.keep: the plan exceeds the cluster (caller bug)")
        self.profile = prof
        self.new, self.new_allowed = 0, max(self.resolve_share * len(waiting), self.min_new)
        self.valid = True

    def invalidate(self) -> None:
        self.valid = False

    def arrived(self, now: float, task: WaitingTask) -> None:
        """Place a new waiting task after everything planned (or mark the plan stale)."""
        if not self.valid or self.profile is None:
            return
        self.new += 1
        if self.new > self.new_allowed:
            self.valid = False
            return
        self._trim(now)
        s = self.profile.earliest_start(task.gpus, task.duration, now)
        self.profile.place(s, task.duration, task.gpus)
        self.start[task.task_id] = s
        self.end[task.task_id] = s + task.duration
        heapq.heappush(self.heap, (s, task.task_id))

    def started(self, task_id: str) -> None:
        """A task started; one the plan did not hold (a quick path started it) makes it stale."""
        if self.start.pop(task_id, None) is None:  # a planned task's heap entry is skipped when popped
            self.valid = False

    def finished(self, now: float, task_id: str) -> None:
        """A task ended: the plan holds only if it ended when planned."""
        end = self.end.pop(task_id, None)
        if end is None or abs(end - now) > self.tol_s + 1e-9 * abs(end):
            self.valid = False

    def due(self, now: float) -> list[str] | None:
        """Planned tasks whose start <= now, in start order; None when a full plan is needed."""
        if not self.valid:
            return None
        out: list[str] = []
        heap = self.heap
        while heap and heap[0][0] <= now + self.tol_s:
            s, t = heapq.heappop(heap)
            if self.start.get(t) == s:
                out.append(t)
        return out

    def postpone(self, now: float, task_ids: Sequence[str], running: Sequence[str]) -> None:
        """Due tasks that found their GPUs busy: fine while a running task that the plan ends
        by `now` has not reported its end yet (simultaneous ends arrive one by one): they stay
        due; otherwise the plan is stale."""
        if any(self.end.get(t, float("inf")) <= now + self.tol_s + 1e-9 * abs(now) for t in running):
            for t in task_ids:
                heapq.heappush(self.heap, (self.start[t], t))
        else:
            self.valid = False

    def _trim(self, now: float) -> None:
        """Drop profile segments that ended before `now` (keeps searches short)."""
        prof = self.profile
        k = int(np.searchsorted(prof.times, now, side="right")) - 1
        if k > 0:
            prof.times, prof.free = prof.times[k:].copy(), prof.free[k:].copy()
            prof.times[0] = max(prof.times[0], now)


__all__ = ["PlanCache"]
