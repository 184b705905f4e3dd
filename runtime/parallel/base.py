"""What AP and the FSDP data-parallel baseline share: a process group, a sharded frozen backbone,
and a rank-local `MultiAdapterTrainer` holding this rank's adapters and their optimizer state."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from runtime.backbone import LLAMA_TARGETS
from runtime.parallel.shard import mesh_for, shard_backbone
from runtime.trainer import AdapterConfig, MultiAdapterTrainer, Status


class ShardedTrainer:
    """A `MultiAdapterTrainer` whose backbone is FSDP2-sharded over `world` ranks.

    `model_factory()` must build the same frozen backbone on every rank (same weights), on
    `device`. Call `torch.distributed.init_process_group` first (see `runtime.parallel.launch`).
    Every `step`/`evaluate` is collective: all ranks call it, in the same order.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        world: int,
        rank: int,
        device: torch.device | str = "cpu",
        capacity: int = 4,
        impl: str = "auto",
        target_modules: Sequence[str] = LLAMA_TARGETS,
        pad_token_id: int = 0,
        reshard_after_forward: bool = True,
    ) -> None:
        if not dist.is_initialized():
            raise ValueError("world: torch.distributed is not initialized (use runtime.parallel.launch)")
        if not 0 <= rank < world or rank != dist.get_rank():
            raise ValueError(f"rank: {rank} is not this process's rank {dist.get_rank()} in a world of {world}")
        self.world, self.rank = world, rank
        self.mesh = mesh_for(world, device)
        model = model_factory()
        self.trainer = MultiAdapterTrainer(model, target_modules, capacity, impl, pad_token_id=pad_token_id)
        shard_backbone(model, self.mesh, reshard_after_forward)
        self.device = self.trainer.device
        self.pad_token_id = pad_token_id
        self.history: dict[str, list[float]] = {}

    # lifecycle: the single-GPU trainer's, on this rank's adapters
    def admit(self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0) -> None:
        self.trainer.admit(job_id, rank, alpha, lr, weight_decay, dropout, seed)
        self.history[job_id] = []

    def drop(self, job_id: str) -> None:
        self.trainer.drop(job_id)
        self.history.pop(job_id, None)

    def suspend(self, job_id: str) -> None:
        self.trainer.suspend(job_id)

    def resume(self, job_id: str) -> None:
        self.trainer.resume(job_id)

    def config(self, job_id: str) -> AdapterConfig:
        return self.trainer.config(job_id)

    def status(self, job_id: str) -> Status:
        return self.trainer.status(job_id)

    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        return self.trainer.adapter_weights(job_id)

    @property
    def active(self) -> list[str]:
        return self.trainer.active

    def _zero_grads(self) -> None:
        for p in self.trainer.optim.params:
            p.grad = None
