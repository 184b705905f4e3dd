"""Step time as a real run measured it (the `measured` replay of `alto check-fidelity`)."""

from __future__ import annotations

from typing import Sequence

from altosim.policy.types import JobSpec, TaskSpec


class MeasuredCost:
    """Step time of a group as the run measured it; a group the run never ran gets the task's
    mean per-sample time times its samples."""

    def __init__(self, spans: dict[tuple[str, frozenset[str]], tuple[float, int]]) -> None:
        self.spans = spans

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        hit = self.spans.get((task.task_id, frozenset(j.job_id for j in jobs)))
        if hit is not None and hit[1] > 0:
            return hit[0] / hit[1]
        sec = samples = 0.0
        for (tid, comp), (s, n) in self.spans.items():
            if tid == task.task_id and comp:
                sec += s
                samples += n * sum(task.job(j).batch_size for j in comp)
        per = sec / samples if samples else 1.0
        return per * sum(j.batch_size for j in jobs)
