"""Costs measured from a real run log: the wall time between a task's reports, taken apart.

`alto run` stamps a fused step's StepReports with the time the step's host call returned, then
validates the reported jobs (and snapshots new bests) before the next step. So the time between
two consecutive report stamps of a task (an `Interval`) holds:

    startup   (the first interval only: trainer creation, and the backbone load when not cached)
  + k fused training steps of one group composition
  + the validation of the jobs reported at the earlier stamp (and their best-snapshots)
  + Triton autotuning when a step or an evaluation forward meets a new shape bucket (the kernels'
    autotune key holds the row count rounded to a power of two; cached per process)
  + the jobs that left the group at the earlier stamp (finished or stopped: the trainer moves
    their weights and optimizer state to the host, and restores best snapshots)

`fit_calibration` fits these parts by non-negative least squares over a run's intervals
(`RuntimeCalibration`); `profile_from_run` turns each interval into a CostRecord of the training
step alone (the fitted overheads subtracted, or kept with `overheads="include"`), aggregated by
median per identical key, so the profile-backed CostModel can interpolate it. The step term is
linear, `a + b * adapters + c * samples`, because the runtime is host-bound (kernel launches per
layer and per adapter), which is also the `LinearStepCost` predictor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from statistics import median
from typing import Any, Sequence

import numpy as np

from altosim.fidelity.runlog import RunFolder, timed
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import CostProfile, CostRecord

FEATURES = ("startup", "steps", "steps_x_adapters", "steps_x_samples", "eval_jobs", "eval_calls",
            "new_step_shapes", "new_eval_shapes", "jobs_left")


DONE = {"subtract": "subtracted", "include": "included"}


def p2(n: int) -> int:
    """n rounded up to a power of two (the autotune key's row bucket)."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


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


def run_intervals(run: RunFolder, shape: EvalShape = EvalShape()) -> list[Interval]:
    """Each task's intervals, in log order. Steps are counted as `measured_step_times` counts
    them (a job's step plus the task step at which it joined)."""
    spec = {t.task_id: t for t in run.tasks}
    out: list[Interval] = []
    active: dict[str, set[str]] = defaultdict(set)
    idx: dict[str, int] = {}
    joined: dict[str, int] = {}
    paused: dict[str, int] = {}
    anchor: dict[str, tuple[float, int, int, bool]] = {}  # task -> (time, index, reports there, first)
    last: dict[str, frozenset[str]] = {}  # task -> its previous interval's group
    for now, d in timed(run.trace):
        k, tid, job = d["kind"], d.get("task_id"), d.get("job_id")
        if k == "step_report" and job in joined and tid in anchor:
            i = joined[job] + d["step"]
            t0, i0, n0, first = anchor[tid]
            if now > t0 and i > i0:
                task = spec[tid]
                jobs = tuple(task.job(j) for j in sorted(active[tid]))
                ev = 0 if first else n0
                left = len(last.get(tid, frozenset()) - active[tid])
                last[tid] = frozenset(active[tid])
                out.append(Interval(tid, task.model, t0, now, i - i0, jobs, ev, first, tuple(shape.calls(ev)), left))
                anchor[tid] = (now, i, 1, False)
            elif now == t0:
                anchor[tid] = (t0, i0, n0 + 1, first)
            idx[tid] = max(idx.get(tid, 0), i)
        elif k == "start_task":
            idx[tid] = 0
            anchor[tid] = (now, 0, 0, True)
        elif k == "admit":
            joined[job] = idx.get(tid, 0) - (paused.get(job, 0) if d.get("resume") else 0)
            active[tid].add(job)
        elif k == "suspend" and job in joined:
            paused[job] = idx.get(tid, 0) - joined[job]
            active[tid].discard(job)
        elif k in ("stop", "job_finished", "job_failed"):
            active[tid].discard(job)
    return out


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


def profile_from_run(run: RunFolder, gpu_type: str, cal: RuntimeCalibration | None = None,
                     shape: EvalShape = EvalShape(), overheads: str = "subtract",
                     min_step_ms: float = 1.0) -> CostProfile:
    """A CostProfile of the run's fused training steps: one record per report interval (step_ms =
    its time less the fitted startup, validation and autotune parts, over its steps; with
    `overheads="include"` the plain wall time per step), aggregated by median per identical
    (adapters, mean rank, per-adapter batch, seq_len). The per-adapter batch is the group's mean
    rounded to an integer (CostRecord holds integers); the exact mean is in the note."""
    if overheads not in ("subtract", "include"):
        raise ValueError(f"overheads: expected 'subtract' or 'include', got {overheads!r}")
    ivs = run_intervals(run, shape)
    if not ivs:
        raise ValueError(f"run: {run.folder} has no report intervals to measure")
    if overheads == "subtract" and cal is None:
        cal = fit_calibration(ivs, str(run.folder))
    extra = cal.overheads(ivs) if overheads == "subtract" and cal is not None else np.zeros(len(ivs))
    seq = {t.task_id: t.seq_len for t in run.tasks}
    groups: dict[tuple[str, int, float, int, int], list[float]] = defaultdict(list)
    means: dict[tuple[str, int, float, int, int], list[float]] = defaultdict(list)
    for iv, ov in zip(ivs, extra):
        rows = iv.samples
        rank = round(sum(j.rank * j.batch_size for j in iv.jobs) / rows, 3)
        key = (iv.model, len(iv.jobs), rank, max(1, round(rows / len(iv.jobs))), seq[iv.task_id])
        groups[key].append(max(min_step_ms, 1e3 * (iv.seconds - ov) / iv.steps))
        means[key].append(rows / len(iv.jobs))
    recs = [CostRecord(model=m, gpu_type=gpu_type, adapters=a, mean_rank=r, per_adapter_batch=b, seq_len=s,
                       step_ms=float(median(v)), peak_mem_bytes=0,
                       note=f"median of {len(v)} report intervals; mean per-adapter batch "
                            f"{median(means[(m, a, r, b, s)]):.3g}; overheads {DONE[overheads]}")
            for (m, a, r, b, s), v in sorted(groups.items())]
    return CostProfile(rows=recs, device=run.device, date=date.today().isoformat(), synthetic=False,
                       source=f"measured from alto run log {run.folder} (report intervals, overheads "
                              f"{DONE[overheads]})")


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
    reported jobs with autotuning at new evaluation shapes (`__call__`, RuntimeOrderSimulator's
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


def describe(cal: RuntimeCalibration) -> dict[str, Any]:
    return {"source": cal.source, "intervals": cal.intervals, "fit_median_rel_err": cal.fit_median_rel_err,
            **{f"coef.{k}": v for k, v in cal.coef.items()}}
