"""Inter-task schedulers: which waiting tasks start when, around the running ones.

Importing this package registers "fifo", "sjf" and "cpsat" in `altosim.policy.registry.INTER_TASK`
(ortools is imported only when a CP-SAT plan is solved).
"""

from altosim.policy.inter.base import (
    Assignment,
    FreeProfile,
    InterTaskScheduler,
    Plan,
    PlanStatus,
    RunningTask,
    WaitingTask,
    list_schedule,
    lower_bound,
)
from altosim.policy.inter.validate import assign_gpu_ids, validate_plan
from altosim.policy.inter.cpsat import CpSatScheduler
from altosim.policy.inter.fifo import FifoScheduler
from altosim.policy.inter.sjf import SjfScheduler

__all__ = [
    "Assignment",
    "CpSatScheduler",
    "FifoScheduler",
    "FreeProfile",
    "InterTaskScheduler",
    "Plan",
    "PlanStatus",
    "RunningTask",
    "SjfScheduler",
    "WaitingTask",
    "assign_gpu_ids",
    "list_schedule",
    "lower_bound",
    "validate_plan",
]
