"""What a runtime run did (events, actions, results) and where its host time went, by phase.

Shared by the single-process engine (altoruntime/backend.py), the task runner that steps one task
(altoruntime/task_runner.py) and the Ray engine (altoruntime/cluster/), which sums its workers' phases.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from altosim.policy.types import Action, Event, FinishTask, to_dict


PHASES = ("data", "step", "validate", "snapshot", "policy")  # RunLog.phases, in step order
# timed apart from the phase they happen in: the Controller's actions, by kind (a task's start builds
# its trainer; its finish exports the best adapter), and a job's own finish (its slot freed as a
# stop frees it): what a simulator charges as action costs rather than as step time
ACTION_PHASES = ("start_task", "admit", "suspend", "stop", "finish_task", "job_finished")


@dataclass
class RunLog:
    """What a run did: every event sent and action taken, in order, and each task's result."""

    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    trace: list[Event | Action] = field(default_factory=list)  # both, interleaved in order
    results: dict[str, FinishTask] = field(default_factory=dict)
    exported: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # task -> best adapter's task metric
    job_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> job -> objective value
    objectives: dict[str, str] = field(default_factory=dict)  # task -> objective metric name (not val_loss)
    minimize: dict[str, bool] = field(default_factory=dict)  # task -> the objective's direction
    summary: dict[str, str] = field(default_factory=dict)  # task -> one line naming its best config
    # host wall seconds per phase of the fused steps (PHASES): where a run's time went, without a
    # calibration (step and validate end with a device sync); under the Ray engine, every worker's
    # seconds added up (concurrent workers: more than the wall time)
    phases: dict[str, float] = field(default_factory=dict)
    # (task, start, end) seconds since the run start of each worker's stretch of fused steps (the Ray
    # engine's: concurrent workers' stretches overlap)
    busy: list[tuple[str, float, float]] = field(default_factory=list)
    _inside: float = 0.0  # action seconds since the last add_phase (charged to ACTION_PHASES already)

    def begin_step(self) -> None:
        """Start a step's phases: action time so far (a task's arrival between steps) is no phase's."""
        self._inside = 0.0

    def add_phase(self, name: str, t0: float) -> float:
        """Charge the time since `t0` to phase `name`, less the actions timed inside it; return now
        (the next phase's start)."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - t0 - self._inside
        self._inside = 0.0
        return now

    def add_action(self, name: str, t0: float) -> None:
        """Charge the time since `t0` to action phase `name` (and not to the phase around it)."""
        dt = time.perf_counter() - t0
        self.phases[name] = self.phases.get(name, 0.0) + dt
        self._inside += dt

    def merge_phases(self, phases: dict[str, float]) -> None:
        """Add another log's phase seconds (a worker's) to this one's."""
        for k, v in phases.items():
            self.phases[k] = self.phases.get(k, 0.0) + v

    def write_events(self, path: str | Path) -> None:
        """events.jsonl: one event per line, each followed by the actions it caused."""
        tmp = Path(f"{path}.tmp")
        tmp.write_text("".join(json.dumps(to_dict(e)) + "\n" for e in self.trace))
        tmp.replace(path)
