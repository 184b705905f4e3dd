"""Event-driven list scheduling: the fast rule for long queues, O(n log n) in the queue length.

`event_schedule` walks time forward from `now` (a parallel schedule generation scheme): at each
instant it starts, highest priority first, every waiting task that fits, then moves to the next
instant GPUs are freed (a running task's release, a base-profile step, a started task's end).
Tasks are kept in one queue per GPU demand, so an instant costs O(distinct demands), not
O(queue); the serial scheme of `list_schedule` searches and splits a numpy profile per task,
O(n) each, which made plans of 10,000 tasks take seconds.

- `head_of_line=True` (FIFO): only the queue's head may start. On a profile that only frees
  GPUs over time (running tasks alone) this is exactly `list_schedule(head_of_line=True)`.
- Otherwise (backfilling by priority): the best-ranked task of any demand that fits starts.
  On a base that only frees GPUs over time this is the non-delay schedule of the priority rule:
  GPUs never idle while a waiting task fits.
- A base profile with placed tasks (CP-SAT's head of the queue) may take GPUs back later; a
  task starts at t only if the base has room for it and everything started from this queue
  still running at t over all of [t, t + duration) (conservative, so always feasible), and
  only the first `scan` tasks of each demand are looked at for one short enough to fit.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from typing import Sequence

from altosim.policy.inter.base import FreeProfile, RunningTask, WaitingTask, list_schedule


def event_schedule(
    now: float,
    num_gpus: int,
    running: Sequence[RunningTask],
    order: Sequence[WaitingTask],
    head_of_line: bool = False,
    profile: FreeProfile | None = None,
    scan: int = 32,
) -> dict[str, float]:
    """Start times for `order` (priority order), each task at an instant where it fits.

    `profile` (not modified) replaces the one built from `running`; it must start at `now`.
    """
    prof = profile if profile is not None else FreeProfile(now, num_gpus, running)
    T: list[float] = prof.times.tolist()
    F: list[int] = prof.free.tolist()
    nT, mono_from = len(T), _monotone_from(F)
    gpus = [w.gpus for w in order]
    dur = [w.duration for w in order]
    queues: dict[int, list[int]] = {}
    for i, g in enumerate(gpus):
        queues.setdefault(0 if head_of_line else g, []).append(i)
    classes = sorted(queues)  # demands with tasks left (one queue of all when head_of_line)
    ptr = dict.fromkeys(classes, 0)
    taken = bytearray(len(order))
    starts: dict[str, float] = {}
    ends: list[tuple[float, int]] = []  # (end, gpus) of tasks started here
    busy, left, t = 0, len(order), now
    k = max(0, bisect_right(T, now) - 1)
    scan = 1 if head_of_line else scan
    while left:
        while ends and ends[0][0] <= t:
            busy -= heapq.heappop(ends)[1]
        while k + 1 < nT and T[k + 1] <= t:
            k += 1
        avail = F[k] - busy
        mono = k >= mono_from  # the base only frees GPUs from here: fitting now is enough
        while avail > 0:
            best = -1
            for c in classes:
                if c > avail:
                    break
                q, p = queues[c], ptr[c]
                while taken[q[p]]:  # a queue in `classes` always has an untaken task
                    p += 1
                ptr[c] = p
                i = q[p]
                if not mono:
                    i = _first_fitting(q, p, scan, taken, gpus, dur, T, F, k, t, busy)
                elif gpus[i] > avail:
                    i = -1
                if i >= 0 and (best < 0 or i < best):
                    best = i
            if best < 0:
                break
            g = gpus[best]
            taken[best] = 1
            starts[order[best].task_id] = t
            busy += g
            avail -= g
            left -= 1
            heapq.heappush(ends, (t + dur[best], g))
            c = 0 if head_of_line else g
            if _exhausted(queues[c], ptr[c], taken):
                classes.remove(c)
        if not left:
            break
        nxt = min(T[k + 1] if k + 1 < nT else math.inf, ends[0][0] if ends else math.inf)
        if nxt == math.inf:
            raise AssertionError("event_schedule: a task fits nowhere (the profile never frees enough GPUs)")
        t = nxt
    return starts


def _exhausted(q: list[int], p: int, taken: bytearray) -> bool:
    """Whether every task of q from p on is taken (then its demand leaves the class list)."""
    return all(taken[i] for i in q[p:]) if taken[q[-1]] else False


def _monotone_from(F: list[int]) -> int:
    """Smallest k such that F[k:] never decreases."""
    k = len(F) - 1
    while k > 0 and F[k - 1] <= F[k]:
        k -= 1
    return k


def _first_fitting(
    q: list[int], p: int, scan: int, taken: bytearray, gpus: list[int], dur: list[float],
    T: list[float], F: list[int], k: int, t: float, busy: int,
) -> int:
    """The first of up to `scan` untaken tasks in q[p:] that fits from t on, or -1.

    The tasks of one queue share a demand g (the FIFO queue looks at its head only); the room
    for g lasts until the first later base step with fewer than g + busy free GPUs."""
    g = gpus[q[p]]  # q[p] is untaken (the caller advanced p)
    if F[k] - busy < g:
        return -1
    room = math.inf
    for j in range(k + 1, len(F)):
        if F[j] - busy < g:
            room = T[j] - t
            break
    seen = 0
    for j in range(p, len(q)):
        i = q[j]
        if taken[i]:
            continue
        if dur[i] <= room:
            return i
        seen += 1
        if seen >= scan:
            break
    return -1



def reserve_then_fill(
    now: float,
    num_gpus: int,
    running: Sequence[RunningTask],
    order: Sequence[WaitingTask],
    reserve: int,
    profile: FreeProfile | None = None,
) -> dict[str, float]:
    """The first `reserve` tasks of `order` by serial list scheduling (each at its earliest
    feasible start: holes are filled, reservations kept), the rest by `event_schedule` around
    them. A queue no longer than `reserve` gets exactly `list_schedule`'s plan; longer ones
    cost O(reserve^2 + n log n) instead of O(n^2). `profile` is consumed (see list_schedule)."""
    prof = profile if profile is not None else FreeProfile(now, num_gpus, running)
    starts = list_schedule(now, num_gpus, running, order[:reserve], profile=prof)
    if len(order) > reserve:
        starts.update(event_schedule(now, num_gpus, running, order[reserve:], profile=prof))
    return starts


__all__ = ["event_schedule", "reserve_then_fill"]
