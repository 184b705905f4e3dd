"""Shortest job first: greedy list scheduling by worst-case duration.

Tasks are placed shortest first (ties by arrival, then task_id), each at the earliest time
enough GPUs are free for its whole duration; no head-of-line blocking, so a later task may
fill a hole before an earlier (longer or wider) one.
"""

from __future__ import annotations

from typing import Sequence

from altosim.policy.inter.base import ListScheduler, WaitingTask, sjf_order
from altosim.policy.registry import INTER_TASK


@INTER_TASK.register("sjf")
class SjfScheduler(ListScheduler):
    """Shortest duration first, earliest feasible start for each."""

    name = "sjf"

    def order(self, waiting: Sequence[WaitingTask]) -> list[WaitingTask]:
        return sjf_order(waiting)
