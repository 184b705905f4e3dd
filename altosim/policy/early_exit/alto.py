"""ALTO's loss-aware early exit: the paper's per-job rules plus noise-aware halving cuts.

Per job (every report, `judge`), on the train loss smoothed by an EMA and the raw val loss:
- Diverging: the least-squares slopes, against the budget fraction, of the last `w` EMA-train
  and val points are both >= `tau_slope` for `div_patience` of the budget in a row. A NaN/inf
  loss exits at once and is never a result. A trip while val is still within `div_margin` of
  the job's best is a stall, not a blow-up: it exits as overfitting and keeps the best snapshot;
  with `diverging_keeps_best` a real divergence keeps it too (the paper discards it).
- Overfitting: (val - ema) / ema > `tau_gap` for `ovf_patience` of the budget in a row and,
  with `gap_requires_plateau`, no new best val for `plateau_ratio` of the budget: exit and keep
  the best-val snapshot. A train/val gap alone is normal late in fine-tuning.
Cohort cuts (`select`): at each rung, budget fraction `warmup_ratio * cut_spacing**c`, the live
jobs are compared at equal samples (each by its reports up to its gate, `gate_step`, whatever it
trained since), by `rank_by`: the latest val there, the best so far, or a power-law fit of val
against samples extrapolated to the end of the budget. The top ceil(`select_ratio` * n) go on,
and so does every job not separable from the k-th within the measured noise: its signal is
within `noise_z` * sqrt(s_j^2 + s_k^2) of the k-th's, s_j the jitter of job j's own recent val
(the relative residual of a power law fitted to its evaluations in the last `noise_span` of the
budget) times its signal, never below `noise_floor` of its signal (a job with fewer than 3
evaluations has no measured jitter).
Early rungs, where curves still bend and jobs sit close, keep more; late ones cut at the ratio.

Why: at equal samples small batches lead early (more optimizer steps per sample) and the
eventual winners of real grids rank in the middle until a third of training or later, and val
on a small validation set jitters by a few percent between evaluations, so a cut by rank alone
drops late bloomers. The parameters were chosen by experiments/early_exit_loto.py
(leave-one-task-out on every real trace set; results/early_exit_loto.md); the earlier design
notes are in results/early_exit_design_notes.md. `Alto(**PAPER_PARAMS)` is the paper's rule.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from altosim.policy.early_exit.base import (
    CONTINUE, DIVERGING, EarlyExitPolicy, Verdict, bad_loss, fraction, gate_step, lsq_slopes, upto,
)
from altosim.policy.early_exit.signals import noise, signal
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, TaskSpec

# the paper's Algorithm 1 (one cut at 5% keeping a quarter by latest val; the gap alone is
# overfitting; diverging jobs are discarded)
PAPER_PARAMS: dict[str, object] = {
    "warmup_ratio": 0.05, "select_ratio": 0.25, "cuts": 1, "hold_at_gate": False, "noise_z": 0.0,
    "rank_by": "latest", "gap_requires_plateau": False, "div_margin": 0.0, "diverging_keeps_best": False,
    "div_patience": 0.02, "ovf_patience": 0.02,
}
# the default until 2026-12-04: two cuts keeping a quarter, at 2% and 24%, by rank alone, no hold
PREVIOUS_PARAMS: dict[str, object] = {
    "warmup_ratio": 0.02, "select_ratio": 0.25, "cuts": 2, "cut_spacing": 12.0, "hold_at_gate": False,
    "noise_z": 0.0, "rank_by": "latest", "div_patience": 0.02, "ovf_patience": 0.02, "plateau_ratio": 0.15,
}
OVERFITTING = Verdict(True, "overfitting", restore_best=True)
DIVERGING_KEEP_BEST = Verdict(True, "diverging", restore_best=True)
CUT_GROUPS = ("none", "batch", "batch+all")


@dataclass
class _Track:
    """One job's running signals: EMA, the last w (fraction, EMA, val), the streak starts."""

    w: int
    ema: float | None = None
    pts: deque[tuple[float, float, float]] = field(init=False)
    prev_f: float = 0.0  # budget fraction of the previous evaluation
    div_from: float | None = None  # fraction before the rising streak began; None: no streak
    ovf_from: float | None = None
    best: float = math.inf
    best_f: float = 0.0

    def __post_init__(self) -> None:
        self.pts = deque(maxlen=self.w)


def _streak(start: float | None, prev_f: float, on: bool) -> float | None:
    """A streak's start after one evaluation: kept while `on`, begun at `prev_f`, else none."""
    return (prev_f if start is None else start) if on else None


@EARLY_EXIT.register("alto")
class Alto(EarlyExitPolicy):
    """Algorithm 1's diverging and overfitting rules in budget fractions, and halving cuts at
    equal samples that keep every job within the measured noise of the k-th (module docstring)."""

    name: ClassVar[str] = "alto"

    w: int = Field(2, ge=2, description="points in the diverging rule's slope fits")
    tau_slope: float = Field(0.1, ge=0, allow_inf_nan=True,
                             description="diverging: slope threshold, loss per whole budget (the paper's "
                                         "0.001 per evaluation at a 1% interval); inf: rule off")
    tau_gap: float = Field(0.1, ge=0, allow_inf_nan=True,
                           description="overfitting: relative gap (val - ema) / ema threshold; inf: rule off")
    div_patience: float = Field(0.05, gt=0, le=1, description="budget share the rising slopes must last")
    ovf_patience: float = Field(0.05, gt=0, le=1, description="budget share the gap must last")
    ema: float = Field(0.5, ge=0, lt=1, description="weight of the past in the train-loss EMA, per report")
    gap_requires_plateau: bool = Field(True, description="overfitting also needs no new best val for plateau_ratio")
    plateau_ratio: float = Field(0.25, gt=0, le=1, description="budget share without a new best val")
    div_margin: float = Field(0.1, ge=0, description="a rising job within this relative margin of its best "
                                                     "has stalled: it exits as overfitting with its best snapshot")
    diverging_keeps_best: bool = Field(True, description="a diverging job keeps its best snapshot as a candidate")
    warmup_ratio: float = Field(0.04, gt=0, le=1, description="budget fraction of the first cut")
    cut_spacing: float = Field(3.0, gt=1, description="each cut sits this many times later than the one before")
    cuts: int = Field(10, ge=0, le=64, description="cohort cuts at most (rungs at or past the budget's end are dropped)")
    select_ratio: float = Field(0.5, gt=0, le=1, description="share of the live jobs a cut keeps by rank")
    noise_z: float = Field(0.0, ge=0, allow_inf_nan=True,
                           description="also keep jobs within noise_z noise units of the k-th (0: rank only)")
    noise_span: float = Field(0.1, gt=0, le=1, description="budget share of recent evaluations that measure a "
                                                           "job's val jitter (at least its last 3)")
    noise_floor: float = Field(0.01, ge=0, le=1, description="least noise, relative to the signal (a job with "
                                                              "too few evaluations to measure jitter gets this)")
    rank_by: Literal["latest", "best", "extrapolated"] = Field(
        "latest", description="cut signal at equal samples: latest val, best so far, or power-law extrapolation")
    hold_at_gate: bool = Field(True, description="suspend a job at a rung until the cut (no sample past it)")
    cut_groups: Literal["none", "batch", "batch+all"] = Field(
        "none", description="rank within equal batch sizes, or both within them and globally")
    _tracks: dict[str, _Track] = PrivateAttr(default_factory=dict)

    def judge(self, hist: JobHistory, i: int, task: TaskSpec) -> Verdict:
        if bad_loss(hist, i):  # as the runtime's JobFailed: a NaN job is never a result
            return DIVERGING
        tracks = self.__pydantic_private__["_tracks"]  # not through pydantic's __getattr__ (hot path)
        s = tracks.get(hist.job.job_id)
        if s is None:
            s = tracks[hist.job.job_id] = _Track(self.w)
        train, val = hist.train[i], hist.val[i]
        # e + (1 - ema) * (x - e): same EMA, but never overshoots x in floating point
        s.ema = train if s.ema is None else s.ema + (1.0 - self.ema) * (train - s.ema)
        if val is None:
            return CONTINUE
        f = fraction(task, hist.samples[i])
        pts = s.pts
        pts.append((f, s.ema, val))
        rising = False
        if len(pts) == self.w:
            ema_slope, val_slope = lsq_slopes(pts)
            rising = ema_slope >= self.tau_slope and val_slope >= self.tau_slope
        gap = (val - s.ema) / s.ema if s.ema > 0 else -math.inf
        s.div_from = _streak(s.div_from, s.prev_f, rising)
        s.ovf_from = _streak(s.ovf_from, s.prev_f, gap > self.tau_gap)
        s.prev_f = f
        if val < s.best:
            s.best, s.best_f = val, f
        if s.div_from is not None and f - s.div_from >= self.div_patience - 1e-9:
            # rising, but still near its best: stalled, not blown up -> keep the best snapshot
            if val < s.best + self.div_margin * abs(s.best):
                return OVERFITTING
            return DIVERGING_KEEP_BEST if self.diverging_keeps_best else DIVERGING
        plateau = not self.gap_requires_plateau or f - s.best_f >= self.plateau_ratio - 1e-9
        if s.ovf_from is not None and f - s.ovf_from >= self.ovf_patience - 1e-9 and plateau:
            return OVERFITTING
        return CONTINUE

    def rungs(self) -> tuple[float, ...]:
        out = [self.warmup_ratio * self.cut_spacing ** c for c in range(self.cuts)]
        return tuple(r for r in out if r < 1.0 - 1e-9)

    def holds_at_gate(self) -> bool:
        return self.hold_at_gate

    def keep_share(self) -> float:
        return self.select_ratio

    def expected_work_fraction(self) -> float:
        """Sum over rungs of the share alive x the rung's length (exits and the noise band
        ignored: a prior, not a prediction)."""
        gates = [*self.rungs(), 1.0]
        work = prev = gates[0]
        for c, g in enumerate(gates[1:], start=1):
            work += self.select_ratio ** c * (g - prev)
            prev = g
        return work

    def select(self, at_rung: Mapping[str, JobHistory], task: TaskSpec, rung: int) -> list[str]:
        """The top ceil(select_ratio * n) at equal samples plus every job within the noise band
        of the k-th; with cut_groups="batch", of each group of equal batch size."""
        frac = self.rungs()[rung] if rung < len(self.rungs()) else 1.0
        sig: dict[str, tuple[float, float]] = {}
        for j, h in at_rung.items():
            n = upto(h, gate_step(task, h.job, frac))
            v = signal(h, n, task, self.rank_by)
            if self.noise_z > 0:  # the noise band is only read with noise_z > 0 (`_keep`)
                rel = max(noise(h, n, task, self.noise_span), self.noise_floor)
                sig[j] = (v, rel * abs(v) if math.isfinite(v) else 0.0)
            else:
                sig[j] = (v, 0.0)
        groups: dict[int, list[str]] = {}
        for j, h in at_rung.items():
            groups.setdefault(h.job.batch_size if self.cut_groups != "none" else 0, []).append(j)
        if self.cut_groups == "batch+all":
            groups[-1] = list(at_rung)
        kept: set[str] = set()
        for _, js in sorted(groups.items()):
            kept |= self._keep(js, sig)
        return sorted(kept, key=lambda j: _order(j, sig))

    def _keep(self, jobs: list[str], sig: Mapping[str, tuple[float, float]]) -> set[str]:
        ranked = sorted(jobs, key=lambda j: _order(j, sig))
        k = max(1, math.ceil(self.select_ratio * len(ranked) - 1e-9))
        kth_v, kth_s = sig[ranked[k - 1]]
        keep = set(ranked[:k])
        if self.noise_z > 0 and math.isfinite(kth_v):
            for j in ranked[k:]:
                v, s = sig[j]
                if math.isfinite(v) and v - kth_v <= self.noise_z * math.hypot(s, kth_s):
                    keep.add(j)
        return keep


def _order(job_id: str, sig: Mapping[str, tuple[float, float]]) -> tuple[bool, float, str]:
    """Finite signal ascending, NaN/inf last, ties by job id."""
    v = sig[job_id][0]
    return (not math.isfinite(v), v if math.isfinite(v) else 0.0, job_id)
