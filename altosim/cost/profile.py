"""Step time from a measured CostProfile: multilinear interpolation over the profiled grid.

The rows of one (model, GPU type) at parallel degree 1 form a grid over four axes, taken in this
order: adapters A, mean LoRA rank r, per-adapter batch b, sequence length L. A query is answered
axis by axis: on the first axis pick the two measured values that bracket the query, answer the
sub-query on each (recursively, over the rows with that value), and blend the two answers
linearly in the raw coordinate. Why linear in raw A, b, L and r (not in log tokens): a fused step
costs about `floor + c * A * b * L * (1 + k * r)`, which is multilinear in these four numbers,
so multilinear interpolation reproduces it exactly between grid points; it is also exact at
every measured point, and monotone between two points when the measurements are.

Holes in the grid (out-of-memory points, an uneven grid) are handled by the recursion: each
sub-query only sees the values that exist under it. A coordinate outside its measured range is
an extrapolation: above the range the last segment's slope is continued (never below the edge
value), below it the edge value is used (conservative). Every prediction carries
`extrapolated`, and `ProfileTable.extrapolations` counts them, so nothing is silent.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Sequence

from altosim.cost.fit import HostGpuFit, HostGpuPredictor
from altosim.schemas.cost import CostProfile, CostRecord

AXES = ("adapters", "mean_rank", "per_adapter_batch", "seq_len")


@dataclass(frozen=True)
class Prediction:
    """Milliseconds of one step, and whether any axis left the measured range."""

    step_ms: float
    extrapolated: bool
    source: str = "profile"


METHODS = ("interp", "hostgpu")


@dataclass
class ProfileTable:
    """A CostProfile indexed for queries. The only mutable state is the extrapolation counter.

    `method`: "interp" (multilinear interpolation of the grid, below) or "hostgpu" (the host-floor /
    GPU-line fit of `altosim.cost.fit`, one per (model, GPU type): smoother where identical steps
    jitter, as a host-bound backbone's do; a query outside the measured range of any axis still
    counts as an extrapolation)."""

    profile: CostProfile
    extrapolations: int = 0
    method: str = "interp"
    _groups: dict[tuple[str, str], list[tuple[tuple[float, ...], float]]] = field(default_factory=dict, repr=False)
    _memo: dict[tuple, tuple[float, bool]] = field(default_factory=dict, repr=False)  # the simulator asks often
    _fits: dict[tuple[str, str], HostGpuFit] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: unknown profile method {self.method!r}; known: {', '.join(METHODS)}")
        single = [r for r in self.profile.rows if r.parallel_degree == 1]  # sharded rows are modelled, not
        for r in single:  # interpolated (see altosim.cost.parallel)
            self._groups.setdefault((r.model.lower(), r.gpu_type.lower()), []).append((_coords(r), r.step_ms))
        if self.method == "hostgpu":
            self._fits = HostGpuPredictor(single).fits  # one fit per (model, GPU type), keyed as _groups

    def covers(self, model: str, gpu_type: str) -> bool:
        return (model.lower(), gpu_type.lower()) in self._groups

    def layers(self, model: str) -> int | None:
        """Decoder layers `model` was profiled at when truncated, else None (full depth)."""
        for k, v in self.profile.layers.items():
            if k.lower() == model.lower():
                return v
        return None

    def predict(self, model: str, gpu_type: str, adapters: int, mean_rank: float, per_adapter_batch: float,
                seq_len: int) -> Prediction:
        """Interpolated step time of the profiled model (at its profiled depth)."""
        key = (model.lower(), gpu_type.lower())
        if key not in self._groups:
            raise ValueError(f"model: no profile rows for {model!r} on {gpu_type!r}")
        q = (float(adapters), float(mean_rank), float(per_adapter_batch), float(seq_len))
        for name, v in zip(AXES, q):
            if not v > 0:
                raise ValueError(f"{name}: must be > 0, got {v!r}")
        hit = self._memo.get((key, q))
        if hit is None:
            fit = self._fits.get(key)
            if fit is not None:
                pts = self._groups[key]
                outside = any(not min(c[i] for c, _ in pts) <= v <= max(c[i] for c, _ in pts) for i, v in enumerate(q))
                hit = (fit.predict(*q), outside)
            else:
                hit = _interp(self._groups[key], q, 0)
            self._memo[(key, q)] = hit
        ms, extra = hit
        if extra:
            self.extrapolations += 1
        return Prediction(ms, extra)


def _coords(r: CostRecord) -> tuple[float, ...]:
    return tuple(float(getattr(r, a)) for a in AXES)


def _interp(points: Sequence[tuple[tuple[float, ...], float]], q: tuple[float, ...], axis: int) -> tuple[float, bool]:
    """(value, extrapolated) at q over `points`, resolving axes from `axis` on."""
    if axis == len(q):
        return sum(v for _, v in points) / len(points), False
    values = sorted({c[axis] for c, _ in points})
    x = q[axis]

    def at(v: float) -> tuple[float, bool]:
        return _interp([p for p in points if p[0][axis] == v], q, axis + 1)

    i = bisect_left(values, x)
    if i < len(values) and values[i] == x:
        return at(x)
    if i == 0:  # below the measured range: the edge value
        y, _ = at(values[0])
        return y, True
    if i == len(values):  # above: continue the last segment, never below the edge
        y1, _ = at(values[-1])
        if len(values) == 1:
            return y1, True
        y0, _ = at(values[-2])
        slope = (y1 - y0) / (values[-1] - values[-2])
        return max(y1, y1 + slope * (x - values[-1])), True
    lo, hi = values[i - 1], values[i]
    (y0, e0), (y1, e1) = at(lo), at(hi)
    w = (x - lo) / (hi - lo)
    return (1 - w) * y0 + w * y1, e0 or e1
