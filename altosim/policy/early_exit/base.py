"""The early-exit contract the Controller calls, plus the small helpers every policy shares.

A policy is one object per task. The Controller calls `on_report` once per StepReport (the job's
history already holds it) and acts on the returned `Verdict`; policies with a cohort cut also
name a warm-up step (`warmup_steps`) and, once every job of the task is there, pick the
survivors (`select`). Decisions depend only on the reports, in order: no clock, no randomness.

Shared conventions (all policies):
- *eval index*: report at step s of job j has index ceil(s / task.eval_every_steps(j)), 1-based
  like Ray Tune's `training_iteration`. Jobs evaluate at equal sample counts, so index k means
  "about k * eval_every_samples samples seen" for every job, whatever its batch size.
- A policy folds over the reports it has not seen yet; asked again with no new report, it
  returns its previous verdict, and once it said stop it keeps saying the same stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from altosim.policy.types import JobHistory, JobSpec, StopReason, TaskSpec


@dataclass(frozen=True)
class Verdict:
    """What to do with a job after one report. `restore_best`: keep its best-val snapshot."""

    stop: bool
    reason: StopReason | None = None
    restore_best: bool = False


CONTINUE = Verdict(False)
DIVERGING = Verdict(True, "diverging")
PRUNED = Verdict(True, "pruned")


@dataclass
class EarlyExitPolicy:
    """Base class: memoizes verdicts per job and folds `judge` over new reports.

    Subclasses are dataclasses whose init fields are their parameters (see `params`), and
    implement `judge(hist, i, cohort, task)` for report i of `hist`.
    """

    name: ClassVar[str] = ""  # the registry name; build_early_exit(p.name, p.params()) rebuilds p
    # False: the policy never looks at intermediate reports, so a backend may report a job only
    # at its last step (the simulator uses this to replay huge traces without early exit).
    reads_reports: ClassVar[bool] = True
    _seen: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _last: dict[str, Verdict] = field(default_factory=dict, init=False, repr=False, compare=False)

    def on_report(self, hist: JobHistory, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        job_id = hist.job.job_id
        verdict = self._last.get(job_id, CONTINUE)
        for i in range(self._seen.get(job_id, 0), len(hist.steps)):
            if verdict.stop:
                break
            verdict = self.judge(hist, i, cohort, task)
            self._seen[job_id] = i + 1
        self._last[job_id] = verdict
        return verdict

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        raise NotImplementedError

    def warmup_steps(self, job: JobSpec, task: TaskSpec) -> int | None:
        """The step where this job waits for the cohort cut; None: this policy has none."""
        return None

    def n_cuts(self) -> int:
        """How many cohort cuts (rungs) the policy makes; cut 0 is at `warmup_steps`."""
        return 1

    def cut_steps(self, job: JobSpec, task: TaskSpec, cut: int) -> int | None:
        """The step where this job waits for cut number `cut` (0-based); None: no such cut."""
        return self.warmup_steps(job, task) if cut == 0 else None

    def holds_at_gate(self) -> bool:
        """True: the Controller suspends a job at its warm-up gate until the cohort cut, so no
        job trains past its gate before the cut (jobs are compared at equal samples)."""
        return False

    def expected_work_fraction(self) -> float:
        """A prior on the share of a task's samples this policy lets train (1.0: no savings).

        The Controller plans waiting tasks with it until finished tasks show the real share.
        """
        return 1.0

    def select(self, warmed: Mapping[str, JobHistory], task: TaskSpec) -> list[str]:
        """Job ids to keep at a cut (`warmed`: the live jobs there); without a cohort cut, all."""
        return sorted(warmed)

    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this policy (for logs and saved configs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


# ---------------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------------


def eval_index(task: TaskSpec, job: JobSpec, step: int) -> int:
    """1-based evaluation index of `step` (the last, possibly partial, interval rounds up)."""
    return math.ceil(step / task.eval_every_steps(job))


def n_evals(task: TaskSpec, job: JobSpec) -> int:
    """How many evaluations a job makes if it runs to the end."""
    return eval_index(task, job, task.total_steps(job))


def nominal_evals(task: TaskSpec) -> float:
    """Evaluations per job by the sample budget (samples_per_job / eval interval in samples);
    the same for every job of a task, unlike n_evals, which step rounding perturbs."""
    every = task.eval_every_samples or max(1, task.samples_per_job // 100)
    return task.samples_per_job / every


def bad_loss(hist: JobHistory, i: int) -> bool:
    """Report i carries a NaN/inf train or val loss: the job's weights are gone."""
    v = hist.val[i]
    return not math.isfinite(hist.train[i]) or (v is not None and not math.isfinite(v))


def latest_val(hist: JobHistory) -> float:
    """The most recent reported val loss; NaN if none yet."""
    for v in reversed(hist.val):
        if v is not None:
            return v
    return math.nan


def rank_key(hist: JobHistory) -> tuple[bool, float, str]:
    """Sort key: finite latest val ascending, NaN/inf/missing last, ties by job id."""
    v = latest_val(hist)
    ok = math.isfinite(v)
    return (not ok, v if ok else 0.0, hist.job.job_id)


def lsq_slope(ys: list[float]) -> float:
    """Least-squares slope of ys against x = 0..n-1 (per evaluation).

    Written as a sum over symmetric pairs, sum_i (i - xbar)(y_i - y_{n-1-i}) / Sxx, which is
    the usual slope but keeps its sign exact in floating point: a non-increasing series never
    gets a positive slope from rounding.
    """
    n = len(ys)
    xbar = (n - 1) / 2
    sxx = n * (n * n - 1) / 12
    num = sum((i - xbar) * (ys[i] - ys[n - 1 - i]) for i in range(n // 2))
    return num / sxx


def check(owner: str, name: str, value: Any, *, integer: bool = False, lo: float | None = None,
          hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
          allow_inf: bool = False, optional: bool = False) -> None:
    """Validate one numeric parameter; raise a one-line ValueError naming it."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"{owner}: parameter {name!r} must be {kind}, got {value!r}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{owner}: parameter {name!r} must be finite, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{owner}: parameter {name!r} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{owner}: parameter {name!r} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
