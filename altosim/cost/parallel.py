"""Step time of one task's adapters on P GPUs: rank-local adapter parallelism (AP) vs FSDP.

Both shard the frozen backbone with FSDP2 (altoruntime/parallel/shard.py): every decoder layer is
all-gathered before it runs, forward and again backward (reshard after forward), the LM head
likewise, the embeddings once. They differ in how the adapters' work is split:

* AP: each rank owns ceil(A / P) whole adapters and runs their full batches; ranks hold equal
  rows, so ranks short of adapters run dummy rows (`padded`). One tiny all-reduce per step (the
  ranks' agreement on the step), no gradient traffic.
* FSDP: every rank holds all A adapters and ceil(b / P) rows of each one's batch, padded with
  dummy rows where b does not split over P; the adapters' fp32 gradients (and losses) are summed
  over ranks in one all-reduce after backward.

Per-rank compute is the one-GPU step of that rank's share of the work (profile or analytic, via
the `single` callable). Communication is bytes over a link of `gbytes_per_s` per GPU plus a
latency per collective: a ring all-gather moves (P-1)/P of the gathered bytes into each rank, a
ring all-reduce 2 (P-1)/P of the reduced bytes. FSDP2 prefetches the next layer's all-gather
during the current layer's compute, so a share `overlap` of the shorter of the two is hidden:

    step = compute + allgather - overlap * min(compute, allgather) + allreduce

(overlap = 1: max(compute, allgather); overlap = 0: their sum). The all-reduce is exposed: it
runs after the backward, before the optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from altosim.cost.protocol import StepEstimate
from altosim.cost.specs import ModelShape

SingleStep = Callable[[int, float, float, int], StepEstimate]  # (adapters, rank, batch, seq) -> one-GPU step


@dataclass(frozen=True)
class Link:
    """One GPU's share of the interconnect: bandwidth and a fixed cost per collective."""

    gbytes_per_s: float
    latency_s: float = 20e-6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gbytes_per_s) and self.gbytes_per_s > 0):
            raise ValueError(f"gbytes_per_s: must be > 0, got {self.gbytes_per_s!r}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s: must be >= 0, got {self.latency_s!r}")


@dataclass(frozen=True)
class ParallelStep:
    """One predicted step on `gpus` ranks, with its parts (seconds)."""

    impl: str  # "ap" | "fsdp"
    gpus: int
    adapters_per_rank: int
    rows_per_adapter: int  # per rank
    padded: int  # dummy rows over all ranks
    compute_s: float
    allgather_s: float
    allreduce_s: float
    step_s: float
    extrapolated: bool
    source: str


def gathered_bytes(shape: ModelShape, dtype_bytes: int = 2) -> float:
    """Frozen-base bytes all-gathered per step: each layer and the head twice, embeddings once."""
    emb = shape.vocab * shape.hidden
    return float(dtype_bytes) * (2 * shape.layers * shape.layer_params + 2 * emb + emb)


def allgather_s(shape: ModelShape, gpus: int, link: Link, dtype_bytes: int = 2) -> float:
    """Seconds of one step's all-gathers of the frozen base (0 on one GPU)."""
    if gpus == 1:
        return 0.0
    collectives = 2 * shape.layers + 3
    return collectives * link.latency_s + gathered_bytes(shape, dtype_bytes) * (gpus - 1) / gpus / (
        link.gbytes_per_s * 1e9)


def allreduce_s(nbytes: float, gpus: int, link: Link) -> float:
    """Seconds of one ring all-reduce of `nbytes` (0 on one GPU)."""
    if gpus == 1:
        return 0.0
    return link.latency_s + 2.0 * nbytes * (gpus - 1) / gpus / (link.gbytes_per_s * 1e9)


def adapter_grad_bytes(shape: ModelShape, adapters: int, rank: float, dtype_bytes: int = 4) -> float:
    """Bytes of the adapters' gradients (A and B of every targeted projection, fp32)."""
    return float(dtype_bytes) * adapters * rank * shape.proj_io * shape.layers


def overlapped(compute_s: float, comm_s: float, overlap: float) -> float:
    """compute + comm with a share `overlap` of the shorter one hidden behind the other."""
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap: must be in [0, 1], got {overlap!r}")
    return compute_s + comm_s - overlap * min(compute_s, comm_s)


def _check(gpus: int, adapters: int, batch: float) -> None:
    if gpus < 1:
        raise ValueError(f"gpus: must be >= 1, got {gpus!r}")
    if adapters < 1:
        raise ValueError(f"adapters: must be >= 1, got {adapters!r}")
    if not batch > 0:
        raise ValueError(f"per_adapter_batch: must be > 0, got {batch!r}")


def ap_step(single: SingleStep, shape: ModelShape, gpus: int, adapters: int, rank: float, batch: float,
            seq_len: int, link: Link, overlap: float = 0.7, dtype_bytes: int = 2) -> ParallelStep:
    """Rank-local adapter parallelism: whole adapters per rank, no gradient traffic."""
    _check(gpus, adapters, batch)
    mine = math.ceil(adapters / gpus)
    padded = round((gpus * mine - adapters) * batch)
    est = single(mine, rank, batch, seq_len)
    ag = allgather_s(shape, gpus, link, dtype_bytes)
    ar = allreduce_s(8.0, gpus, link)  # the per-step agreement (a few numbers)
    step = overlapped(est.seconds, ag, overlap) + ar
    return ParallelStep("ap", gpus, mine, math.ceil(batch), padded, est.seconds, ag, ar, step,
                        est.extrapolated, est.source)


def fsdp_step(single: SingleStep, shape: ModelShape, gpus: int, adapters: int, rank: float, batch: int,
              seq_len: int, link: Link, overlap: float = 0.7, dtype_bytes: int = 2) -> ParallelStep:
    """FSDP data parallelism: every adapter on every rank, its batch split (padded), gradients
    all-reduced."""
    _check(gpus, adapters, batch)
    rows = math.ceil(batch / gpus)
    padded = adapters * (gpus * rows - batch)
    est = single(adapters, rank, rows, seq_len)
    ag = allgather_s(shape, gpus, link, dtype_bytes)
    ar = allreduce_s(adapter_grad_bytes(shape, adapters, rank) + 4.0 * adapters, gpus, link)
    step = overlapped(est.seconds, ag, overlap) + ar
    return ParallelStep("fsdp", gpus, adapters, rows, int(padded), est.seconds, ag, ar, step,
                        est.extrapolated, est.source)
