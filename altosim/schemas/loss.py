"""Loss traces: one recorded (or generated) loss curve per job config, queried by progress fraction.

The simulator asks a curve for the mean train loss over a slice of a job's run and for the val
loss at an evaluation point, very often. Curves are indexed by *progress fraction*
f = samples / samples[-1] in [0, 1], so one curve can be replayed for any sample budget or
duration. Cumulative trapezoid integrals are precomputed, so each query is one binary search.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from altosim.policy.types import JobSpec


def _interp(f: float, xs: list[float], ys: list[float]) -> float:
    """np.interp for one point on plain lists (constant outside; ~10x faster than numpy)."""
    if not xs:
        return math.nan
    if f <= xs[0]:
        return ys[0]
    if f >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, f)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (f - x0) / (x1 - x0)


@dataclass(eq=False)
class LossCurve:
    """One job config's curve. `val`/`metric` hold NaN where the job was not evaluated.

    Train loss may be NaN or inf (a diverged run); val is NaN only where not evaluated.
    Queries before the first logged point return the first value (constant extrapolation).
    """

    lr: float
    rank: int
    batch_size: int
    alpha: float | None
    samples: np.ndarray
    train: np.ndarray
    val: np.ndarray
    metric: np.ndarray | None = None
    steps: np.ndarray | None = None  # optimizer step of each point; None -> samples / batch_size
    _x: np.ndarray = field(init=False, repr=False)
    _cum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.samples = np.asarray(self.samples, dtype=np.float64)
        self.train = np.asarray(self.train, dtype=np.float64)
        self.val = np.asarray(self.val, dtype=np.float64)
        n = len(self.samples)
        if n == 0:
            raise ValueError("a loss curve needs at least one point")
        if len(self.train) != n or len(self.val) != n:
            raise ValueError("samples, train and val must have the same length")
        if np.any(np.diff(self.samples) <= 0) or self.samples[0] < 0:
            raise ValueError("samples must be >= 0 and strictly increasing")
        if self.metric is not None:
            self.metric = np.asarray(self.metric, dtype=np.float64)
            if len(self.metric) != n:
                raise ValueError("metric must have the same length as samples")
            if np.all(np.isnan(self.metric)):
                self.metric = None
        if self.steps is None:
            self.steps = np.ceil(self.samples / self.batch_size).astype(np.int64)
        self.steps = np.asarray(self.steps, dtype=np.int64)
        total = self.samples[-1] if self.samples[-1] > 0 else 1.0
        self._x = self.samples / total
        x, y = self._x, self.train
        seg = 0.5 * (y[1:] + y[:-1]) * np.diff(x)
        with np.errstate(invalid="ignore"):
            self._cum = np.concatenate([[0.0], np.cumsum(seg)])
        self._xl = self._x.tolist()
        self._yl = self.train.tolist()
        self._cl = self._cum.tolist()
        ev = ~np.isnan(self.val)
        self._vx, self._vy = self._x[ev], self.val[ev]
        self._vxl, self._vyl = self._vx.tolist(), self._vy.tolist()
        if self.metric is not None:
            em = ~np.isnan(self.metric)
            self._mx, self._my = self._x[em], self.metric[em]
            self._mxl, self._myl = self._mx.tolist(), self._my.tolist()

    @property
    def config(self) -> tuple[float, int, int]:
        return (self.lr, self.rank, self.batch_size)

    def _train_at(self, f: float, i: int) -> float:
        """Interpolated train loss at f, given i = bisect_right(x, f) in 1..n-1."""
        x0, x1 = self._xl[i - 1], self._xl[i]
        y0, y1 = self._yl[i - 1], self._yl[i]
        return y0 + (y1 - y0) * (f - x0) / (x1 - x0)

    def _integral(self, f: float, i: int | None = None) -> float:
        """Integral of the interpolated train loss from x[0] to f (constant outside); `i`:
        bisect_right(x, f) when the caller has it."""
        xl = self._xl
        if f <= xl[0]:
            return (f - xl[0]) * self._yl[0]
        if f >= xl[-1]:
            return self._cl[-1] + (f - xl[-1]) * self._yl[-1]
        if i is None:
            i = bisect.bisect_right(xl, f)
        yf = self._train_at(f, i)
        return self._cl[i - 1] + 0.5 * (self._yl[i - 1] + yf) * (f - xl[i - 1])

    def train_at(self, f: float) -> float:
        xl = self._xl
        if f <= xl[0]:
            return self._yl[0]
        if f >= xl[-1]:
            return self._yl[-1]
        return self._train_at(f, bisect.bisect_right(xl, f))

    def train_mean(self, f0: float, f1: float) -> float:
        """Mean train loss between progress fractions f0 < f1 (NaN once the run has diverged)."""
        if f1 < f0:
            raise ValueError(f"train_mean needs f0 <= f1, got {f0} > {f1}")
        if f1 - f0 < 1e-12:
            return self.train_at(f0)
        xl = self._xl
        i0, i1 = bisect.bisect_right(xl, f0), bisect.bisect_right(xl, f1)
        if i0 == i1:
            # one linear piece (or one constant end): the mean is exact, and a difference of
            # two cumulative integrals would lose digits to cancellation on short spans
            return 0.5 * (self.train_at(f0) + self.train_at(f1))
        return (self._integral(f1, i1) - self._integral(f0, i0)) / (f1 - f0)

    def val_at(self, f: float) -> float:
        """Val loss at progress f, interpolated between evaluated points (NaN if never evaluated)."""
        return _interp(f, self._vxl, self._vyl)

    def metric_at(self, f: float) -> float | None:
        """Task metric (higher is better) at progress f; None when the curve has no metric."""
        if self.metric is None:
            return None
        return _interp(f, self._mxl, self._myl)

    def final_val(self) -> float:
        return float(self._vy[-1]) if len(self._vy) else math.nan

    def best_val(self) -> float:
        finite = self._vy[np.isfinite(self._vy)]
        return float(finite.min()) if len(finite) else math.nan

    def same_data(self, other: "LossCurve", rtol: float = 0.0) -> bool:
        """Equal configs and arrays (NaN == NaN); rtol > 0 for rounded copies."""
        if self.config != other.config or self.alpha != other.alpha:
            return False
        pairs = [(self.samples, other.samples), (self.train, other.train), (self.val, other.val),
                 (self.steps, other.steps)]
        if (self.metric is None) != (other.metric is None):
            return False
        if self.metric is not None:
            pairs.append((self.metric, other.metric))
        return all(a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=0, equal_nan=True)
                   for a, b in pairs)


def _key(lr: float, rank: int, batch: int) -> tuple[float, int, int]:
    return (float(f"{lr:.6g}"), int(rank), int(batch))


@dataclass(eq=False)
class LossTraceSet:
    """The curves of one (model, dataset) grid, with provenance.

    `curve_for(job)` matches (lr, rank, batch_size) exactly (lr to 6 significant digits; alpha,
    dropout and seed are ignored). Otherwise it returns the nearest curve by Euclidean distance
    in (log10 lr, log2 rank, log2 batch_size) space, ties broken by the curves' order, so that
    a job outside the recorded grid still replays the most similar recorded run.
    """

    name: str
    model: str
    dataset: str
    synthetic: bool
    source: str
    curves: list[LossCurve]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.curves:
            raise ValueError(f"loss-trace set {self.name!r} has no curves")
        self._exact: dict[tuple[float, int, int], LossCurve] = {}
        for c in self.curves:
            self._exact.setdefault(_key(c.lr, c.rank, c.batch_size), c)
        self._pts = np.array(
            [[math.log10(c.lr), math.log2(c.rank), math.log2(c.batch_size)] for c in self.curves]
        )
        self._near: dict[tuple[float, int, int], LossCurve] = {}
        self._samples_per_job = int(max(c.samples[-1] for c in self.curves))

    def curve_for(self, job: JobSpec) -> LossCurve:
        key = _key(job.lr, job.rank, job.batch_size)
        hit = self._exact.get(key) or self._near.get(key)
        if hit is not None:
            return hit
        p = np.array([math.log10(job.lr), math.log2(job.rank), math.log2(job.batch_size)])
        best = self.curves[int(np.argmin(((self._pts - p) ** 2).sum(axis=1)))]
        self._near[key] = best
        return best

    def grid(self) -> tuple[list[float], list[int], list[int]]:
        """Distinct (lr, rank, batch_size) values, sorted."""
        return (sorted({c.lr for c in self.curves}), sorted({c.rank for c in self.curves}),
                sorted({c.batch_size for c in self.curves}))

    @property
    def samples_per_job(self) -> int:
        """The longest curve's sample count (the budget the set was recorded at)."""
        return self._samples_per_job

    def best_curve(self, by: str = "final") -> LossCurve:
        """The 'true best' config for regret: lowest final val loss (`by="final"`) or lowest val
        loss at any evaluation (`by="min"`, what a best-checkpoint restore keeps)."""
        if by not in ("final", "min"):
            raise ValueError(f"by must be 'final' or 'min', got {by!r}")
        vals = [c.final_val() if by == "final" else c.best_val() for c in self.curves]
        vals = [v if math.isfinite(v) else math.inf for v in vals]
        return self.curves[int(np.argmin(vals))]
