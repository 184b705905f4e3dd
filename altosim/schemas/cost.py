"""Cost profiles: measured (or estimated) step time and peak memory per executor configuration.

One row = one training step of `adapters` co-located LoRA adapters over one backbone replica
(or one sharded backbone of `parallel_degree` GPUs). The cost model interpolates these rows.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


class CostProfile(BaseModel):
    """Rows plus provenance: which device measured them and when, or that they are synthetic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: list[CostRecord]
    device: str = Field("unknown", description="device name as the profiler saw it")
    date: str = Field("", description="ISO date of the measurement")
    synthetic: bool = Field(False, description="True when estimated, not measured")
    source: str = ""
