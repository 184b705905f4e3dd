"""Asynchronous successive halving (Li et al. 2018; Ray Tune `ASHAScheduler`, one bracket).

Time is the eval index (base.py; 1-based like Ray's default `training_iteration`), so
`grace_period` and `max_t` count evaluations; at the default 1% eval interval, the default
grace of 5 evaluations is 5% of the sample budget, the same point as ALTO's warm-up cut.
Rungs sit at grace_period * reduction_factor**k (k = 0, 1, ...) below max_t. The first time a
job's evaluation reaches a rung, its val loss is compared with the values recorded at that rung
so far (other jobs' only) and then recorded; the job is stopped ("pruned") unless it is within
the top 1 / reduction_factor of them. With losses folded into a reward r = -val, that is Ray's
cutoff: stop iff r < percentile(recorded rewards, 100 * (1 - 1/eta)) (linear interpolation);
the first job at a rung always continues. `max_t`: a job that reaches it before its last step
is stopped with reason "budget" (Ray stops trials at max_t); None = each job's full budget.

Matched: Ray Tune python/ray/tune/schedulers/async_hyperband.py (`_Bracket.__init__` rungs,
`cutoff` = nanpercentile at (1 - 1/rf) * 100, `on_result`, `metric_op = -1` for mode "min",
max_t stop; knobs grace_period, reduction_factor, max_t; Ray's defaults are grace 1, eta 4,
max_t 100). One bracket (Ray's default; several brackets are assigned at random in Ray). A job is
judged once per rung, at its first evaluation at or past it; a rung it skipped (no val there) is
not judged later. No decision at a job's last report (it has finished). A NaN/inf loss stops the
job as "diverging" (Ray would record NaN, which never falls below a cutoff, and keep it running).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from altosim.policy.early_exit.base import (
    CONTINUE, DIVERGING, PRUNED, EarlyExitPolicy, Verdict, bad_loss, check, eval_index, n_evals,
)
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec

SIGN = -1.0  # losses are minimized: reward = SIGN * loss, higher is better (Ray's metric_op)
BUDGET = Verdict(True, "budget")


def rung_of(t: float, grace: float, eta: float) -> int | None:
    """Index k of the highest rung grace * eta**k <= t, or None below the first rung."""
    if t < grace:
        return None
    k, m = 0, grace * eta
    while m <= t:
        k, m = k + 1, m * eta
    return k


def cutoff(recorded: Mapping[str, float], eta: float) -> float | None:
    """Ray's rung cutoff on rewards: the (1 - 1/eta) quantile; None for an empty rung."""
    if not recorded:
        return None
    return float(np.percentile(list(recorded.values()), (1 - 1 / eta) * 100))


@EARLY_EXIT.register("asha")
@dataclass
class Asha(EarlyExitPolicy):
    """Async successive halving over eval indices, one bracket, Ray Tune's cutoff rule."""

    name: ClassVar[str] = "asha"

    grace_period: int = 5
    reduction_factor: float = 4.0
    max_t: int | None = None
    _rungs: dict[int, dict[str, float]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check("asha", "grace_period", self.grace_period, integer=True, lo=1)
        check("asha", "reduction_factor", self.reduction_factor, lo=1, lo_open=True)
        check("asha", "max_t", self.max_t, integer=True, lo=self.grace_period, optional=True)

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):
            return DIVERGING
        val, job = hist.val[i], hist.job
        if val is None or hist.steps[i] >= task.total_steps(job):
            return CONTINUE
        t = eval_index(task, job, hist.steps[i])
        max_t = self.max_t if self.max_t is not None else n_evals(task, job)
        if t >= max_t:
            return BUDGET if self.max_t is not None else CONTINUE
        k = rung_of(t, self.grace_period, self.reduction_factor)
        if k is None:
            return CONTINUE
        recorded = self._rungs.setdefault(k, {})
        if job.job_id in recorded:
            return CONTINUE
        reward, cut = SIGN * val, cutoff(recorded, self.reduction_factor)
        recorded[job.job_id] = reward
        return PRUNED if cut is not None and reward < cut else CONTINUE
