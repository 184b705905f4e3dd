"""Step-time check: a predictor fitted on part of a CostProfile, scored on the rows held out.

A predictor is a plain callable `predict_step_ms(record) -> float` (milliseconds of the step a
CostRecord describes; its own `step_ms` is ignored), made from the fit rows by a factory. The
default factory is the simulator's own cost model built on the fit rows (profile-backed where
they cover the row's model and GPU type, analytic elsewhere); `analytic_predictor` ignores the
rows and is the reference.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import numpy as np

from altosim.cost.fit import HostGpuPredictor
from altosim.cost.model import CostModel, cost_model_for, cost_model_from_config
from altosim.cost.profile import AXES
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import RunConfig
from altosim.schemas.cost import CostProfile, CostRecord

StepPredictor = Callable[[CostRecord], float]  # one step's wall time, ms
PredictorFactory = Callable[[CostProfile], StepPredictor]  # built from the fit rows only


def _cost(gpu_type: str, profile: CostProfile | None, link_gbps: float = 400.0,
          gpu_memory_gb: float | None = None, method: str = "interp") -> CostModel:
    return cost_model_for(gpu_type, link_gbps, gpu_memory_gb, profile=profile, method=method)


def _layers(profile: CostProfile | None, model: str) -> int | None:
    """The depth `model` was profiled at when truncated (None: full depth)."""
    for k, v in (profile.layers if profile is not None else {}).items():
        if k.lower() == model.lower():
            return int(v)
    return None


class CostPredictor:
    """The simulator's cost model on the fit rows, asked about one CostRecord; counts the
    predictions that left the profile's measured range (`extrapolated`)."""

    def __init__(self, fit: CostProfile | None) -> None:
        self.fit = fit
        self.models: dict[str, CostModel] = {}
        self.extrapolated = 0

    def __call__(self, r: CostRecord) -> float:
        cost = self.models.get(r.gpu_type)
        if cost is None:
            cost = self.models[r.gpu_type] = _cost(r.gpu_type, self.fit)
        if r.parallel_degree == 1:  # at the depth the row was measured at
            est = cost.single_step(r.model, r.adapters, r.mean_rank, r.per_adapter_batch, r.seq_len,
                                   layers=_layers(self.fit, r.model))
            self.extrapolated += est.extrapolated
            return 1e3 * est.seconds
        # LoRA FLOPs are linear in rank: every adapter at the mean rank gives the group's sum
        jobs = tuple(JobSpec(f"q/j{i}", "q", 1e-4, r.mean_rank, r.per_adapter_batch)  # type: ignore[arg-type]
                     for i in range(r.adapters))
        task = TaskSpec("q", 0.0, r.model, "q", r.parallel_degree, jobs, 1, seq_len=r.seq_len)
        return 1e3 * cost.step_time(task, jobs)


def cost_predictor(fit: CostProfile | None) -> StepPredictor:
    """The default factory: the simulator's cost model built on the fit rows."""
    return CostPredictor(fit)


def hostgpu_predictor(fit: CostProfile) -> StepPredictor:
    """max(host floor, GPU line) fitted to the fit rows per (model, GPU type) (altosim.cost.fit)."""
    return HostGpuPredictor(fit.rows)


def analytic_predictor(fit: CostProfile | None = None) -> StepPredictor:
    """The analytic CostModel (it ignores the fit rows: nothing to fit)."""
    return cost_predictor(None)


def model_cost(cfg: RunConfig | None, profile: CostProfile | None, method: str = "interp") -> CostModel:
    """The step costs a `model` replay uses: the config's cost model (as `alto simulate` builds
    it), on `profile` when one is given, read by `method` ("interp" or "hostgpu")."""
    if cfg is None:
        return _cost("H100", profile, method=method)
    if profile is None:
        return cost_model_from_config(cfg)
    c = cfg.cluster
    return _cost(c.gpu_type, profile, c.link_gbps / 8, c.gpu_memory_gb, method)


def best_method(errors: dict[str, list[dict[str, Any]]], models: set[str]) -> tuple[str, str]:
    """The profile reading ("interp" or "hostgpu") whose held-out median error is lower, over the
    run's models (mean of their medians), and why: chosen on the profile's own held-out rows, never
    on the run being checked. `errors`: method -> step_time_errors rows."""
    score = {}
    for m, rows in errors.items():
        meds = [e["median_rel_err"] for e in rows if e["model"].lower() in models]
        if meds:
            score[m] = sum(meds) / len(meds)
    if not score:
        return "interp", "no held-out rows of the run's models: interpolation"
    best = min(score, key=lambda m: (score[m], m != "interp"))
    return best, "; ".join(f"{m} {v:.1%}" for m, v in sorted(score.items())) + " held-out median error"



def interior(profile: CostProfile) -> list[int]:
    """Rows strictly inside their (model, GPU type)'s measured range on every axis that has at
    least 3 measured values: held out, they are interpolated, not extrapolated."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(profile.rows):
        groups[(r.model.lower(), r.gpu_type.lower())].append(i)
    keep = []
    for idx in groups.values():
        ranges = {}
        for a in AXES:
            vals = sorted({getattr(profile.rows[i], a) for i in idx})
            if len(vals) >= 3:
                ranges[a] = (vals[0], vals[-1])
        keep += [i for i in idx if all(lo < getattr(profile.rows[i], a) < hi for a, (lo, hi) in ranges.items())]
    return sorted(keep)


def split_profile(profile: CostProfile, every: int = 5,
                  among: list[int] | None = None) -> tuple[CostProfile, list[CostRecord]]:
    """Every `every`-th row (of `among`, default all rows) is held out: the `every`-th, the
    2*`every`-th, ... (stable for a given file); the rest is the fit profile."""
    if every < 2:
        raise ValueError(f"every: must be >= 2 (one row in `every` is held out), got {every}")
    cand = list(range(len(profile.rows))) if among is None else among
    held_idx = set(cand[every - 1::every])
    fit = [r for i, r in enumerate(profile.rows) if i not in held_idx]
    held = [r for i, r in enumerate(profile.rows) if i in held_idx]
    return profile.model_copy(update={"rows": fit}), held


def step_time_errors(profile: CostProfile, factory: PredictorFactory = cost_predictor, every: int = 5,
                     among: list[int] | None = None) -> list[dict[str, Any]]:
    """Per model: held-out points, median and p90 of |predicted - measured| / measured, and how
    many predictions were extrapolations (when the predictor counts them)."""
    fit, held = split_profile(profile, every, among)
    if not held:
        raise ValueError(f"profile: {len(profile.rows)} rows leave none held out at every={every}")
    predict = factory(fit)
    errs: dict[str, list[float]] = defaultdict(list)
    extra: dict[str, int] = defaultdict(int)
    for r in held:
        before = getattr(predict, "extrapolated", 0)
        errs[r.model].append(abs(predict(r) - r.step_ms) / r.step_ms)
        extra[r.model] += getattr(predict, "extrapolated", 0) - before
    return [{"model": m, "points": len(e), "median_rel_err": float(np.median(e)),
             "p90_rel_err": float(np.percentile(e, 90)), "extrapolated": extra[m]} for m, e in sorted(errs.items())]
