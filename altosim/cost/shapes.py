"""Time a fresh process pays once per new step shape: Triton compiles and autotuning.

The kernels' autotune key holds the row count rounded up to a power of two, and the cache lives
in the process: a (model, power-of-two rows) bucket costs extra the first time a process runs it.
`ShapeTracker` remembers the buckets seen; `NewShapeCost` prices a new one from what `alto
profile`'s points paid on their first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Sequence

from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas.cost import CostProfile


def p2(n: int) -> int:
    """n rounded up to a power of two (the autotune key's row bucket)."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


@dataclass
class ShapeTracker:
    """Shape buckets seen so far in one process (Triton's autotune cache is per process)."""

    steps: set[tuple[str, int]] = field(default_factory=set)
    evals: set[tuple[str, int]] = field(default_factory=set)

    def new_step(self, model: str, samples: int) -> int:
        key = (model.lower(), p2(samples))
        fresh = key not in self.steps
        self.steps.add(key)
        return int(fresh)

    def new_evals(self, model: str, sizes: Sequence[int]) -> int:
        fresh = {(model.lower(), p2(n)) for n in sizes} - self.evals
        self.evals |= fresh
        return len(fresh)


@dataclass
class NewShapeCost:
    """Profile-backed time before a run of steps: a step shape bucket (model, power-of-two samples
    per step) the process has not run yet costs what `alto profile`'s points paid on their first
    step beyond a steady one (first_step_ms - step_ms: Triton compiles and autotuning for a new
    token count), once per replay, as the runtime pays it once per process.

    Which of those first steps: the profile is itself one fresh process meeting new shapes one
    after another, so its k-th point's first step is what the k-th new shape of a fresh process
    costs; the k-th new shape of the replay is charged that (`curve`, in the profile's order: the
    first ~20 s on an H200, cold compiles, then a few seconds, then a few hundred ms), and the
    median once the replay has met more shapes than the profile measured."""

    per_model: dict[str, float]  # model (lower case) -> median seconds per new step shape
    seen: ShapeTracker = field(default_factory=ShapeTracker)
    curve: dict[str, list[float]] = field(default_factory=dict)  # model -> seconds of its k-th new shape

    def before_steps(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        model = task.model.lower()
        if model not in self.per_model or not self.seen.new_step(task.model, sum(j.batch_size for j in jobs)):
            return 0.0
        k = sum(m == model for m, _ in self.seen.steps) - 1  # this is the model's k-th new shape (from 0)
        seq = self.curve.get(model, [])
        return seq[k] if k < len(seq) else self.per_model[model]


def new_shape_cost(profile: CostProfile) -> NewShapeCost | None:
    """NewShapeCost from the rows that kept their first step (None: no row did, an older profile)."""
    extra: dict[str, list[float]] = {}
    for r in profile.rows:  # in the order the profiler measured them
        if r.first_step_ms is not None and r.parallel_degree == 1:
            extra.setdefault(r.model.lower(), []).append(max(0.0, r.first_step_ms - r.step_ms) / 1e3)
    if not extra:
        return None
    return NewShapeCost({m: float(median(v)) for m, v in extra.items()}, curve=extra)
