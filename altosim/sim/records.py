"""What the SimPy backend keeps per job, task and executor, and what a simulation returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from altosim.policy.types import JobSpec, TaskSpec


class Curve(Protocol):
    """What the simulator reads from a LossTrace curve (progress fraction f in [0, 1])."""

    def train_mean(self, f0: float, f1: float) -> float: ...
    def val_at(self, f: float) -> float: ...
    def metric_at(self, f: float) -> float | None: ...


@dataclass
class JobRun:
    """A job's place in its executor: steps done and where its last report left off."""

    job: JobSpec
    total: int
    every: int
    step: int = 0
    reported_frac: float = 0.0


@dataclass
class JobOutcome:
    task_id: str
    job_id: str
    status: str  # finished | stopped reason
    steps: int
    samples: int
    end: float
    best_val: float | None
    restore_best: bool = False


@dataclass
class TaskOutcome:
    task_id: str
    arrival: float
    gpus: int
    start: float | None = None
    finish: float | None = None
    gpu_ids: tuple[int, ...] = ()
    best_job: str | None = None
    best_val: float | None = None
    best_found_at: float | None = None


@dataclass
class Executor:
    task: TaskSpec
    gpus: tuple[int, ...]
    group: dict[str, JobRun] = field(default_factory=dict)
    parked: dict[str, JobRun] = field(default_factory=dict)
    done: bool = False
    wake: simpy.Event | None = None
    jobs: dict[str, JobSpec] = field(init=False)  # the task's jobs by id (TaskSpec.job scans them)

    def __post_init__(self) -> None:
        self.jobs = {j.job_id: j for j in self.task.jobs}


@dataclass
class SimResult:
    tasks: dict[str, TaskOutcome]
    jobs: dict[str, JobOutcome]
    log: list[dict[str, Any]]
    busy_gpu_s: float
    samples_trained: int
    samples_full: int
    num_gpus: int
    makespan: float
    sim_events: int
    gantt: list[tuple[str, int, float, float]]  # (task, gpu, start, end)
    plans: list[dict[str, Any]]
