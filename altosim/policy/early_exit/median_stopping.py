"""Median stopping rule (Vizier; Ray Tune `MedianStoppingRule`, Optuna `MedianPruner`).

At an evaluation past `warmup_ratio` of the budget, stop the job ("pruned") if its best val
loss so far is strictly worse than the median, over the *other* jobs, of
- their val loss at the same evaluation point (default; Optuna's MedianPruner compares at the
  same step; jobs evaluate at equal sample counts, so equal points mean equal samples), or
- with `running_average=True`, their mean val loss over the points from the warm-up to this one,
  over jobs that have reached it (Ray's rule: median of running averages).
Fewer than `min_jobs` such jobs -> continue (Ray's `min_samples_required`, default 3).

Matched: Ray Tune python/ray/tune/schedulers/median_stopping_rule.py (on_trial_result: grace
check, others beyond time, min_samples_required, `_best_result` vs `_median_result`); Optuna
optuna/pruners/_percentile.py (best intermediate vs percentile 50 at the step). Stopped jobs'
values still count, as in both. The cohort is the running jobs, not only completed trials;
Ray's `hard_stop=False` (pause) is not offered; a NaN/inf loss stops the job as "diverging".
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import Field, PrivateAttr

from altosim.policy.early_exit.base import CONTINUE, DIVERGING, PRUNED, EarlyExitPolicy, Verdict, bad_loss, fraction
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec


@dataclass
class _Series:
    """One job's val losses by evaluation point, with prefix sums for running means."""

    ts: list[int] = field(default_factory=list)
    at: dict[int, float] = field(default_factory=dict)
    csum: list[float] = field(default_factory=lambda: [0.0])
    best: float = float("inf")

    def add(self, t: int, v: float) -> None:
        self.ts.append(t)
        self.at[t] = v
        self.csum.append(self.csum[-1] + v)
        self.best = min(self.best, v)

    def mean(self, lo: int, hi: int) -> float | None:
        a, b = bisect.bisect_left(self.ts, lo), bisect.bisect_right(self.ts, hi)
        return (self.csum[b] - self.csum[a]) / (b - a) if b > a else None


def eval_point(task: TaskSpec, samples: int) -> int:
    """The evaluation point on the task's equal-samples grid nearest to `samples` (a key that
    is equal for jobs that evaluated after the same samples, whatever their batch size)."""
    every = task.eval_every_samples or max(1, task.samples_per_job // 100)
    return round(samples / every)


@EARLY_EXIT.register("median")
class MedianStopping(EarlyExitPolicy):
    """Prune a job whose best val so far is worse than the other jobs' median at its point."""

    name: ClassVar[str] = "median"

    warmup_ratio: float = Field(0.05, ge=0, le=1, description="no decision before this budget fraction")
    min_jobs: int = Field(3, ge=1, description="peers needed at the point for a decision")
    running_average: bool = Field(False, description="compare with the peers' running mean val (Ray's rule)")
    _series: dict[str, _Series] = PrivateAttr(default_factory=dict)

    def judge(self, hist: JobHistory, i: int, task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):
            return DIVERGING
        val = hist.val[i]
        if val is None:
            return CONTINUE
        me = hist.job.job_id
        t = eval_point(task, hist.samples[i])
        mine = self._series.setdefault(me, _Series())
        mine.add(t, val)
        if fraction(task, hist.samples[i]) < self.warmup_ratio - 1e-9:
            return CONTINUE
        others = [self._peer_value(s, t, task) for j, s in self._series.items() if j != me]
        others = [v for v in others if v is not None]
        if len(others) < self.min_jobs:
            return CONTINUE
        return PRUNED if mine.best > float(np.median(others)) else CONTINUE

    def _peer_value(self, s: _Series, t: int, task: TaskSpec) -> float | None:
        if not self.running_average:
            return s.at.get(t)
        lo = eval_point(task, math.ceil(self.warmup_ratio * task.samples_per_job - 1e-9))
        return s.mean(lo, t) if s.ts and s.ts[-1] >= t else None
