"""Step-time check: a predictor fitted on part of a CostProfile, scored on the rows held out.

A predictor is a plain callable `predict_step_ms(record) -> float` (milliseconds of the step a
CostRecord describes; its own `step_ms` is ignored), made from the fit rows by a factory. The
default factory is the simulator's own cost model built on the fit rows (profile-backed where
they cover the row's model and GPU type, analytic elsewhere); `analytic_predictor` ignores the
rows and is the reference.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from altosim.costmodel import CostModel, cost_model_for
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import CostProfile, CostRecord, RunConfig

StepPredictor = Callable[[CostRecord], float]  # one step's wall time, ms
PredictorFactory = Callable[[CostProfile], StepPredictor]  # built from the fit rows only


def _accepts_profile() -> bool:
    return "profile" in inspect.signature(cost_model_for).parameters


def _cost(gpu_type: str, profile: CostProfile | None, link_gbps: float = 400.0,
          gpu_memory_gb: float | None = None) -> CostModel:
    if profile is not None and _accepts_profile():
        return cost_model_for(gpu_type, link_gbps, gpu_memory_gb, profile=profile)  # type: ignore[call-arg]
    return cost_model_for(gpu_type, link_gbps, gpu_memory_gb)


def _layers(profile: CostProfile | None, model: str) -> int | None:
    """The depth `model` was profiled at when truncated (None: full depth)."""
    for k, v in dict(getattr(profile, "layers", {}) or {}).items():
        if k.lower() == model.lower():
            return int(v)
    return None


def cost_predictor(fit: CostProfile | None) -> StepPredictor:
    """The simulator's cost model on the fit rows, asked about one CostRecord."""
    models: dict[str, Any] = {}

    def predict(r: CostRecord) -> float:
        cost = models.get(r.gpu_type)
        if cost is None:
            cost = models[r.gpu_type] = _cost(r.gpu_type, fit)
        single = getattr(cost, "single_step", None)
        if r.parallel_degree == 1 and single is not None:  # at the depth the row was measured at
            try:
                est = single(r.model, r.adapters, r.mean_rank, r.per_adapter_batch, r.seq_len,
                             layers=_layers(fit, r.model))
                return 1e3 * est.seconds
            except TypeError:  # another signature: ask step_time below (full depth)
                pass
        # LoRA FLOPs are linear in rank: every adapter at the mean rank gives the group's sum
        jobs = tuple(JobSpec(f"q/j{i}", "q", 1e-4, r.mean_rank, r.per_adapter_batch)  # type: ignore[arg-type]
                     for i in range(r.adapters))
        task = TaskSpec("q", 0.0, r.model, "q", r.parallel_degree, jobs, 1, seq_len=r.seq_len)
        return 1e3 * cost.step_time(task, jobs)

    return predict


def analytic_predictor(fit: CostProfile | None = None) -> StepPredictor:
    """The analytic CostModel (it ignores the fit rows: nothing to fit)."""
    return cost_predictor(None)


def model_cost(cfg: RunConfig | None, profile: CostProfile | None) -> CostModel:
    """The step costs a `model` replay uses: the config's cost model (as `alto simulate` builds
    it), on `profile` when one is given."""
    if cfg is None:
        return _cost("H100", profile)
    if profile is None:
        from altosim.simulate import make_cost

        return make_cost(cfg)
    c = cfg.cluster
    return _cost(c.gpu_type, profile, c.link_gbps / 8, c.gpu_memory_gb)


def read_profile(path: str | Path) -> CostProfile:
    """A CostProfile from .csv (+ .meta.json sidecar) or .json; bad input is one InputError."""
    from pydantic import ValidationError

    from altosim.errors import InputError, from_validation_error
    from altosim.traces_io import read_cost_profile
    from altosim.traces_io.files import read_text

    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "--profile", "no such file")
    if p.suffix == ".json":
        try:
            return CostProfile.model_validate_json(read_text(p))
        except ValidationError as e:
            raise from_validation_error(e, str(p)) from None
    return read_cost_profile(p)


def split_profile(profile: CostProfile, every: int = 5) -> tuple[CostProfile, list[CostRecord]]:
    """Row i is held out when i % every == every - 1 (stable for a given file)."""
    if every < 2:
        raise ValueError(f"every: must be >= 2 (one row in `every` is held out), got {every}")
    fit = [r for i, r in enumerate(profile.rows) if i % every != every - 1]
    held = [r for i, r in enumerate(profile.rows) if i % every == every - 1]
    return profile.model_copy(update={"rows": fit}), held


def step_time_errors(profile: CostProfile, factory: PredictorFactory = cost_predictor,
                     every: int = 5) -> list[dict[str, Any]]:
    """Per model: held-out points, median and p90 of |predicted - measured| / measured."""
    fit, held = split_profile(profile, every)
    if not held:
        raise ValueError(f"profile: {len(profile.rows)} rows leave none held out at every={every}")
    predict = factory(fit)
    errs: dict[str, list[float]] = defaultdict(list)
    for r in held:
        errs[r.model].append(abs(predict(r) - r.step_ms) / r.step_ms)
    return [{"model": m, "points": len(e), "median_rel_err": float(np.median(e)),
             "p90_rel_err": float(np.percentile(e, 90))} for m, e in sorted(errs.items())]
