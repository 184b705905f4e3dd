"""Step time and memory of a fused multi-adapter group, and a task's worst-case duration.

The analytic model (used until a measured CostProfile covers a setting) is the nanoGPT
`estimate_mfu` habit applied to frozen-base LoRA training with gradient checkpointing:

    step = floor(layers) + (base FLOPs + LoRA FLOPs) / (mfu * peak * P) + comm(P)

* base FLOPs = 6 N T: forward 2NT, checkpoint recompute 2NT, input-gradient 2NT (the frozen
  base has no weight gradient); T = tokens of all co-located adapters in the step;
* LoRA FLOPs = 6 T_i r_i sum(d_in + d_out) per adapter (forward, dX, dA/dB);
* floor = a per-layer latency (kernel launches, small GEMMs) that a lone small-batch adapter
  cannot hide: it is what makes one small adapter leave a GPU almost idle, and what batching
  amortizes;
* comm(P): under rank-local adapter parallelism the frozen base is all-gathered once per step
  (2N bytes, (P-1)/P of it over the link), partly overlapped with compute.

Memory M(B) = k0 + k1 * B * L per GPU (the paper's model): k0 = resident weights + runtime
overhead, k1 = bytes per token of checkpointed activations and logits.

Profile-backed mode (`CostModel.profile`, from a run config's `cost_profile`): where a measured
CostProfile covers the (model, GPU type), a group's step is interpolated from it
(`altosim.cost.profile`; a model profiled truncated to N layers is scaled to the asked depth by the
analytic model's ratio), tasks on P > 1 GPUs get rank-local adapter parallelism's step
(`altosim.cost.parallel.ap_step`), and the fitted memory line replaces the analytic one at full
depth on one GPU. Everything else falls back to the analytic model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from altosim.cost.io import read_cost_profile
from altosim.cost.parallel import Link, ap_step
from altosim.cost.profile import ProfileTable
from altosim.cost.protocol import StepEstimate
from altosim.cost.specs import GIB, GPUS, MODELS, GpuSpec, ModelShape, model_shape
from altosim.errors import InputError
from altosim.policy.intra import pick_admissions
from altosim.policy.memory import MemoryModel
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import ANALYTIC, RunConfig
from altosim.schemas.cost import CostProfile


@dataclass(frozen=True)
class CostModel:
    """Costs on one GPU type: analytic (`mfu`, `layer_floor_s` are the fitted knobs), or backed
    by a measured profile where it covers the model."""

    gpu: GpuSpec
    mfu: float = 0.45
    layer_floor_s: float = 0.0025
    link_gbps: float = 400.0  # GB/s of all-gather bandwidth per GPU (NVLink class)
    overlap: float = 0.7  # share of the all-gather hidden behind compute
    profile: ProfileTable | None = field(default=None, compare=False, hash=False)
    # backbones a workload names by shape (lower-cased name -> shape, and where it came from:
    # "shape" or "config.json"); they win over the built-in table, a covering profile over both
    shapes: Mapping[str, ModelShape] = field(default_factory=dict, compare=False, hash=False)
    shape_sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def with_shapes(self, shapes: Mapping[str, ModelShape], sources: Mapping[str, str]) -> "CostModel":
        """This cost model, also pricing the named backbones from the given shapes."""
        return replace(self, shapes={k.lower(): v for k, v in shapes.items()},
                       shape_sources={k.lower(): v for k, v in sources.items()})

    def shape(self, model: str) -> ModelShape:
        """The backbone's shape: given by the workload, else the built-in table (ValueError if neither)."""
        given = self.shapes.get(model.lower())
        return given if given is not None else model_shape(model)

    def cost_source(self, task: TaskSpec) -> str:
        """Where this task's step costs come from: "profile" (measured, interpolated), "fitted" (the
        profile's host/GPU fit), "shape" / "config.json" (analytic, on a shape the workload gave) or
        "analytic" (analytic, on the built-in table)."""
        if self.profile is not None and self.profile.covers(task.model, self.gpu.name):
            return "fitted" if self.profile.method == "hostgpu" else "profile"
        return self.shape_sources.get(task.model.lower(), "analytic")

    @property
    def extrapolations(self) -> int:
        """Profile queries so far that left the measured range (0 without a profile)."""
        return self.profile.extrapolations if self.profile is not None else 0

    def analytic_single(self, shape: ModelShape, adapters: int, mean_rank: float, per_adapter_batch: float,
                        seq_len: int) -> float:
        """Seconds of one fused step of `adapters` equal adapters on one unsharded GPU."""
        tokens = adapters * per_adapter_batch * seq_len
        flops = 6.0 * shape.params * tokens + 6.0 * tokens * mean_rank * shape.proj_io * shape.layers
        return shape.layers * self.layer_floor_s + flops / (self.mfu * self.gpu.peak_tflops * 1e12)

    def single_step(self, model: str, adapters: int, mean_rank: float, per_adapter_batch: float, seq_len: int,
                    layers: int | None = None) -> StepEstimate:
        """One fused step on one GPU at `layers` depth (None: the model's full depth); from the
        profile where it covers (model, this GPU), else analytic."""
        known = model.lower() in MODELS or model.lower() in self.shapes
        if self.profile is not None and self.profile.covers(model, self.gpu.name):
            p = self.profile.predict(model, self.gpu.name, adapters, mean_rank, per_adapter_batch, seq_len)
            measured_at = self.profile.layers(model)
            if not known:
                if layers is not None and measured_at is not None and layers != measured_at:
                    raise ValueError(f"layers: {model!r} was profiled at {measured_at} layers and has no "
                                     f"known shape to scale to {layers}")
                return StepEstimate(p.step_ms / 1e3, p.extrapolated, "profile")
            shape = self.shape(model)
            want = layers or shape.layers
            have = measured_at or shape.layers
            scale = 1.0
            if want != have:
                args = (adapters, mean_rank, per_adapter_batch, seq_len)
                scale = self.analytic_single(shape.truncated(want), *args) / self.analytic_single(
                    shape.truncated(have), *args)
            return StepEstimate(p.step_ms / 1e3 * scale, p.extrapolated, "profile")
        shape = self.shape(model)
        shape = shape.truncated(layers) if layers else shape
        return StepEstimate(self.analytic_single(shape, adapters, mean_rank, per_adapter_batch, seq_len),
                            False, "analytic")

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        """Seconds for one fused step of `jobs` (one step each) on the task's GPUs. Jobs that
        accumulate gradients take that many passes of their micro-batch, as the runtime runs
        them: pass i holds every job with more than i micro-batches."""
        passes = max((j.grad_accum_steps for j in jobs), default=1)
        if passes > 1:
            micro = [replace(j, batch_size=j.micro_batch, grad_accum_steps=1) for j in jobs]
            return sum(self.step_time(task, [m for m, j in zip(micro, jobs) if j.grad_accum_steps > i])
                       for i in range(passes))
        if self.profile is not None and jobs and self.profile.covers(task.model, self.gpu.name):
            return self._profiled_step(task, jobs)
        m = self.shape(task.model)
        p = task.gpus
        tokens = 0
        lora = 0.0
        for j in jobs:
            t = j.batch_size * task.seq_len
            tokens += t
            lora += 6.0 * t * j.rank * m.proj_io * m.layers
        flops = 6.0 * m.params * tokens + lora
        compute = flops / (self.mfu * self.gpu.peak_tflops * 1e12 * p)
        comm = 0.0
        if p > 1:
            comm = (1 - self.overlap) * 2 * m.params * (p - 1) / p / (self.link_gbps * 1e9)
        return m.layers * self.layer_floor_s + compute + comm

    def _profiled_step(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        """Equal-adapter query: batch = mean batch, rank = row-weighted mean rank (keeps LoRA
        work); on P > 1 GPUs the rank-local adapter parallelism step."""
        rows = sum(j.batch_size for j in jobs)
        rank = sum(j.rank * j.batch_size for j in jobs) / rows
        batch = rows / len(jobs)
        if task.gpus == 1:
            return self.single_step(task.model, len(jobs), rank, batch, task.seq_len).seconds

        def single(a: int, r: float, b: float, s: int) -> StepEstimate:
            return self.single_step(task.model, a, r, b, s)

        link = Link(gbytes_per_s=self.link_gbps)
        return ap_step(single, self.shape(task.model), task.gpus, len(jobs), rank, batch, task.seq_len, link,
                       self.overlap).step_s

    def memory_model(self, task: TaskSpec, margin: float = 0.10) -> MemoryModel:
        fit = self._memory_fit(task)
        if fit is not None:
            return MemoryModel(k0=fit.k0, k1=fit.k1, capacity=self.gpu.memory_gb * GIB, margin=margin)
        m = self.shape(task.model)
        k0 = 2 * m.params / task.gpus + 3 * GIB
        k1 = (2 * m.hidden * m.layers + 40 * m.hidden + 10 * m.vocab) / task.gpus
        return MemoryModel(k0=k0, k1=k1, capacity=self.gpu.memory_gb * GIB, margin=margin)

    def _memory_fit(self, task: TaskSpec):
        """The profile's fitted memory line, when measured at full depth on one GPU of this type."""
        if self.profile is None or task.gpus != 1 or not self.profile.covers(task.model, self.gpu.name):
            return None
        known = task.model.lower() in MODELS or task.model.lower() in self.shapes
        if self.profile.layers(task.model) is not None and known and \
                self.profile.layers(task.model) != self.shape(task.model).layers:
            return None
        for k, v in self.profile.profile.memory_fits.items():
            if k.lower() == task.model.lower():
                return v
        return None

    def worst_case_duration(self, task: TaskSpec, batching: bool = True, max_jobs: int | None = None,
                            margin: float = 0.10) -> float:
        """Task time with no early exit: the intra-task packing played out job by job.

        Jobs are admitted exactly as the Controller admits them (same `pick_admissions`), and
        the group advances to the next job completion at a time.
        """
        memory = self.memory_model(task, margin)
        pending = list(task.jobs)
        running: dict[str, int] = {}  # job_id -> steps left
        spec = {j.job_id: j for j in task.jobs}
        now = 0.0
        cap = max_jobs if batching else 1
        prefer: int | None = None
        while pending or running:
            picked = pick_admissions([spec[i] for i in running], pending, memory, task.seq_len, cap, prefer)
            if not running and not picked:
                break  # nothing fits even alone: the Controller stops those jobs
            for j in picked:
                running[j.job_id] = task.total_steps(j)
                pending.remove(j)
            k = min(running.values())
            now += k * self.step_time(task, [spec[i] for i in running])
            done = [i for i, left in running.items() if left == k]
            for i in running:
                running[i] -= k
            for i in done:
                del running[i]
            prefer = spec[done[0]].batch_size
        return now


def cost_model_for(gpu_type: str, link_gbps: float = 400.0, gpu_memory_gb: float | None = None,
                   profile: CostProfile | None = None, method: str = "interp") -> CostModel:
    """The cost model of one GPU type; with `profile`, profile-backed where it covers a model
    (`method`: how the profile is read, see altosim.cost.profile.ProfileTable)."""
    if gpu_type not in GPUS:
        raise ValueError(f"unknown gpu_type {gpu_type!r}; known: {', '.join(sorted(GPUS))}")
    gpu = GPUS[gpu_type]
    if gpu_memory_gb is not None and not math.isclose(gpu_memory_gb, gpu.memory_gb):
        gpu = GpuSpec(gpu.name, gpu.peak_tflops, gpu_memory_gb)
    table = ProfileTable(profile, method=method) if profile is not None else None
    return CostModel(gpu=gpu, link_gbps=link_gbps, profile=table)


def cost_model_from_config(cfg: RunConfig) -> CostModel:
    """The config's cost model: profile-backed when `cost_profile` names a file, else analytic
    (what `alto simulate` prices steps with and `alto run`'s Controller plans with)."""
    profile = None if cfg.cost_profile == ANALYTIC else read_cost_profile(cfg.cost_profile)
    try:
        return cost_model_for(cfg.cluster.gpu_type, cfg.cluster.link_gbps / 8, cfg.cluster.gpu_memory_gb, profile,
                              cfg.cost_profile_method)
    except ValueError as e:
        raise InputError(cfg.file, "cluster.gpu_type", str(e)) from None
