"""What a replay of a real run charges besides the training steps: the runtime's host work.

The runtime (altoruntime/backend.py) is one host thread per task: validation after a step's
reports, a new step shape's compiles before a run of steps, and every action (start, admit, stop,
snapshot, finish) hold up its next step. `Simulator(costs=RuntimeCosts(...))` charges them; a plain
simulation charges none. `charged` sums the simulated seconds by what they stand for (the run's
summary.csv phases: step, validate, new_shape, snapshot, job_finished and the action kinds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from altosim.policy.types import Action, JobSpec, TaskSpec

if TYPE_CHECKING:
    from altosim.cost import HostOverheads

JobsCost = Callable[[TaskSpec, list[JobSpec]], float]


@dataclass
class RuntimeCosts:
    """`eval_time(task, jobs)`: validating the jobs that report after a step (after the reports,
    which the runtime stamps with the time the step ended); `before_steps(task, jobs)`: time before
    each run of steps (a task's startup, autotuning at a new shape); `overheads`: the actions' host
    seconds, run inline by the runtime, so they delay the task's next step."""

    eval_time: JobsCost | None = None
    before_steps: JobsCost | None = None
    overheads: HostOverheads | None = None
    charged: dict[str, float] = field(default_factory=dict)
    debt: float = 0.0  # host seconds of actions not yet charged to a step

    def charge(self, what: str, seconds: float) -> float:
        self.charged[what] = self.charged.get(what, 0.0) + seconds
        return seconds

    def action(self, model: str, a: Action) -> None:
        """An action carried out on the host (owes its seconds to the next step)."""
        if self.overheads is not None:
            self.debt += self.charge(a.kind, self.overheads.action_s(model, a))

    def job_finished(self, model: str) -> None:
        """A job that ran to its end leaves its slot, as a stop frees it."""
        if self.overheads is not None:
            self.debt += self.charge("job_finished", self.overheads.stop_s(model))

    def pay_debt(self, scale: float) -> float:
        """The owed host seconds (x `scale`), now charged; the debt is cleared."""
        owed, self.debt = self.debt * scale, 0.0
        return owed
