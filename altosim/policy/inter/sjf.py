"""Shortest job first: greedy list scheduling by worst-case duration.

Tasks are placed shortest first (ties by arrival, then task_id), each at the earliest time
enough GPUs are free for its whole duration; no head-of-line blocking, so a later task may
fill a hole before an earlier (longer or wider) one.
"""

from __future__ import annotations

import time
from typing import Sequence

from altosim.policy.inter.base import (
    InterTaskScheduler,
    Plan,
    RunningTask,
    WaitingTask,
    check_inputs,
    list_schedule,
    lower_bound,
    make_plan,
    sjf_order,
)
from altosim.policy.registry import INTER_TASK


@INTER_TASK.register("sjf")
class SjfScheduler(InterTaskScheduler):
    """Shortest duration first, earliest feasible start for each."""

    name = "sjf"

    def plan(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> Plan:
        t0 = time.perf_counter()
        check_inputs(now, num_gpus, running, waiting)
        starts = list_schedule(now, num_gpus, running, sjf_order(waiting))
        return make_plan(now, running, waiting, starts, "greedy", t0, lower_bound(now, num_gpus, running, waiting))
