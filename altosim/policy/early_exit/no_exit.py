"""The no-early-exit baseline: every job runs its full budget (LoRAFusion-style fused, no exit)."""

from __future__ import annotations

from typing import ClassVar

from altosim.policy.early_exit.base import CONTINUE, EarlyExitPolicy, Verdict
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec


@EARLY_EXIT.register("none")
class NoExit(EarlyExitPolicy):
    """Never stops a job and has no cut (NaN jobs are left to the backend's JobFailed)."""

    name: ClassVar[str] = "none"
    reads_reports: ClassVar[bool] = False

    def judge(self, hist: JobHistory, i: int, task: TaskSpec) -> Verdict:
        return CONTINUE
