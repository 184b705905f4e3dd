"""What a cohort cut ranks by and how far apart two jobs must be: pure functions of one job's
first n reports (its evaluations up to a rung), with time in budget fractions."""

from __future__ import annotations

import math

import numpy as np

from altosim.policy.early_exit.base import fraction, latest_val
from altosim.policy.types import JobHistory, TaskSpec

MIN_NOISE_POINTS = 3  # a line through fewer points leaves no residual to measure jitter


def evaluations(hist: JobHistory, n: int, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """(budget fraction, val) of the job's finite evaluations among its first n reports."""
    fs, vs = [], []
    for s, v in zip(hist.samples[:n], hist.val[:n]):
        if v is not None and math.isfinite(v):
            fs.append(fraction(task, s))
            vs.append(v)
    return np.asarray(fs, dtype=float), np.asarray(vs, dtype=float)


def signal(hist: JobHistory, n: int, task: TaskSpec, rank_by: str) -> float:
    """The job's cut signal from its first n reports (lower is better; NaN: none).

    `latest`: its last val; a NaN/inf last val stays NaN (the job is ranked last).
    `best`: its lowest finite val so far.
    `extrapolated`: val ~ a * f**b fitted by least squares in log-log over the evaluations in
    the second half of the elapsed budget (at least the last 3), read at f = 1 with b <= 0
    (a job that got worse is not extrapolated to get better); fewer than 3 points: `latest`.
    """
    last = latest_val(hist, n)
    if rank_by == "latest" or not math.isfinite(last):
        return last
    fs, vs = evaluations(hist, n, task)
    if rank_by == "best":
        return float(vs.min())
    window = fs >= fs[-1] / 2
    if window.sum() < 3:
        window = np.arange(len(fs)) >= len(fs) - 3
    x, y = fs[window], vs[window]
    if len(x) < 3 or np.any(y <= 0) or np.any(x <= 0) or np.ptp(np.log(x)) == 0:
        return last
    slope, icpt = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(icpt)) if slope < 0 else float(np.exp(np.log(y).mean()))  # log f = 0 at f = 1


def noise(hist: JobHistory, n: int, task: TaskSpec, span: float) -> float:
    """The job's relative val jitter up to report n: the residual standard deviation of a
    power law (a line in log val vs log budget fraction) fitted to its evaluations in the last
    `span` of the budget (at least its last MIN_NOISE_POINTS); 0 with fewer points. A smooth
    learning curve leaves little residual at any evaluation density; evaluation noise stays."""
    fs, vs = evaluations(hist, n, task)
    keep = (fs > 0) & (vs > 0)
    fs, vs = fs[keep], vs[keep]
    if len(fs) < MIN_NOISE_POINTS:
        return 0.0
    window = fs >= fs[-1] - span - 1e-12
    if window.sum() < MIN_NOISE_POINTS:
        window = np.arange(len(fs)) >= len(fs) - MIN_NOISE_POINTS
    x, y = np.log(fs[window]), np.log(vs[window])
    if np.ptp(x) == 0:
        return 0.0
    resid = y - np.polyval(np.polyfit(x, y, 1), x)
    return float(math.sqrt(float(resid @ resid) / (len(x) - 2)))
