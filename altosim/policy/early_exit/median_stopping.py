"""Median stopping rule (Vizier; Ray Tune `MedianStoppingRule`, Optuna `MedianPruner`).

At an evaluation with index t >= `n_warmup_evals`, stop the job ("pruned") if its best val loss
so far is strictly worse than the median, over the *other* jobs, of
- their val loss at the same index t (default; Optuna's MedianPruner compares at the same step), or
- with `running_average=True`, their mean val loss over indices [n_warmup_evals, t], taken over
  jobs that have reached t (Ray's rule: median of running averages, `_trials_beyond_time`).
Fewer than `min_jobs` such jobs -> continue (Ray's `min_samples_required`, default 3).
Time is the eval index (base.py), so `n_warmup_evals` plays Ray's `grace_period` and Optuna's
`n_warmup_steps`: the earliest stop is at index == n_warmup_evals.

Matched: Ray Tune python/ray/tune/schedulers/median_stopping_rule.py (on_trial_result:
grace check, others beyond time, min_samples_required, `_best_result` over all results vs
`_median_result`); Optuna optuna/pruners/_percentile.py (best intermediate vs percentile 50 at
the step, n_min_trials). Stopped jobs' values still count, as in both. Differences: the cohort is
the running jobs, not only completed trials (Optuna's n_startup_trials counts completed trials,
which an all-concurrent task would never have); Ray's `hard_stop=False` (pause and resume later)
is not offered, since a verdict cannot pause; a NaN/inf loss stops the job as "diverging".
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from altosim.policy.early_exit.base import (
    CONTINUE, DIVERGING, PRUNED, EarlyExitPolicy, Verdict, bad_loss, check, eval_index,
)
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec


@dataclass
class _Series:
    """One job's val losses by eval index, with prefix sums for running means."""

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


@EARLY_EXIT.register("median")
@dataclass
class MedianStopping(EarlyExitPolicy):
    """Prune a job whose best val so far is worse than the other jobs' median at its eval index."""

    name: ClassVar[str] = "median"

    n_warmup_evals: int = 5
    min_jobs: int = 3
    running_average: bool = False
    _series: dict[str, _Series] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check("median", "n_warmup_evals", self.n_warmup_evals, integer=True, lo=0)
        check("median", "min_jobs", self.min_jobs, integer=True, lo=1)
        if not isinstance(self.running_average, bool):
            raise ValueError(f"median: parameter 'running_average' must be true or false, got {self.running_average!r}")

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):
            return DIVERGING
        val = hist.val[i]
        if val is None:
            return CONTINUE
        me = hist.job.job_id
        t = eval_index(task, hist.job, hist.steps[i])
        mine = self._series.setdefault(me, _Series())
        mine.add(t, val)
        if t < self.n_warmup_evals:
            return CONTINUE
        others = [self._peer_value(s, t) for j, s in self._series.items() if j != me]
        others = [v for v in others if v is not None]
        if len(others) < self.min_jobs:
            return CONTINUE
        return PRUNED if mine.best > float(np.median(others)) else CONTINUE

    def _peer_value(self, s: _Series, t: int) -> float | None:
        if not self.running_average:
            return s.at.get(t)
        return s.mean(self.n_warmup_evals, t) if s.ts and s.ts[-1] >= t else None
