"""The early-exit contract the Controller calls, plus the small helpers every policy shares.

A policy is one object per task and decides two things:
- `judge(hist, i, task)`: report i of one job -> continue or stop (Optuna's `prune`, Ray Tune's
  `on_trial_result`), and
- at each cohort cut (the budget fractions `rungs()`), once every live job has reached it,
  `select(at_rung, task, rung)`: which jobs go on (Ray Tune's `choose_trial_to_run`).
`holds_at_gate()` asks the TaskGroup to keep a job at a rung until the cut, and
`expected_work_fraction()` is a planning prior. The TaskGroup (`task_group.py`) owns everything
else: where a rung lands on a job's eval grid (`gate_step`), who waits, who is stopped.

Decisions depend only on the reports, in order: no clock, no randomness, no I/O. Time is the
*budget fraction*, samples seen / the job's sample budget (`fraction`), never an evaluation
count, so a task that evaluates every 4% of its budget is cut at the same points as one that
evaluates every 1%, within one evaluation.

Parameters are pydantic fields (bounds and descriptions declared once); a policy's internal
state lives in private attributes. `build_early_exit(p.name, p.params())` rebuilds `p`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

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


class EarlyExitPolicy(BaseModel):
    """Base class: its fields are the policy's parameters; `on_report` folds `judge` over the
    reports a job has not been judged on yet and keeps the first stop."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: ClassVar[str] = ""  # the registry name
    # False: the policy never looks at intermediate reports, so a backend may report a job only
    # at its last step (the simulator uses this to replay huge traces without early exit).
    reads_reports: ClassVar[bool] = True
    _seen: dict[str, int] = PrivateAttr(default_factory=dict)
    _last: dict[str, Verdict] = PrivateAttr(default_factory=dict)

    def on_report(self, hist: JobHistory, task: TaskSpec) -> Verdict:
        """The verdict after the job's latest report (a stopped job keeps its stop)."""
        job_id = hist.job.job_id
        # the private attributes' dict read directly: `self._seen` goes through pydantic's
        # __getattr__, which costs more than the rest of this method on the replay's hot path
        private = self.__pydantic_private__
        seen, last = private["_seen"], private["_last"]
        verdict = last.get(job_id, CONTINUE)
        n = len(hist.steps)
        i = seen.get(job_id, 0)
        while i < n and not verdict.stop:
            verdict = self.judge(hist, i, task)
            i += 1
            seen[job_id] = i
        last[job_id] = verdict
        return verdict

    def judge(self, hist: JobHistory, i: int, task: TaskSpec) -> Verdict:
        """Report i of `hist` (its history up to i is known): continue or stop."""
        raise NotImplementedError

    def rungs(self) -> tuple[float, ...]:
        """Budget fractions of the cohort cuts, increasing (empty: no cohort cut)."""
        return ()

    def select(self, at_rung: Mapping[str, JobHistory], task: TaskSpec, rung: int) -> list[str]:
        """Job ids to keep at cut `rung` (`at_rung`: the live jobs, each at or past it)."""
        return sorted(at_rung)

    def holds_at_gate(self) -> bool:
        """True: the TaskGroup suspends a job at a rung until the cut, so no sample is trained
        past a rung before its cut."""
        return False

    def keep_share(self) -> float:
        """The share of the live jobs a cohort cut keeps, for duration predictions (1.0: none
        is cut by rank)."""
        return 1.0

    def expected_work_fraction(self) -> float:
        """A prior on the share of a task's samples this policy lets train (1.0: no savings);
        the Controller plans waiting tasks with it until finished tasks show the real share."""
        return 1.0

    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this policy (for logs and saved configs)."""
        return self.model_dump()


# ---------------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------------


def fraction(task: TaskSpec, samples: int) -> float:
    """Budget fraction of a sample count: samples / the job's sample budget."""
    return samples / task.samples_per_job


def gate_step(task: TaskSpec, job: JobSpec, frac: float) -> int:
    """The job's evaluation step nearest to `frac` of its sample budget (ties: the later one;
    at least its first evaluation, at most its last step): the rung's point on this job's eval
    grid, so jobs of every batch size meet a rung after (about) the same samples."""
    total, every = task.total_steps(job), task.eval_every_steps(job)
    target = frac * task.samples_per_job / job.batch_size  # in steps
    lo = math.floor(target / every + 1e-9) * every
    step = lo if lo >= every and target - lo < lo + every - target - 1e-9 else lo + every
    return min(total, max(every, step))


def upto(hist: JobHistory, step: int) -> int:
    """How many of the job's reports are at steps <= step."""
    n = 0
    while n < len(hist.steps) and hist.steps[n] <= step:
        n += 1
    return n


def bad_loss(hist: JobHistory, i: int) -> bool:
    """Report i carries a NaN/inf train or val loss: the job's weights are gone."""
    v = hist.val[i]
    return not math.isfinite(hist.train[i]) or (v is not None and not math.isfinite(v))


def latest_val(hist: JobHistory, n: int | None = None) -> float:
    """The most recent val loss among the first n reports (all: None); NaN if none."""
    for v in reversed(hist.val[:n] if n is not None else hist.val):
        if v is not None:
            return v
    return math.nan


def rank_key(hist: JobHistory) -> tuple[bool, float, str]:
    """Sort key: finite latest val ascending, NaN/inf/missing last, ties by job id."""
    v = latest_val(hist)
    ok = math.isfinite(v)
    return (not ok, v if ok else 0.0, hist.job.job_id)


def lsq_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs (`lsq_slopes` of one series)."""
    return lsq_slopes([(x, y, y) for x, y in zip(xs, ys)])[0]


def lsq_slopes(pts: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """Least-squares slopes of y1 and of y2 against x over (x, y1, y2) points, in one pass (the
    diverging rule asks for both on every evaluation), each as sum_{i<j} dx dy / sum_{i<j} dx^2
    (the usual slope), which keeps its sign exact in floating point: a non-increasing series over
    increasing xs never gets a positive slope from rounding."""
    num1 = num2 = den = 0.0
    for j in range(len(pts)):
        xj, aj, bj = pts[j]
        for i in range(j):
            xi, ai, bi = pts[i]
            dx = xj - xi
            num1 += dx * (aj - ai)
            num2 += dx * (bj - bi)
            den += dx * dx
    return (num1 / den, num2 / den) if den > 0 else (0.0, 0.0)


def one_line(owner: str, err: Exception) -> str:
    """A pydantic ValidationError (or any error) as one line naming the parameter."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ())) or "params"
        msg = "unknown parameter" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        return f"{owner}: parameter {loc!r}: {msg}, got {e.get('input')!r}"
    return f"{owner}: {str(err).splitlines()[0]}"
