"""Asynchronous successive halving (Li et al. 2018; Ray Tune `ASHAScheduler`, one bracket).

Time is the budget fraction (samples seen / the job's sample budget), so `grace_period` and
`max_t` are fractions; rungs sit at grace_period * reduction_factor**k below max_t. The first
time a job's evaluation reaches a rung, its val loss is compared with the values recorded at
that rung so far (other jobs' only) and then recorded; the job is stopped ("pruned") unless it
is within the top 1 / reduction_factor of them. With losses folded into a reward r = -val, that
is Ray's cutoff: stop iff r < percentile(recorded rewards, 100 * (1 - 1/eta)) (linear
interpolation); the first job at a rung always continues. `max_t`: a job that reaches it before
its last step is stopped with reason "budget" (Ray stops trials at max_t); None: the full budget.

Matched: Ray Tune python/ray/tune/schedulers/async_hyperband.py (`_Bracket.__init__` rungs,
`cutoff` = nanpercentile at (1 - 1/rf) * 100, `on_result`, `metric_op = -1` for mode "min",
max_t stop; knobs grace_period, reduction_factor, max_t; Ray's defaults grace 1 of max_t 100,
i.e. 0.01, eta 4). One bracket (Ray's default). A job is judged once per rung, at its first
evaluation at or past it; a rung it skipped is not judged later. No decision at a job's last
report (it has finished). A NaN/inf loss stops the job as "diverging" (Ray would record NaN,
which never falls below a cutoff, and keep it running).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from altosim.policy.early_exit.base import CONTINUE, DIVERGING, PRUNED, EarlyExitPolicy, Verdict, bad_loss, fraction
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec

SIGN = -1.0  # losses are minimized: reward = SIGN * loss, higher is better (Ray's metric_op)
BUDGET = Verdict(True, "budget")
REL = 1e-9  # relative tolerance on budget fractions (0.05 * 3 is not 0.15 in floating point)


def rung_of(t: float, grace: float, eta: float) -> int | None:
    """Index k of the highest rung grace * eta**k <= t, or None below the first rung (closed
    form with a relative tolerance, so a hostile eta near 1 costs no loop)."""
    if t < grace * (1 - REL):
        return None
    k = max(0, math.floor(math.log(t / grace) / math.log(eta)))
    while k > 0 and grace * eta ** k > t * (1 + REL):  # guard the log's rounding
        k -= 1
    while grace * eta ** (k + 1) <= t * (1 + REL):
        k += 1
    return k


def cutoff(recorded: Mapping[str, float], eta: float) -> float | None:
    """Ray's rung cutoff on rewards: the (1 - 1/eta) quantile; None for an empty rung."""
    if not recorded:
        return None
    return float(np.percentile(list(recorded.values()), (1 - 1 / eta) * 100))


@EARLY_EXIT.register("asha")
class Asha(EarlyExitPolicy):
    """Async successive halving over budget fractions, one bracket, Ray Tune's cutoff rule."""

    name: ClassVar[str] = "asha"

    grace_period: float = Field(0.05, gt=0, le=1, description="budget fraction of the first rung")
    reduction_factor: float = Field(4.0, gt=1, description="rungs are this far apart; keeps 1/reduction_factor")
    max_t: float | None = Field(None, gt=0, le=1, description="stop every job at this budget fraction; None: 1")
    _rungs: dict[int, dict[str, float]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _max_after_grace(self) -> "Asha":
        if self.max_t is not None and self.max_t < self.grace_period:
            raise ValueError(f"'max_t' must be >= grace_period {self.grace_period}, got {self.max_t}")
        return self

    def judge(self, hist: JobHistory, i: int, task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):
            return DIVERGING
        val, job = hist.val[i], hist.job
        if val is None or hist.steps[i] >= task.total_steps(job):
            return CONTINUE
        t = fraction(task, hist.samples[i])
        if self.max_t is not None and t >= self.max_t * (1 - REL):
            return BUDGET
        k = rung_of(t, self.grace_period, self.reduction_factor)
        if k is None:
            return CONTINUE
        recorded = self._rungs.setdefault(k, {})
        if job.job_id in recorded:
            return CONTINUE
        reward, cut = SIGN * val, cutoff(recorded, self.reduction_factor)
        recorded[job.job_id] = reward
        return PRUNED if cut is not None and reward < cut else CONTINUE
