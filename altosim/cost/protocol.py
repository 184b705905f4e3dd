"""What every step-cost source answers: the seconds of one fused step of a group.

`StepCost` is the one interface the simulator (`altosim.sim.engine`), the fidelity replay and the
worst-case planner read step time through; its implementations are the analytic / profile-backed
`CostModel` (`altosim.cost.model`), the calibrated `LinearStepCost` (`altosim.cost.calibration`) and
the `MeasuredCost` a run log gives (`altosim.cost.measured`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from altosim.policy.types import JobSpec, TaskSpec


@runtime_checkable
class StepCost(Protocol):
    """Seconds of one fused training step of `jobs` (one step each) of `task` on its GPUs."""

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float: ...


@dataclass(frozen=True)
class StepEstimate:
    """Seconds of one step, where it came from, and whether a profile was extrapolated."""

    seconds: float
    extrapolated: bool
    source: str  # "profile" | "analytic"
