"""Duration predictions for the inter-task planner that know what early exit will keep.

A task's worst-case duration trains every job to its whole budget; early exit trains far less.
The planner needs the time a task will really hold its GPUs, so it is predicted from the
early-exit policy's cohort cuts (its rungs, as budget fractions, and the share of the live jobs
each cut keeps), then calibrated by what finished tasks took:

- `expected_budgets(rungs, keep, cuts_done, progress)`: the per-job budgets still to train,
  in expectation: every live job trains to the next rung, the cut keeps
  max(1, ceil(keep * n)) of the n live jobs, the survivors train on to the rung after, and so
  on to the end of the budget. Before any curve (all progress 0, no cut done) divided by the
  number of jobs it is the policy's expected kept fraction; during a run it follows the task's
  own curves (jobs stopped by a cut or by a per-job rule, and how far each got).
- `Calibration`: finished tasks' actual / predicted-at-start durations (per-job exits, group
  packing and the ceil of small cohorts all move it); predictions are scaled by its mean, and
  its relative spread (coefficient of variation; `prior_spread` before `min_seen` tasks) tells
  the planner how far one task's prediction may be off.

Time is taken as proportional to samples trained (the worst case is the time of all samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def expected_budgets(rungs: Sequence[float], keep: float, cuts_done: int, progress: Sequence[float]) -> float:
    """Expected per-job budgets still to train for the live jobs at `progress` (each the share
    of its budget trained, in [0, 1]) with `cuts_done` of the cuts at `rungs` behind.

    Always within [0, sum(1 - p)]: never more than training every live job to its end."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    prog = [min(1.0, max(0.0, p)) for p in progress]
    owed = sum(1.0 - p for p in prog)
    gates = [g for g in rungs[cuts_done:] if 0 < g < 1] + [1.0]
    if not prog or keep >= 1 or len(gates) == 1:
        return owed
    # to the next rung: each live job from where it is
    left = sum(max(0.0, gates[0] - p) for p in prog)
    n = len(prog)
    beyond = sorted(prog, reverse=True)  # survivors: a guess, the furthest along (with hold at gate all sit at the rung)
    for k in range(1, len(gates)):
        n = max(1, math.ceil(keep * n - 1e-9))
        lo, hi = gates[k - 1], gates[k]
        left += sum(hi - min(hi, max(lo, p)) for p in beyond[:n])
    return min(left, owed)


def prior_fraction(rungs: Sequence[float], keep: float, n_jobs: int) -> float:
    """Expected share of a task's samples trained, before any curve (n_jobs jobs at 0)."""
    if n_jobs <= 0:
        return 1.0
    return expected_budgets(rungs, keep, 0, [0.0] * n_jobs) / n_jobs


@dataclass
class Calibration:
    """Mean of finished tasks' actual / predicted duration, within [lo, hi] (1.0 before any)."""

    lo: float = 0.25
    hi: float = 4.0
    prior_spread: float = 0.25
    min_seen: int = 3
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, actual: float, predicted: float) -> None:
        """One finished task (O(1): running sums, no list that grows with the trace)."""
        if predicted > 0 and math.isfinite(actual) and actual >= 0:
            r = min(self.hi, max(self.lo, actual / predicted))
            self.n += 1
            self.total += r
            self.total_sq += r * r

    @property
    def factor(self) -> float:
        return self.total / self.n if self.n else 1.0

    @property
    def spread(self) -> float:
        """Coefficient of variation of the ratios (`prior_spread` before `min_seen` of them)."""
        if self.n < self.min_seen:
            return self.prior_spread
        mean = self.total / self.n
        var = max(0.0, self.total_sq / self.n - mean * mean)
        return math.sqrt(var) / mean


__all__ = ["Calibration", "expected_budgets", "prior_fraction"]
