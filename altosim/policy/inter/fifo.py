"""FIFO: tasks start in arrival order; a task never starts before the one ahead of it.

This is a plain cluster queue with head-of-line blocking: a large task at the head keeps
smaller ones behind it waiting even when they would fit now. Planned event by event
(`fast.event_schedule`, O(n log n)): the same plan as serial list scheduling with
head-of-line blocking, since with starts in queue order the GPUs only free up after each start.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from altosim.policy.inter.base import ListScheduler, RunningTask, WaitingTask, fifo_order
from altosim.policy.inter.fast import event_schedule
from altosim.policy.registry import INTER_TASK


@INTER_TASK.register("fifo")
class FifoScheduler(ListScheduler):
    """Arrival order (ties by task_id), each start >= the previous task's start."""

    name = "fifo"

    def schedule(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> dict[str, float]:
        return event_schedule(now, num_gpus, running, fifo_order(waiting), head_of_line=True)

    def starts_now(self, free: int, waiting: Iterable[WaitingTask]) -> list[str] | None:
        """The queue's head while it fits: exactly the plan's starts at `now` (running tasks
        only free GPUs over time, so a task that fits now fits for its whole duration)."""
        out: list[str] = []
        for w in waiting:  # arrival order (the Controller's queue order), stopped at the first misfit
            if w.gpus > free:
                break
            free -= w.gpus
            out.append(w.task_id)
        return out
