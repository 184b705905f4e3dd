"""ALTO's loss-aware early exit (paper Algorithm 1): diverging, overfitting, underperforming.

Signals per job: the train loss smoothed by an EMA (every report feeds it) and the raw val loss
(only reports that carry one are *evaluations*; the two rules below run at evaluations only).

- Diverging: the least-squares slope over the last `w` evaluations of BOTH the EMA-train series
  (sampled at evaluations) and the val series is >= `tau_slope`, for `p_div` consecutive
  evaluations; the counter resets as soon as either slope is below. Slopes are in loss units
  *per evaluation* (x = evaluation index), as in the paper's rule, so `tau_slope` is tied to the
  eval interval (default 1% of the sample budget, see TaskSpec). A NaN/inf loss exits at once.
- Overfitting: gap (val - train_ema) / train_ema > `tau_gap` for `p_ovf` consecutive
  evaluations -> exit with `restore_best` (the best-val snapshot is the job's result). A
  non-positive train EMA leaves the gap undefined and counts as "not overfitting".
  When both rules fire on the same evaluation, diverging wins (the paper's order).
- Underperforming: the cohort cut. Every job waits at the end of warm-up, `warmup_ratio` of its
  steps snapped up to the eval grid (`warmup_steps`: evaluation ceil(warmup_ratio * the task's
  nominal number of evaluations), the same index for every job); then `select` keeps the top ceil(`select_ratio` * n) of the n jobs that got there, by latest
  val loss (NaN/inf/missing last, ties by job id).

EMA factor. ema_t = ema * ema_{t-1} + (1 - ema) * train_t (`ema` is the weight of the past,
like TensorBoard's smoothing). Default 0.5: each report's train loss is already the mean over a
whole eval interval (~1% of training), so little noise is left to remove, while every unit of
smoothing lags the EMA behind a falling loss (lag ~ ema / (1 - ema) intervals of slope). With
0.5 the lag is one interval, so the gap rule is not blunted in the fast early descent, and a
divergence shows in the EMA slope within one evaluation (the val slope sees it at once).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from altosim.policy.early_exit.base import (
    CONTINUE, DIVERGING, EarlyExitPolicy, Verdict, check, bad_loss, lsq_slope, nominal_evals, rank_key,
)
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, JobSpec, TaskSpec

OVERFITTING = Verdict(True, "overfitting", restore_best=True)


@dataclass
class _Track:
    """One job's running signals: EMA, the last w (EMA, val) pairs, the two patience counters."""

    w: int
    ema: float | None = None
    emas: deque[float] = field(init=False)
    vals: deque[float] = field(init=False)
    n_div: int = 0
    n_ovf: int = 0

    def __post_init__(self) -> None:
        self.emas = deque(maxlen=self.w)
        self.vals = deque(maxlen=self.w)


@EARLY_EXIT.register("alto")
@dataclass
class Alto(EarlyExitPolicy):
    """Algorithm 1 with the paper's defaults (ema is ours: see the module docstring)."""

    name: ClassVar[str] = "alto"

    w: int = 2
    tau_slope: float = 0.001
    tau_gap: float = 0.1
    p_div: int = 2
    p_ovf: int = 2
    warmup_ratio: float = 0.05
    select_ratio: float = 0.25
    ema: float = 0.5
    _tracks: dict[str, _Track] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check("alto", "w", self.w, integer=True, lo=2)
        check("alto", "tau_slope", self.tau_slope, lo=0, allow_inf=True)
        check("alto", "tau_gap", self.tau_gap, lo=0, allow_inf=True)
        check("alto", "p_div", self.p_div, integer=True, lo=1)
        check("alto", "p_ovf", self.p_ovf, integer=True, lo=1)
        check("alto", "warmup_ratio", self.warmup_ratio, lo=0, hi=1, lo_open=True)
        check("alto", "select_ratio", self.select_ratio, lo=0, hi=1, lo_open=True)
        check("alto", "ema", self.ema, lo=0, hi=1, hi_open=True)

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):
            return DIVERGING
        s = self._tracks.setdefault(hist.job.job_id, _Track(self.w))
        train, val = hist.train[i], hist.val[i]
        # e + (1 - ema) * (x - e): same EMA, but never overshoots x in floating point
        s.ema = train if s.ema is None else s.ema + (1.0 - self.ema) * (train - s.ema)
        if val is None:
            return CONTINUE
        s.emas.append(s.ema)
        s.vals.append(val)
        rising = (len(s.vals) == self.w and lsq_slope(list(s.emas)) >= self.tau_slope
                  and lsq_slope(list(s.vals)) >= self.tau_slope)
        s.n_div = s.n_div + 1 if rising else 0
        gap = (val - s.ema) / s.ema if s.ema > 0 else -math.inf
        s.n_ovf = s.n_ovf + 1 if gap > self.tau_gap else 0
        if s.n_div >= self.p_div:
            return DIVERGING
        if s.n_ovf >= self.p_ovf:
            return OVERFITTING
        return CONTINUE

    def expected_work_fraction(self) -> float:
        """Everyone trains the warm-up, the kept share the rest (divergence/overfit exits ignored)."""
        return self.warmup_ratio + self.select_ratio * (1.0 - self.warmup_ratio)

    def warmup_steps(self, job: JobSpec, task: TaskSpec) -> int | None:
        """End of warm-up on the eval grid: evaluation K = ceil(warmup_ratio * nominal evals).

        Snapping to an eval index (rather than ceil(ratio * total_steps), whose last eval index
        depends on the batch size through rounding) makes `select` rank every job by its val
        loss at the same index, i.e. after the same number of samples.
        """
        # the 1e-9 keeps e.g. 0.07 * 100 = 7.000000000000001 from rounding up to 8
        k = max(1, math.ceil(self.warmup_ratio * nominal_evals(task) - 1e-9))
        return min(task.total_steps(job), k * task.eval_every_steps(job))

    def select(self, warmed: Mapping[str, JobHistory], task: TaskSpec) -> list[str]:
        n = len(warmed)
        keep = max(1, math.ceil(self.select_ratio * n - 1e-9)) if n else 0
        ranked = sorted(warmed.values(), key=rank_key)
        return [h.job.job_id for h in ranked[:keep]]
