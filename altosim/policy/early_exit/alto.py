"""ALTO's loss-aware early exit (paper Algorithm 1): diverging, overfitting, underperforming.

Signals per job: the train loss smoothed by an EMA (every report feeds it) and the raw val loss
(only reports that carry one are *evaluations*; the two rules below run at evaluations only).

- Diverging: the least-squares slope over the last `w` evaluations of BOTH the EMA-train series
  (sampled at evaluations) and the val series is >= `tau_slope`, for `p_div` consecutive
  evaluations; the counter resets as soon as either slope is below. Slopes are in loss units
  *per evaluation* (x = evaluation index), as in the paper's rule, so `tau_slope` is tied to the
  eval interval (default 1% of the sample budget, see TaskSpec). A NaN/inf loss exits at once.
  Ours: when the rule fires while the val loss is still within `div_margin` (relative) of the
  job's best val, the run has not blown up, it has stalled (noise on a plateau, or the onset of
  overfitting); it exits as overfitting with `restore_best`. And with `diverging_keeps_best`
  (our default) a job stopped by the slope rule also keeps its best-val snapshot, which stays a candidate for
  the task's result: the weights it had before it went bad are as good as they were (on the real
  SmolLM2 trace replayed at 100 evaluations, the eventual winner rose by noise at 98% of its
  training and the paper's rule threw its best snapshot away). The paper discards diverging jobs
  (`diverging_keeps_best=False, div_margin=0`). A NaN/inf loss is discarded in both modes, as
  the runtime reports it (JobFailed), so simulated and real runs choose the same result.
- Overfitting: gap (val - train_ema) / train_ema > `tau_gap` for `p_ovf` consecutive
  evaluations (the paper's rule) AND, with `gap_requires_plateau` (our default), the val loss
  has made no new best for the last `p_plateau` evaluations (default: `plateau_ratio` of the
  job's nominal evaluations, 0.15 -> 6 of 40 or 15 of 100, so the patience covers the same share
  of training however often a task evaluates) -> exit with `restore_best` (the
  best-val snapshot is the job's result). A non-positive train EMA leaves the gap undefined and
  counts as "not overfitting". When both rules fire on the same evaluation, diverging wins (the
  paper's order). `gap_requires_plateau=False, div_margin=0, diverging_keeps_best=False` is the
  paper's Algorithm 1 exactly.
- Underperforming: the cohort cut. Every job waits at the end of warm-up, `warmup_ratio` of its
  steps snapped up to the eval grid (`warmup_steps`: evaluation ceil(warmup_ratio * the task's
  nominal number of evaluations), the same index for every job); then `select` keeps the top
  ceil(`select_ratio` * n) of the n jobs that got there, by latest val loss (NaN/inf/missing
  last, ties by job id).

Why the plateau condition (our choice, measured on the real SmolLM2-135M arithmetic traces,
see results/early_exit_study_goals.md). A train/val gap alone is normal late in fine-tuning:
the relative gap (val - train) / train blows up as train -> 0, while val is still falling. On
the real grid the paper's rule stopped every surviving job at 35-50% of training (gap > 0.1 for
two evaluations) although val loss kept falling to the end; the chosen config's best val was
+48% over the full sweep's. Overfitting means val stopped improving; the plateau condition
requires that. Its patience is counted in evaluations without a new best val (not "val rose
twice"), because val on a small validation split is noisy: on the real traces the eventual
winner, still improving, goes up to 4 evaluations (~10% of its run) between new bests, so 5 is
the least patience that keeps it; the default 6 leaves one evaluation of margin for other
tasks. Likewise `div_margin` (default 0.1): with w=2 the slope test trips on noise, and the
paper rule's diverging exits in the study include top-10 configs stopped late in their run, e.g.
the true best of synthetic task t02 at 54% of its run, 0.6% above its best val: its result was
lost (with the margin its snapshot counts: t02 picks its true best config, 0.13% above that
config's full-run best, instead of another at +0.9%).

The cut is kept as the paper's: it ranks by the *latest* val. Under the Controller's warm-up,
jobs that reached their gate keep training until the slowest one gets there (no pending job to
give the slot to), so larger batches are ranked after more samples; on the real grid that is
what keeps the eventual winner (batch 4: in the top 4 at the cut, rank ~20 of 60 at equal
samples). The price is samples: with warmup_ratio 0.05 (3 evaluations, 7% of a job) the jobs
have trained 25.7% of the sweep's samples when the cut comes, so no cut or exit rule can save
75% there; 0.02 costs 8.4% (see the study's tuned rows). Ranking by the best or the EMA-smoothed
val gave the same cut; a log-linear extrapolation of the val trend kept more synthetic winners
but dropped the real one (val noise), so it is not used.

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
DIVERGING_KEEP_BEST = Verdict(True, "diverging", restore_best=True)


@dataclass
class _Track:
    """One job's running signals: EMA, the last w (EMA, val) pairs, the two patience counters."""

    w: int
    ema: float | None = None
    emas: deque[float] = field(init=False)
    vals: deque[float] = field(init=False)
    n_div: int = 0
    n_ovf: int = 0
    best: float = math.inf  # lowest val so far
    since_best: int = 0  # evaluations since `best` was set

    def __post_init__(self) -> None:
        self.emas = deque(maxlen=self.w)
        self.vals = deque(maxlen=self.w)


@EARLY_EXIT.register("alto")
@dataclass
class Alto(EarlyExitPolicy):
    """Algorithm 1 with the paper's defaults, plus our plateau condition on the overfitting rule
    (`gap_requires_plateau`, `p_plateau`), the stall margin of the diverging rule (`div_margin`)
    and `ema`: see the module docstring.
    `Alto(gap_requires_plateau=False, div_margin=0, diverging_keeps_best=False)` is the paper's
    rule exactly."""

    name: ClassVar[str] = "alto"

    w: int = 2
    tau_slope: float = 0.001
    tau_gap: float = 0.1
    p_div: int = 2
    p_ovf: int = 2
    warmup_ratio: float = 0.05
    select_ratio: float = 0.25
    ema: float = 0.5
    gap_requires_plateau: bool = True
    p_plateau: int | None = None  # None: ceil(plateau_ratio * the task's nominal evaluations)
    plateau_ratio: float = 0.15
    div_margin: float = 0.1
    diverging_keeps_best: bool = True
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
        if not isinstance(self.gap_requires_plateau, bool):
            raise ValueError(f"alto: parameter 'gap_requires_plateau' must be true or false, "
                             f"got {self.gap_requires_plateau!r}")
        if self.p_plateau is not None:
            check("alto", "p_plateau", self.p_plateau, integer=True, lo=1)
        check("alto", "plateau_ratio", self.plateau_ratio, lo=0, hi=1, lo_open=True)
        check("alto", "div_margin", self.div_margin, lo=0)
        if not isinstance(self.diverging_keeps_best, bool):
            raise ValueError(f"alto: parameter 'diverging_keeps_best' must be true or false, "
                             f"got {self.diverging_keeps_best!r}")

    def judge(self, hist: JobHistory, i: int, cohort: Mapping[str, JobHistory], task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):  # as the runtime's JobFailed: a NaN job is never a result
            return DIVERGING
        diverging = DIVERGING_KEEP_BEST if self.diverging_keeps_best else DIVERGING
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
        s.since_best = 0 if val < s.best else s.since_best + 1
        s.best = min(s.best, val)
        if s.n_div >= self.p_div:
            # rising, but still near its best: stalled, not blown up -> keep the best snapshot
            return OVERFITTING if val < s.best + self.div_margin * abs(s.best) else diverging
        if s.n_ovf >= self.p_ovf and (not self.gap_requires_plateau or s.since_best >= self.patience(task)):
            return OVERFITTING
        return CONTINUE

    def patience(self, task: TaskSpec) -> int:
        """Evaluations without a new best val that make a gapped job overfitting."""
        if self.p_plateau is not None:
            return self.p_plateau
        return max(1, math.ceil(self.plateau_ratio * nominal_evals(task) - 1e-9))

    def expected_work_fraction(self) -> float:
        """Everyone trains the warm-up, the kept share the rest (divergence/overfit exits ignored)."""
        return self.warmup_ratio + self.select_ratio * (1.0 - self.warmup_ratio)

    def warmup_steps(self, job: JobSpec, task: TaskSpec) -> int | None:
        """End of warm-up on the eval grid: evaluation K = ceil(warmup_ratio * nominal evals).

        Snapping to an eval index (rather than ceil(ratio * total_steps), whose last eval index
        depends on the batch size through rounding) puts every job's gate after the same number
        of samples. `select` ranks by the latest val, so a job that the Controller lets train on
        past its gate while others catch up is ranked later (module docstring).
        """
        # the 1e-9 keeps e.g. 0.07 * 100 = 7.000000000000001 from rounding up to 8
        k = max(1, math.ceil(self.warmup_ratio * nominal_evals(task) - 1e-9))
        return min(task.total_steps(job), k * task.eval_every_steps(job))

    def select(self, warmed: Mapping[str, JobHistory], task: TaskSpec) -> list[str]:
        n = len(warmed)
        keep = max(1, math.ceil(self.select_ratio * n - 1e-9)) if n else 0
        ranked = sorted(warmed.values(), key=rank_key)
        return [h.job.job_id for h in ranked[:keep]]
