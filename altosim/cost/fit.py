"""Step time as the larger of a host floor and a GPU term, fitted to a CostProfile's rows.

A fused step is issued by the host and run by the GPU at the same time, so it takes about the
longer of the two: the host's issue time grows with the number of adapters (per-adapter
bookkeeping, losses, optimizer groups) and hardly with tokens; the GPU's grows with the tokens
and their LoRA rank. So, per (model, GPU type):

    step_ms = max(h0 + h1 * A,  g0 + T * (c + k * r)),   T = A * b * L tokens, r = mean rank.

On an H200 (2026-12-03) the Llama-3.2-1B shape (4 layers) sits on the host floor (25-50 ms) below
~8k tokens and on the GPU line (~4 ms per 1k tokens) above, which a multilinear interpolation of
the grid (`altosim.cost.profile`) can only follow at measured points; SmolLM2-135M is on its host floor
everywhere. The two lines are fitted by least squares on relative error, the rows split between them at the
token count that fits best after each split is refined (a hinge fit; exact when the rows lie on the two lines). Slopes are
kept >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from altosim.schemas.cost import CostRecord

MAX_REFINE = 20  # reassignment rounds after the threshold search
MIN_GPU_ROWS = 3  # a GPU line through fewer rows fits noise (a host-bound profile's two slowest points)


@dataclass(frozen=True)
class HostGpuFit:
    """Fitted coefficients of one (model, GPU type), from `rows` rows. Without a GPU line (all rows
    on the host floor) g0, c and k are 0."""

    h0: float
    h1: float
    g0: float
    c: float
    k: float
    rows: int

    def host_ms(self, adapters: float) -> float:
        return self.h0 + self.h1 * adapters

    def gpu_ms(self, adapters: float, mean_rank: float, per_adapter_batch: float, seq_len: float) -> float:
        t = adapters * per_adapter_batch * seq_len
        return self.g0 + t * (self.c + self.k * mean_rank)

    def predict(self, adapters: float, mean_rank: float, per_adapter_batch: float, seq_len: float) -> float:
        return max(self.host_ms(adapters), self.gpu_ms(adapters, mean_rank, per_adapter_batch, seq_len))


def _wls(x: np.ndarray, y: np.ndarray, nonneg: Sequence[int]) -> np.ndarray:
    """Least squares on relative error (rows weighted by 1/y), the columns `nonneg` kept >= 0 (a
    column whose coefficient comes out negative is dropped and the rest refitted: a slope that
    would fall with more work is noise, and extrapolating it goes wrong); zeros without rows."""
    coef = np.zeros(x.shape[1])
    if len(y) == 0:
        return coef
    w = 1.0 / y
    cols = list(range(x.shape[1]))
    while cols:
        sol, *_ = np.linalg.lstsq(x[:, cols] * w[:, None], y * w, rcond=None)
        bad = [c for c, v in zip(cols, sol) if c in nonneg and v < 0]
        if not bad:
            coef[cols] = sol
            break
        cols.remove(min(bad, key=lambda c: sol[cols.index(c)]))
    return coef


def fit_host_gpu(rows: Sequence[CostRecord]) -> HostGpuFit:
    """Fit `HostGpuFit` to the parallel-degree-1 rows of one (model, GPU type): for every token
    threshold, the rows at or above it fit the GPU line and the rest the host line; the threshold
    whose max() has the least squared relative error wins (no threshold: the host line alone)."""
    rows = [r for r in rows if r.parallel_degree == 1]
    if len(rows) < 2:
        raise ValueError(f"rows: need >= 2 measured points to fit, got {len(rows)}")
    a = np.array([r.adapters for r in rows], float)
    rank = np.array([r.mean_rank for r in rows], float)
    t = a * np.array([r.per_adapter_batch for r in rows], float) * np.array([r.seq_len for r in rows], float)
    y = np.array([r.step_ms for r in rows], float)
    xh = np.column_stack([np.ones_like(a), a])
    xg = np.column_stack([np.ones_like(t), t, t * rank])

    def fit(on_gpu: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        host = _wls(xh[~on_gpu], y[~on_gpu], (0, 1))
        gpu = _wls(xg[on_gpu], y[on_gpu], (1, 2)) if on_gpu.any() else np.array([-np.inf, 0.0, 0.0])
        return float(np.sum(((np.maximum(xh @ host, xg @ gpu) - y) / y) ** 2)), host, gpu

    def valid(on_gpu: np.ndarray) -> bool:
        return not 0 < on_gpu.sum() < MIN_GPU_ROWS

    def refine(best: tuple[float, np.ndarray, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
        for _ in range(MAX_REFINE):  # rows move to the line that predicts more for them (adapters, rank count)
            on_gpu = xg @ best[2] > xh @ best[1]
            if not valid(on_gpu):
                break
            cand = fit(on_gpu)
            if cand[0] >= best[0] - 1e-12:
                break
            best = cand
        return best

    # rows with >= tau tokens on the GPU line (inf: none), each tau refined, the best kept: which
    # line a row is on depends on its adapters too (the host line rises with them), so the best
    # threshold alone can refine into a worse split than another's (h1 = 0.5 ms/adapter, 2026-12-03)
    _, host, gpu = min((refine(fit(t >= tau)) for tau in [np.inf, *sorted(set(t))] if valid(t >= tau)),
                       key=lambda f: f[0])
    h0, h1 = (float(v) for v in host)
    g0, c, k = (float(v) for v in gpu)
    return HostGpuFit(h0, h1, g0 if np.isfinite(g0) else 0.0, c, k, len(rows))


class HostGpuPredictor:
    """A step predictor (`CostRecord -> ms`) from fits per (model, GPU type) of the fit rows."""

    def __init__(self, rows: Sequence[CostRecord]) -> None:
        groups: dict[tuple[str, str], list[CostRecord]] = {}
        for r in rows:
            groups.setdefault((r.model.lower(), r.gpu_type.lower()), []).append(r)
        self.fits = {key: fit_host_gpu(g) for key, g in groups.items() if len(g) >= 2}

    def __call__(self, r: CostRecord) -> float:
        fit = self.fits.get((r.model.lower(), r.gpu_type.lower()))
        if fit is None:
            raise ValueError(f"model: no profile rows for {r.model!r} on {r.gpu_type!r}")
        return fit.predict(r.adapters, r.mean_rank, r.per_adapter_batch, r.seq_len)
