"""Step and overhead costs calibrated on a real run's report intervals.

The time between two consecutive report stamps of a task (an `Interval`, read from a run log by
`altosim.fidelity.calibrate.run_intervals`) holds a task's startup (first interval only), k fused
steps of one group, the validation of the jobs reported at the earlier stamp, Triton autotuning
at new shape buckets and the jobs that left the group. `fit_calibration` fits these parts
(FEATURES) by non-negative least squares (`RuntimeCalibration`). The step term is linear,
`a + b * adapters + c * samples`, because the runtime is host-bound: that is `LinearStepCost`;
the rest is charged by `CalibratedOverheads`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from altosim.cost.shapes import ShapeTracker
from altosim.policy.types import JobSpec, TaskSpec

FEATURES = ("startup", "steps", "steps_x_adapters", "steps_x_samples", "eval_jobs", "eval_calls",
            "new_step_shapes", "new_eval_shapes", "jobs_left")


@dataclass(frozen=True)
class EvalShape:
    """How the runtime validates: `val_rows` examples in batches of `val_batch`, jobs fused
    `eval_rows // val_batch` per forward (altoruntime/backend.py `_validate`)."""

    val_rows: int = 0
    val_batch: int = 16
    eval_rows: int = 256

    def calls(self, n_jobs: int) -> list[int]:
        """Jobs per fused evaluation forward, for one pass over the validation set."""
        if n_jobs <= 0 or self.val_rows <= 0:
            return []
        b = min(self.val_batch, self.val_rows)
        per = max(1, self.eval_rows // b)
        one = [min(per, n_jobs - i) for i in range(0, n_jobs, per)]
        return one * math.ceil(self.val_rows / b)


@dataclass(frozen=True)
class Interval:
    """Wall time between two consecutive report stamps of a task (or from its start)."""

    task_id: str
    model: str
    t0: float
    t1: float
    steps: int
    jobs: tuple[JobSpec, ...]  # the group that ran the steps
    eval_jobs: int  # jobs validated at its start (reported at the earlier stamp)
    first: bool  # starts at the task's start (trainer creation inside)
    eval_sizes: tuple[int, ...] = ()  # jobs per evaluation forward
    jobs_left: int = 0  # jobs of the previous interval's group not in this one

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def samples(self) -> int:
        return sum(j.batch_size for j in self.jobs)


def features(intervals: Sequence[Interval]) -> np.ndarray:
    """One row of FEATURES per interval (shape buckets tracked over the whole log)."""
    seen = ShapeTracker()
    rows = []
    for iv in intervals:
        a, s = len(iv.jobs), iv.samples
        rows.append([float(iv.first), iv.steps, iv.steps * a, iv.steps * s, iv.eval_jobs, len(iv.eval_sizes),
                     seen.new_step(iv.model, s), seen.new_evals(iv.model, iv.eval_sizes), iv.jobs_left])
    return np.asarray(rows, dtype=float).reshape(-1, len(FEATURES))


@dataclass(frozen=True)
class RuntimeCalibration:
    """Seconds per unit of each FEATURE, fitted on one run's intervals (non-negative)."""

    coef: dict[str, float]
    intervals: int
    source: str = ""
    fit_median_rel_err: float = math.nan  # on the fit intervals themselves

    def step_s(self, adapters: int, samples: float) -> float:
        """One fused training step of `adapters` adapters and `samples` rows (no overheads)."""
        c = self.coef
        return c["steps"] + c["steps_x_adapters"] * adapters + c["steps_x_samples"] * samples

    def eval_s(self, jobs: int, calls: int) -> float:
        return self.coef["eval_jobs"] * jobs + self.coef["eval_calls"] * calls

    def predict(self, intervals: Sequence[Interval]) -> np.ndarray:
        return features(intervals) @ np.array([self.coef[f] for f in FEATURES])

    def overheads(self, intervals: Sequence[Interval]) -> np.ndarray:
        """Each interval's predicted time outside its training steps."""
        x = features(intervals)
        w = np.array([0.0 if f.startswith("steps") else self.coef[f] for f in FEATURES])
        return x @ w


def fit_calibration(intervals: Sequence[Interval], source: str = "",
                    fixed: dict[str, float] | None = None) -> RuntimeCalibration:
    """Non-negative least squares of the interval times on FEATURES (`fixed`: terms held at a
    value, e.g. {"startup": 0.0}). A feature that never varies in the log gets 0."""
    from scipy.optimize import nnls

    if len(intervals) < 2:
        raise ValueError(f"intervals: need at least 2 report intervals to fit, got {len(intervals)}")
    fixed = dict(fixed or {})
    for k in fixed:
        if k not in FEATURES:
            raise ValueError(f"fixed: unknown term {k!r}; known: {', '.join(FEATURES)}")
    x = features(intervals)
    y = np.array([iv.seconds for iv in intervals])
    free = [i for i, f in enumerate(FEATURES) if f not in fixed]
    y_free = y - x[:, [i for i, f in enumerate(FEATURES) if f in fixed]] @ np.array(
        [fixed[f] for f in FEATURES if f in fixed]) if fixed else y
    sol, _ = nnls(x[:, free], y_free)
    coef = {f: float(fixed[f]) if f in fixed else 0.0 for f in FEATURES}
    for i, v in zip(free, sol):
        coef[FEATURES[i]] = float(v)
    pred = x @ np.array([coef[f] for f in FEATURES])
    err = float(np.median(np.abs(pred - y) / y)) if len(y) else math.nan
    return RuntimeCalibration(coef, len(intervals), source, err)


@dataclass(frozen=True)
class LinearStepCost:
    """Step costs from a calibration: step = a + b * adapters + c * samples (host-bound form)."""

    cal: RuntimeCalibration

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        return self.cal.step_s(len(jobs), sum(j.batch_size for j in jobs))


@dataclass
class CalibratedOverheads:
    """The replay's time outside training steps, from a calibration: a task's startup before its
    first step, autotuning at a new step shape bucket and the jobs that left the group since the
    last run of steps (`before_steps`), and the validation of
    reported jobs with autotuning at new evaluation shapes (`__call__`, RuntimeCosts'
    `eval_time`). Holds the shape buckets seen so far: one instance per replay."""

    cal: RuntimeCalibration
    shape: EvalShape
    seen: ShapeTracker = field(default_factory=ShapeTracker)
    started: set[str] = field(default_factory=set)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)

    def before_steps(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        c = self.cal.coef
        t = 0.0
        if task.task_id not in self.started:
            self.started.add(task.task_id)
            t += c["startup"]
        now = frozenset(j.job_id for j in jobs)
        t += c["jobs_left"] * len(self.groups.get(task.task_id, frozenset()) - now)
        self.groups[task.task_id] = now
        return t + c["new_step_shapes"] * self.seen.new_step(task.model, sum(j.batch_size for j in jobs))

    def __call__(self, task: TaskSpec, jobs: list[JobSpec]) -> float:
        sizes = self.shape.calls(len(jobs))
        return self.cal.eval_s(len(jobs), len(sizes)) + self.cal.coef["new_eval_shapes"] * self.seen.new_evals(
            task.model, sizes)


def describe(cal: RuntimeCalibration) -> dict[str, Any]:
    return {"source": cal.source, "intervals": cal.intervals, "fit_median_rel_err": cal.fit_median_rel_err,
            **{f"coef.{k}": v for k, v in cal.coef.items()}}
