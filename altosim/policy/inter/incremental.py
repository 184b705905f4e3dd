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
- a task ends earlier or later than planned (early exit, a wrong prediction), a planned start
  finds its GPUs busy (unless a task planned to end by then has yet to report it: `postpone`),
  or the caller says a running task's predicted end moved (`moved`): the plan's times no longer
  hold (`exact` goes False) but its *order* does. Until the next full plan, freed GPUs are
  backfilled from the kept order by EASY backfilling (`next_starts`): the first waiting task in
  plan order starts when it fits; when it does not, a later one (at most `scan` looked at) may
  start now if it fits and either ends, as predicted, before the head's shadow time (the
  earliest time enough GPUs free up for the head, from running tasks' predicted ends) or uses
  only GPUs the head will not need then. Arrivals go after every planned task, by arrival;
- every such change but a moved prediction (an arrival, an off-plan end, a late start) counts:
  once more than max(`min_new`, `resolve_share` x the queue planned in the last full plan) have
  come since it, the next event re-plans in full. So a full plan, O(n log n) or more, comes at
  most every `resolve_share` x n changes, and an event in between costs O(log n + scan +
  running tasks) (amortized O(log n) per event beyond that);
- a task the plan did not hold started, or the caller says so (`invalidate`): the next event
  re-plans in full.

With nothing material changed, the starts it gives are exactly the kept plan's (so with exact
durations and no arrivals a replay starts every task when the first plan said). Every decision
here depends only on the events (their times, order and the predictions handed in), never on a
clock, so replays reproduce it. Pure stdlib and numpy; the Controller owns when to ask.
"""

from __future__ import annotations

import heapq
import math
from typing import Sequence

import numpy as np

from altosim.policy.inter.base import FreeProfile, Plan, RunningTask, WaitingTask


class PlanCache:
    """The last full plan, kept valid (exact, or as an order to backfill from) under the events
    that do not change it materially."""

    def __init__(self, resolve_share: float = 0.1, tol_s: float = 1e-6, min_new: int = 8, scan: int = 64) -> None:
        if not 0 <= resolve_share <= 1:
            raise ValueError(f"resolve_share must be in [0, 1], got {resolve_share!r}")
        if not tol_s >= 0:
            raise ValueError(f"tol_s must be >= 0, got {tol_s!r}")
        if scan < 1:
            raise ValueError(f"scan must be >= 1, got {scan!r}")
        self.resolve_share = resolve_share
        self.min_new = min_new  # changes a short queue may take before a full plan (those are cheap anyway)
        self.tol_s = tol_s
        self.scan = scan  # waiting tasks behind a blocked head looked at per backfill
        self.valid = False
        self.exact = False  # the plan's start times still hold (else only its order)
        self.profile: FreeProfile | None = None
        self.heap: list[tuple[float, int, str]] = []  # (planned start, seq, task id) of planned, not started tasks
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}  # running or planned task -> its planned end
        self.size: dict[str, tuple[int, float]] = {}  # planned task -> (gpus, predicted duration)
        self.run: dict[str, tuple[float, int]] = {}  # running task -> (predicted end, gpus)
        self.seq = 0
        self.new_allowed = 0.0
        self.new = 0  # material changes since the last full plan (arrivals included)

    def keep(self, plan: Plan, now: float, num_gpus: int, running: Sequence[RunningTask],
             waiting: Sequence[WaitingTask]) -> None:
        """Remember a full plan made at `now` for these running and waiting tasks."""
        dur = {w.task_id: w.duration for w in waiting}
        self.start = {a.task_id: a.start for a in plan.assignments}
        self.size = {a.task_id: (a.gpus, dur[a.task_id]) for a in plan.assignments}
        self.end = {r.task_id: now + r.remaining for r in running}
        self.end.update((t, s + dur[t]) for t, s in self.start.items())
        self.run = {r.task_id: (now + r.remaining, len(r.gpus)) for r in running}
        self.heap = [(s, 0, t) for t, s in self.start.items()]
        heapq.heapify(self.heap)
        self.seq = 0
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
        self.valid = self.exact = True

    def invalidate(self) -> None:
        self.valid = False

    def _change(self) -> None:
        """One material change: the times no longer hold; too many since the last full plan: stale."""
        self.exact = False
        self.new += 1
        if self.new > self.new_allowed:
            self.valid = False

    def arrived(self, now: float, task: WaitingTask) -> None:
        """Place a new waiting task after everything planned (or mark the plan stale)."""
        if not self.valid or self.profile is None:
            return
        self.new += 1
        if self.new > self.new_allowed:
            self.valid = False
            return
        self.size[task.task_id] = (task.gpus, task.duration)
        self.seq += 1
        if not self.exact:  # only the order holds: after everything planned, by arrival
            self.start[task.task_id] = math.inf
            heapq.heappush(self.heap, (math.inf, self.seq, task.task_id))
            return
        self._trim(now)
        s = self.profile.earliest_start(task.gpus, task.duration, now)
        self.profile.place(s, task.duration, task.gpus)
        self.start[task.task_id] = s
        self.end[task.task_id] = s + task.duration
        heapq.heappush(self.heap, (s, self.seq, task.task_id))

    def started(self, task_id: str, now: float | None = None) -> None:
        """A task started; one the plan did not hold (a quick path started it) makes it stale."""
        if self.start.pop(task_id, None) is None:  # a planned task's heap entry is skipped when popped
            self.valid = False
            return
        gpus, dur = self.size.pop(task_id)
        end = self.end.get(task_id, math.inf) if now is None else now + dur
        self.end[task_id] = end
        self.run[task_id] = (end, gpus)

    def finished(self, now: float, task_id: str) -> None:
        """A task ended: the plan's times hold only if it ended when planned."""
        end = self.end.pop(task_id, None)
        self.run.pop(task_id, None)
        if end is None:
            self.valid = False
        elif abs(end - now) > self.tol_s + 1e-9 * abs(end):
            self._change()

    def moved(self, task_id: str, end: float) -> None:
        """A running task's predicted end moved (a cut): backfill with the new end. Not counted
        toward a full re-plan (early exit moves every running task's end several times; the
        backfill's shadow times follow the new ends)."""
        if task_id in self.run:
            self.run[task_id] = (end, self.run[task_id][1])
            self.end[task_id] = end
        self.exact = False

    def due(self, now: float) -> list[str] | None:
        """Planned tasks whose start <= now, in start order; None when the plan's times no
        longer hold (see `next_starts`) or a full plan is needed."""
        if not (self.valid and self.exact):
            return None
        out: list[str] = []
        heap = self.heap
        while heap and heap[0][0] <= now + self.tol_s:
            s, _, t = heapq.heappop(heap)
            if self.start.get(t) == s:
                out.append(t)
        return out

    def next_starts(self, now: float, free: int) -> list[str] | None:
        """What starts now on `free` GPUs: the exact plan's due tasks, or, once its times no
        longer hold, EASY backfilling in plan order (module docstring); None: plan in full."""
        if not self.valid:
            return None
        if self.exact:
            return self.due(now)
        out: list[str] = []
        heap, kept = self.heap, []
        shadow, extra, looked = math.inf, 0, 0
        blocked = False
        while heap and free > 0 and looked < self.scan:
            s, q, t = heapq.heappop(heap)
            if self.start.get(t) != s:
                continue  # started already (a stale entry)
            g, d = self.size[t]
            if not blocked:
                if g <= free:
                    out.append(t)
                    free -= g
                    continue
                blocked = True
                shadow, extra = self._shadow(now, free, g)
                kept.append((s, q, t))
                continue
            looked += 1
            if g <= free and (now + d <= shadow or g <= extra):
                out.append(t)
                free -= g
                if now + d > shadow:
                    extra -= g
            else:
                kept.append((s, q, t))
        for e in kept:
            heapq.heappush(heap, e)
        return out

    def _shadow(self, now: float, free: int, gpus: int) -> tuple[float, int]:
        """When `gpus` GPUs are free, from running tasks' predicted ends (an end already past
        counts as now), and how many more than `gpus` are free then."""
        for end, g in sorted((max(e, now), g) for e, g in self.run.values()):
            free += g
            if free >= gpus:
                return end, free - gpus
        return math.inf, 0  # the predictions never free enough: backfill only what fits now

    def postpone(self, now: float, task_ids: Sequence[str], running: Sequence[str]) -> None:
        """Due tasks that found their GPUs busy: fine while a running task that the plan ends
        by `now` has not reported its end yet (simultaneous ends arrive one by one): they stay
        due; otherwise the plan's times no longer hold (a material change)."""
        for t in task_ids:
            heapq.heappush(self.heap, (self.start[t], 0, t))
        if not any(self.end.get(t, math.inf) <= now + self.tol_s + 1e-9 * abs(now) for t in running):
            self._change()

    def _trim(self, now: float) -> None:
        """Drop profile segments that ended before `now` (keeps searches short)."""
        prof = self.profile
        k = int(np.searchsorted(prof.times, now, side="right")) - 1
        if k > 0:
            prof.times, prof.free = prof.times[k:].copy(), prof.free[k:].copy()
            prof.times[0] = max(prof.times[0], now)


__all__ = ["PlanCache"]
