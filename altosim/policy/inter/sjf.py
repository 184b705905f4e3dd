"""Shortest job first: greedy list scheduling by worst-case duration.

Tasks are placed shortest first (ties by arrival, then task_id), each at the earliest time
enough GPUs are free for its whole duration; no head-of-line blocking, so a later task may
fill a hole before an earlier (longer or wider) one, but never delay an earlier one's start
(conservative backfilling). Long queues: the first `reserve` tasks are placed that way, the
rest event by event around them (`fast.reserve_then_fill`), so a plan costs O(n log n) beyond
the reserved head instead of O(n^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from altosim.policy.inter.base import ListScheduler, RunningTask, WaitingTask, sjf_order
from altosim.policy.inter.fast import reserve_then_fill
from altosim.policy.registry import INTER_TASK

RESERVE = 500  # tasks placed serially by default (cpsat's objective="completion" takes this plan as a candidate)


@INTER_TASK.register("sjf")
@dataclass
class SjfScheduler(ListScheduler):
    """Shortest duration first, earliest feasible start for each of the first `reserve`."""

    reserve: int = RESERVE

    name = "sjf"

    def __post_init__(self) -> None:
        if self.reserve < 1:
            raise ValueError(f"reserve must be >= 1, got {self.reserve!r}")

    def schedule(
        self, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
    ) -> dict[str, float]:
        return reserve_then_fill(now, num_gpus, running, sjf_order(waiting), self.reserve)
