"""Toy tasks and curves for simulator/controller tests (no trace files needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from altosim.policy.types import JobSpec, TaskSpec


@dataclass(frozen=True)
class ToyCurve:
    """val = floor + amp * exp(-speed * f) (+ rise after `overfit_at`); diverges when `div`."""

    floor: float
    speed: float = 4.0
    amp: float = 2.0
    div: bool = False
    overfit_at: float | None = None

    def _v(self, f: float) -> float:
        if self.div:
            return self.floor + self.amp * math.exp(3 * f)
        v = self.floor + self.amp * math.exp(-self.speed * f)
        if self.overfit_at is not None and f > self.overfit_at:
            v += 3.0 * (f - self.overfit_at)
        return v

    def train_mean(self, f0: float, f1: float) -> float:
        if self.div:
            return self._v(f1)
        return self.floor * 0.98 + self.amp * math.exp(-self.speed * f1)

    def val_at(self, f: float) -> float:
        return self._v(f)

    def metric_at(self, f: float) -> float | None:
        return 1.0 / (1.0 + self._v(f))


def toy_task(task_id: str, n_jobs: int = 8, gpus: int = 1, arrival: float = 0.0, samples: int = 800,
             model: str = "llama-3.2-1b", batches=(1, 2, 4, 8)) -> TaskSpec:
    jobs = tuple(
        JobSpec(f"{task_id}/j{i:03d}", task_id, lr=1e-4 * (1 + i), rank=16 * (1 + i % 3),
                batch_size=batches[i % len(batches)], seed=i)
        for i in range(n_jobs)
    )
    return TaskSpec(task_id, arrival, model, "toy", gpus, jobs, samples_per_job=samples, seq_len=512)


def toy_curve(job: JobSpec) -> ToyCurve:
    i = int(job.job_id.rsplit("j", 1)[1])
    if i % 7 == 6:
        return ToyCurve(1.0, div=True)
    return ToyCurve(floor=1.0 + 0.05 * ((i * 37) % 11), speed=2.0 + (i % 4))
