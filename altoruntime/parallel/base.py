"""What AP and the FSDP data-parallel baseline share: a process group, a sharded frozen backbone,
and a rank-local `MultiAdapterTrainer` holding this rank's adapters and their optimizer state."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from altoruntime.backbone import LLAMA_TARGETS
from altoruntime.parallel.shard import mesh_for, shard_backbone
from altoruntime.trainer import AdapterConfig, MultiAdapterTrainer, Status


class ShardedTrainer:
    """A `MultiAdapterTrainer` whose backbone is FSDP2-sharded over `world` ranks.

    `model_factory()` must build the same frozen backbone on every rank (same weights), on
    `device`. Call `torch.distributed.init_process_group` first (see `altoruntime.parallel.launch`).
    Every `step`/`evaluate` is collective: all ranks call it, in the same order.
    """

    released_must_be_empty = True  # AP: a released rank's adapters would be lost (DP: replicas)

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
            raise ValueError("world: torch.distributed is not initialized (use altoruntime.parallel.launch)")
        if not 0 <= rank < world or rank != dist.get_rank():
            raise ValueError(f"rank: {rank} is not this process's rank {dist.get_rank()} in a world of {world}")
        self.world, self.rank = world, rank
        self.group: dist.ProcessGroup | None = None  # None: the default group (all ranks)
        self.released = False
        self._factory = model_factory
        self._build = dict(target_modules=target_modules, impl=impl, pad_token_id=pad_token_id)
        self._reshard = reshard_after_forward
        self.mesh = mesh_for(world, device)
        model = model_factory()
        self.trainer = MultiAdapterTrainer(model, capacity=capacity, **self._build)
        shard_backbone(model, self.mesh, reshard_after_forward)
        self.device = self.trainer.device
        self.pad_token_id = pad_token_id
        self.history: dict[str, list[float]] = {}

    def shrink(self, keep: Sequence[int]) -> bool:
        """Shard the backbone over ranks `keep` only (ranks of the current group) and release the
        others, which must hold no adapter (`migrate` them first). Collective over the current
        group. Kept ranks rebuild the backbone from the factory, reshard it over the new group
        and carry their adapters and optimizer state over unchanged; a released rank gets False
        and must make no further calls (its GPU is free). Returns True on a kept rank."""
        keep = sorted(set(keep))
        holders: list[object] = [None] * self.world
        dist.all_gather_object(holders, (self.rank, sorted(self.trainer.jobs)), group=self.group)
        bad = [f"rank {r} still holds {js}" for r, js in holders if r not in keep and js and self.released_must_be_empty]
        if not keep or any(not 0 <= r < self.world for r in keep) or bad:
            raise ValueError(f"keep: need a non-empty subset of ranks [0, {self.world}) holding every adapter; {'; '.join(bad)}")
        global_ranks = [dist.get_global_rank(self.group, r) if self.group is not None else r for r in keep]
        if self.rank not in keep:
            self.released = True
            self.trainer = None  # frees this rank's backbone shards
            return False
        group = dist.new_group(global_ranks, use_local_synchronization=True)
        state = self.trainer.state_dict()
        self.trainer = None
        self.group, self.world, self.rank = group, len(keep), keep.index(self.rank)
        self.mesh = DeviceMesh.from_group(group, self.device.type)
        model = self._factory()
        self.trainer = MultiAdapterTrainer(model, capacity=state["capacity"], **self._build)
        self.trainer.load_state_dict(state)
        shard_backbone(model, self.mesh, self._reshard)
        return True

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
        # in place: the optimizer reuses its per-slot views of the same gradient tensors
        self.trainer.optim.zero_grad()
