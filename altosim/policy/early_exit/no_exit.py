"""The no-early-exit baseline: every job runs its full budget (LoRAFusion-style fused, no exit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from altosim.policy.early_exit.base import CONTINUE, EarlyExitPolicy, Verdict
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec


@EARLY_EXIT.register("none")
@dataclass
class NoExit(EarlyExitPolicy):
    """Never stops a job and has no warm-up gate (NaN jobs are left to the backend's JobFailed)."""

    name: ClassVar[str] = "none"
    reads_reports: ClassVar[bool] = False

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        return CONTINUE
