"""Cost profiles: measured (or estimated) step time and peak memory per executor configuration.

One row = one training step of `adapters` co-located LoRA adapters over one backbone replica
(or one sharded backbone of `parallel_degree` GPUs). The cost model interpolates these rows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


# the runtime's validation call, at which profiles measure val_ms (altoruntime/run.py val_batch_size,
# altoruntime/backend.py eval_rows): one shared batch of VAL_BATCH rows per adapter, EVAL_ROWS rows at most
# per forward
VAL_BATCH = 16
EVAL_ROWS = 256


def val_adapters(adapters: int) -> int:
    """Adapters in one validation forward of a point with `adapters` (the runtime's chunk)."""
    return min(adapters, max(1, EVAL_ROWS // VAL_BATCH))


def _optional_ms(description: str, *, zero: bool = False) -> Any:
    """An optional, finite time in ms (> 0, or >= 0 with `zero`); None where not measured."""
    return Field(None, **({"ge": 0} if zero else {"gt": 0}), allow_inf_nan=False, description=description)


class CostRecord(BaseModel):
    """One measured step: what ran, how long it took, how much memory it peaked at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="backbone name")
    gpu_type: str = Field(min_length=1, description="e.g. H100")
    adapters: int = Field(ge=1, description="co-located adapters in the step")
    mean_rank: float = Field(gt=0, allow_inf_nan=False, description="mean LoRA rank over them")
    per_adapter_batch: int = Field(ge=1, description="samples per adapter per step")
    seq_len: int = Field(ge=1, description="tokens per sample")
    parallel_degree: int = Field(1, ge=1, description="GPUs the backbone is sharded over")
    step_ms: float = Field(gt=0, allow_inf_nan=False, description="wall time of one step, ms")
    peak_mem_bytes: int = Field(ge=0, description="peak reserved memory per GPU, bytes")
    note: str = ""
    first_step_ms: float | None = _optional_ms(
        "the point's first step, ms: with a new shape's compiles and autotuning (given the points "
        "measured before it in the same process); empty where not measured")
    eval_ms: float | None = _optional_ms(
        "one forward-only evaluation of every adapter of the point on its training batch (no grad), "
        "ms (profiles of 2026-12-03 session 6; later ones measure val_ms); empty where not measured")
    val_ms: float | None = _optional_ms(
        "one validation forward as the runtime calls it: a shared batch of 16 rows of seq_len for "
        "min(adapters, 16) adapters, ms (median); empty where not measured")
    first_val_ms: float | None = _optional_ms(
        "the first such call at this point, ms: a new evaluation shape's compiles and autotuning")


class ActionCosts(BaseModel):
    """Host time of the runtime's actions on one backbone (ms; None = not measured): what a replay
    charges besides steps and validation. Measured by `alto profile` on the points it trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_task_ms: float | None = _optional_ms("a task's start: backbone copy to the device + trainer build", zero=True)
    admit_ms: float | None = _optional_ms("one new adapter admitted", zero=True)
    snapshot_ms: float | None = _optional_ms("one adapter's best-validation snapshot", zero=True)
    suspend_ms: float | None = _optional_ms("one adapter suspended (weights and optimizer to the host) and "
                                         "resumed: the round trip a Suspend implies", zero=True)
    stop_ms: float | None = _optional_ms("one adapter stopped (slot freed, optimizer dropped)", zero=True)
    finish_task_ms: float | None = _optional_ms("a task's finish: best snapshot restored + PEFT export", zero=True)


class MemoryFit(BaseModel):
    """The memory line M(B) = k0 + k1 * B * L fitted to one model's measured peaks (bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k0: float = Field(allow_inf_nan=False, description="bytes that do not scale with tokens")
    k1: float = Field(gt=0, allow_inf_nan=False, description="bytes per token held (B * L)")
    capacity: float = Field(gt=0, allow_inf_nan=False, description="device memory, bytes")
    points: int = Field(ge=2, description="measured rows the fit used")
    max_rel_err: float = Field(ge=0, allow_inf_nan=False, description="worst |fit - measured| / measured")


class FailedPoint(BaseModel):
    """A grid point the profiler could not measure (out of memory, or skipped as larger than one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    gpu_type: str = Field(min_length=1)
    adapters: int = Field(ge=1)
    mean_rank: float = Field(gt=0, allow_inf_nan=False)
    per_adapter_batch: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    reason: str = Field(min_length=1, description="e.g. 'oom' or 'skipped: >= tokens of an oom point'")


class CostProfile(BaseModel):
    """Rows plus provenance: which device measured them and when, or that they are synthetic.

    `layers` names the decoder depth a model was profiled at when it was truncated (a random-init
    shape cut to a few layers: per-layer cost is what matters); a model absent from it ran at full
    depth. `memory_fits` holds the fitted memory line per model, `failed` the unmeasured points,
    `overheads` the measured cost of the runtime's actions per model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: list[CostRecord]
    device: str = Field("unknown", description="device name as the profiler saw it")
    date: str = Field("", description="ISO date of the measurement")
    synthetic: bool = Field(False, description="True when estimated, not measured")
    source: str = ""
    layers: dict[str, int] = Field(default_factory=dict, description="model -> decoder layers profiled")
    memory_fits: dict[str, MemoryFit] = Field(default_factory=dict, description="model -> fitted M(B)")
    failed: list[FailedPoint] = Field(default_factory=list, description="grid points not measured")
    overheads: dict[str, ActionCosts] = Field(default_factory=dict,
                                              description="model -> host time of the runtime's actions")
