"""Time a replay charges besides training steps: the runtime's actions and its validation.

`HostOverheads` prices the actions (a task's start and finish, admit, stop, suspend, snapshot)
from a profile's measured `overheads`; `ValidationCost` prices the runtime's validation call
with a StepCost on forward-only shapes (`eval_profile`: the profile's validation timings as a
profile of their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from altosim.cost.protocol import StepCost
from altosim.cost.shapes import NewShapeCost
from altosim.policy.types import Admit, JobSpec, TaskSpec
from altosim.schemas.cost import EVAL_ROWS, VAL_BATCH, ActionCosts, CostProfile, val_adapters


@dataclass(frozen=True)
class HostOverheads:
    """Host seconds of the runtime's actions per backbone (CostProfile.overheads, measured by `alto
    profile`): a task's start and finish, each admit, stop and suspend, and each best-validation
    snapshot. A model without measured costs is charged nothing (and `models` says which are)."""

    per_model: dict[str, ActionCosts]  # model (lower case) -> costs

    @property
    def models(self) -> list[str]:
        return sorted(self.per_model)

    def _ms(self, model: str, name: str) -> float:
        c = self.per_model.get(model.lower())
        v = getattr(c, name) if c is not None else None
        return 0.0 if v is None else v / 1e3

    def action_s(self, model: str, a: Any) -> float:
        if isinstance(a, Admit) and a.resume:
            return 0.0  # a resume copies back what a suspend moved out: charged with the suspend
        return self._ms(model, f"{a.kind}_ms")

    def snapshot_s(self, model: str) -> float:
        return self._ms(model, "snapshot_ms")

    def stop_s(self, model: str) -> float:
        """A job leaving its slot for good (a Stop, or its own finish in the runtime)."""
        return self._ms(model, "stop_ms")


def host_overheads(profile: CostProfile | None) -> HostOverheads | None:
    """The profile's measured action costs (None: it has none, an older profile)."""
    if profile is None or not profile.overheads:
        return None
    return HostOverheads({m.lower(): c for m, c in profile.overheads.items()})


@dataclass(frozen=True)
class ValidationCost:
    """Seconds of the runtime's validation of `jobs` (altoruntime/backend.py `_validate`): `val_rows`
    examples in batches of `val_batch`, jobs fused `eval_rows // val_batch` per forward, each
    forward priced by `cost` times `forward_fraction`: 1 when `cost` prices forward-only
    evaluations (`eval_cost`, from the profile's `eval_ms`), else a third of a training step of
    the same rows (2NT of 6NT FLOPs)."""

    cost: StepCost
    val_rows: int
    val_batch: int = VAL_BATCH
    eval_rows: int = EVAL_ROWS
    forward_fraction: float = 1 / 3
    shapes: NewShapeCost | None = None  # the evaluation shapes' first calls

    def __call__(self, task: TaskSpec, jobs: list[JobSpec]) -> float:
        b = min(self.val_batch, self.val_rows)
        batches = math.ceil(self.val_rows / b)
        per_call = max(1, self.eval_rows // b)
        t = 0.0
        for i in range(0, len(jobs), per_call):
            chunk = [replace(j, batch_size=b) for j in jobs[i:i + per_call]]
            t += batches * self.cost.step_time(task, chunk) * self.forward_fraction
            if self.shapes is not None:  # a new evaluation shape compiles and autotunes once
                t += self.shapes.before_steps(task, chunk)
        return t


def eval_profile(profile: CostProfile | None) -> CostProfile | None:
    """The profile's validation forwards as a profile of their own, so the cost model prices them
    as it does steps: rows at the shape they ran (min(adapters, 16) adapters x 16 rows: `val_ms`,
    first call as `first_step_ms`), or, for a profile that timed evaluations at its training batches
    (`eval_ms`, 2026-12-03), those; None when no row measured one."""
    if profile is None:
        return None
    rows, seen = [], set()
    for r in profile.rows:
        if r.val_ms is None:
            continue
        shape = (r.model.lower(), r.gpu_type.lower(), val_adapters(r.adapters), r.mean_rank, r.seq_len)
        # points of different training batches (or of 16 and 32 adapters) share one evaluation shape:
        # only the first of them met it new (the first-call curve counts shapes, not points)
        first = r.first_val_ms if shape not in seen else None
        seen.add(shape)
        rows.append(r.model_copy(update={"adapters": shape[2], "per_adapter_batch": VAL_BATCH,
                                         "step_ms": r.val_ms, "first_step_ms": first}))
    src = "val_ms"
    if not rows:
        rows = [r.model_copy(update={"step_ms": r.eval_ms, "first_step_ms": None})
                for r in profile.rows if r.eval_ms is not None]
        src = "eval_ms"
    if not rows:
        return None
    return profile.model_copy(update={"rows": rows, "source": f"{src} of {profile.source}"})
