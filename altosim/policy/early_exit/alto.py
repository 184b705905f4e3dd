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
- Underperforming: the cohort cuts (successive halving inside ALTO; ours, the paper makes one
  cut). Cut c waits for every live job at its gate, evaluation ceil(K * cut_spacing ** c) on the
  eval grid (K = ceil(warmup_ratio * the task's nominal evaluations): the same index, hence the
  same samples, for every job; `cut_steps`), for c = 0 .. cuts-1; then `select` keeps the top
  ceil(`select_ratio` * n) of the n live jobs, by latest val loss (NaN/inf/missing last, ties by
  job id). `cut_groups="batch"` ranks within groups of equal per-adapter batch size instead
  (ceil(select_ratio * group size) of each), `"batch+all"` keeps the union of both. With
  `hold_at_gate` the Controller suspends a job at its gate while other jobs still warm up, so no
  sample is spent past a gate before its cut; the held survivors resume after it.

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

The cut schedule (our choice, measured by experiments/early_exit_study.py; default since
2026-12-03): two cuts without hold, each keeping the top quarter, at evaluation K =
ceil(0.02 * nominal evals) and 12 K (on a 40-evaluation grid: evaluations 1 and 12, i.e. 2.5%
and 30% of training; on 100: 2 and 24). 60 configs -> 15 -> 4, so at most ~20% of the sweep's
samples are trained before the overfitting and diverging exits save more. Chosen from ~130
schedules (warm-up 0.02/0.03/0.05 x select 0.25-0.6 x 1-3 cuts x spacing 3-20) replayed on the
two real SmolLM2-135M grids (arithmetic, list_ops: 60 configs = lr 5 x rank 3 x batch {1,2,4,8})
and the 11 synthetic tasks: the true best kept on both real grids with 79.9% / 77.3% of the
samples saved, and on the synthetic ones 82.9% saved, max regret 2.4%, true best on 4/11 (the
previous default, the paper's single cut at 5% with our rules: 65.7% / 63.5% real, 78.2% and
2.4% and 3/11 synthetic). Why a second cut: a single cut keeping a quarter can save at most
~73% here (the warm-up plus 15 jobs trained to the end), and any single cut that keeps fewer
drops a real winner: early in training small batches lead at equal samples (more optimizer
steps) and the eventual winner ranks ~20th of 60 until ~30% of training, so ranking must wait
until then for all but the clearly hopeless; the first cut at 2.5% is meant to drop only those
(on the hold-out below it dropped the winner). Margin:
spacing 9 or less drops the arithmetic winner at the second cut (before evaluation 10 it is
not among the top 4 of the 15 left), 10 keeps it; 12 leaves three evaluations (7.5% of
training) of margin, at 2.5% fewer samples saved than 10; spacing 14-16 keeps it too
(78.9-78.3% / 76.6-75.6%).
The third real task, python_docs, was measured after this choice (a hold-out): 80.5% saved, but
its true best (lr 2e-4, r 64, batch 2) was dropped at the first cut; the chosen config is the
full sweep's second (val regret 0.39%, replayed; 0.19% in the real H200 run). Why it is fragile:
at equal samples the eventual winners rank 15th-33rd of 60 until ~30% of training on all three
real grids (small batches lead early: more optimizer steps per sample). Without hold the cut
ranks each job by its latest val when the last job reaches the gate, so large-batch jobs, which
reach it first and train on, are ranked after more samples: the arithmetic (batch 4) and
list_ops (batch 8) winners survive by that, the python_docs one (batch 2) does not. No schedule
of this family keeps all three winners while saving >= 75% on each (best: 73.5%).
Options kept for comparison: `SH_PARAMS`, three cuts keeping half each, at evaluations K, 3K,
9K (warm-up 0.03), all jobs held at their gates: real 81.1% saved; it kept the arithmetic winner
but lost the list_ops one (11% regret). Holding jobs at their gates leaves the GPU's batching
unused while stragglers catch up, and samples are not time: on the real grid (135M model, all
60 adapters in one group, where the samples trained beside the stragglers cost little time) its
simulated wall time is 65% of the full sweep's; `hold_at_gate` pays off only where the GPU is
saturated. The batch-stratified cut (`cut_groups="batch"`: rank within equal batch sizes, where
equal samples mean equal steps) kept the arithmetic winner with one hold-and-cut at 25% but not
the list_ops one. Ranking by the best or a 3-evaluation mean val instead of the latest gave no
better ranks on the real grid; a log-linear extrapolation of the val trend kept more synthetic
winners but dropped the real one (val noise), so neither is used.

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

CUT_GROUPS = ("none", "batch", "batch+all")
# the paper's Algorithm 1 exactly (our plateau/stall/keep-best changes off, one cut, no hold)
PAPER_PARAMS: dict[str, object] = {
    "warmup_ratio": 0.05, "select_ratio": 0.25, "cuts": 1, "hold_at_gate": False,
    "gap_requires_plateau": False, "div_margin": 0.0, "diverging_keeps_best": False,
}
# successive halving inside ALTO, with every job held at its gate: the cut schedule we
# recommend (module docstring; the study's `alto_sh` row)
SH_PARAMS: dict[str, object] = {"warmup_ratio": 0.03, "select_ratio": 0.5, "cuts": 3, "cut_spacing": 3.0,
                                "hold_at_gate": True}
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
    """Algorithm 1 with the paper's thresholds, plus our plateau condition on the overfitting rule
    (`gap_requires_plateau`, `p_plateau`), the stall margin of the diverging rule (`div_margin`),
    `ema`, and our cut schedule (`hold_at_gate`, `cuts`, `cut_spacing`, `cut_groups`, the
    warm-up and select ratios): see the module docstring. `Alto(**PAPER_PARAMS)` is the paper's
    rule exactly."""

    name: ClassVar[str] = "alto"

    w: int = 2
    tau_slope: float = 0.001
    tau_gap: float = 0.1
    p_div: int = 2
    p_ovf: int = 2
    warmup_ratio: float = 0.02
    select_ratio: float = 0.25  # per cut
    ema: float = 0.5
    gap_requires_plateau: bool = True
    p_plateau: int | None = None  # None: ceil(plateau_ratio * the task's nominal evaluations)
    plateau_ratio: float = 0.15
    div_margin: float = 0.1
    diverging_keeps_best: bool = True
    hold_at_gate: bool = False  # the Controller suspends a job at its gate until the cut
    cuts: int = 2  # cohort cuts, each keeps select_ratio of the jobs alive there
    cut_spacing: float = 12.0  # cut c is at evaluation ceil(K * cut_spacing ** c), K: the warm-up's
    cut_groups: str = "none"  # "batch": rank within equal batch sizes; "batch+all": or globally
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
        if self.cut_groups not in CUT_GROUPS:
            raise ValueError(f"alto: parameter 'cut_groups' must be one of {', '.join(CUT_GROUPS)}, "
                             f"got {self.cut_groups!r}")
        check("alto", "cuts", self.cuts, integer=True, lo=1, hi=64)  # bounded: each cut is a list entry
        check("alto", "cut_spacing", self.cut_spacing, lo=1, lo_open=True)
        if not isinstance(self.hold_at_gate, bool):
            raise ValueError(f"alto: parameter 'hold_at_gate' must be true or false, got {self.hold_at_gate!r}")

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
        """Between cuts the survivors train on: sum over rungs of alive share x rung length
        (divergence/overfit exits ignored; gates as shares of training, without eval snapping)."""
        gates = [min(1.0, self.warmup_ratio * self.cut_spacing ** c) for c in range(self.cuts)] + [1.0]
        work, prev = gates[0], gates[0]  # everyone trains the warm-up
        for c, g in enumerate(gates[1:], start=1):
            work += self.select_ratio ** c * (g - prev)
            prev = g
        return work

    def warmup_steps(self, job: JobSpec, task: TaskSpec) -> int | None:
        """End of warm-up on the eval grid: evaluation K = ceil(warmup_ratio * nominal evals).

        Snapping to an eval index (rather than ceil(ratio * total_steps), whose last eval index
        depends on the batch size through rounding) puts every job's gate after the same number
        of samples. `select` ranks by the latest val, so a job that the Controller lets train on
        past its gate while others catch up is ranked later (module docstring).
        """
        return self.cut_steps(job, task, 0)

    def n_cuts(self) -> int:
        return self.cuts

    def cut_steps(self, job: JobSpec, task: TaskSpec, cut: int) -> int | None:
        """Gate of cut `cut` (0: the warm-up): evaluation ceil(K * cut_spacing ** cut) on the
        eval grid, K the warm-up's evaluation; None past the last cut."""
        if not 0 <= cut < self.cuts:
            return None
        # the 1e-9 keeps e.g. 0.07 * 100 = 7.000000000000001 from rounding up to 8
        k = max(1, math.ceil(self.warmup_ratio * nominal_evals(task) - 1e-9))
        k = max(k + cut, math.ceil(k * self.cut_spacing ** cut - 1e-9))
        return min(task.total_steps(job), k * task.eval_every_steps(job))

    def holds_at_gate(self) -> bool:
        return self.hold_at_gate

    def select(self, warmed: Mapping[str, JobHistory], task: TaskSpec) -> list[str]:
        """Top ceil(select_ratio * n) by latest val; with cut_groups="batch", of each group of
        equal batch size (n: the group's size), so ranks compare equal optimizer steps."""
        groups: dict[int, list[JobHistory]] = {}
        for h in warmed.values():
            groups.setdefault(h.job.batch_size if self.cut_groups != "none" else 0, []).append(h)
        if self.cut_groups == "batch+all":
            groups[-1] = list(warmed.values())
        kept: dict[str, JobHistory] = {}
        for _, hs in sorted(groups.items()):
            keep = max(1, math.ceil(self.select_ratio * len(hs) - 1e-9))
            kept.update((h.job.job_id, h) for h in sorted(hs, key=rank_key)[:keep])
        return [h.job.job_id for h in sorted(kept.values(), key=rank_key)]
