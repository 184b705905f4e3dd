"""Forward-backward improvement ("double justification") of a schedule.

A classic, cheap repair for list schedules of cumulative-resource problems: the backward pass
pushes every task as late as it can go without passing the current makespan (latest end
first), the forward pass then pulls every task as early as it can go in the order of those
late starts. Neither pass moves a task past where it was feasible before (a task's old place
stays free for it, because everything placed ahead of it only moved away from it), so the
makespan never grows, and it often shrinks: the compacted CP-SAT plan of a time-limited solve
leaves such slack. Running tasks stay where they are.
"""

from __future__ import annotations

from typing import Sequence

from altosim.policy.inter.base import FreeProfile, RunningTask, WaitingTask, list_schedule, makespan_of


def justify(
    now: float,
    num_gpus: int,
    running: Sequence[RunningTask],
    waiting: Sequence[WaitingTask],
    starts: dict[str, float],
    rounds: int = 2,
) -> dict[str, float]:
    """Return starts whose makespan is <= that of `starts` (same tasks, all >= now)."""
    best = dict(starts)
    best_ms = makespan_of(now, running, waiting, best)
    for _ in range(rounds):
        # backward: latest end first, as late as possible but ending by the makespan
        prof = FreeProfile(now, num_gpus, running)
        late: dict[str, float] = {}
        for w in sorted(waiting, key=lambda w: (-(best[w.task_id] + w.duration), -best[w.task_id], w.task_id)):
            s = prof.latest_start(w.gpus, w.duration, best_ms, now)
            if s is None or s < best[w.task_id] - 1e-9 * max(1.0, abs(best_ms)):
                return best  # cannot happen for a feasible input; keep what we have
            prof.place(s, w.duration, w.gpus)
            late[w.task_id] = s
        # forward: earliest start in the order of the late starts
        order = sorted(waiting, key=lambda w: (late[w.task_id], w.task_id))
        early = list_schedule(now, num_gpus, running, order)
        ms = makespan_of(now, running, waiting, early)
        if ms >= best_ms:
            break
        best, best_ms = early, ms
    return best
