"""What AP and the FSDP data-parallel baseline share: a process group, a sharded frozen backbone,
and a rank-local `MultiAdapterTrainer` holding this rank's adapters and their optimizer state
(its lifecycle calls are forwarded, so with `step`/`evaluate` a subclass is a `Trainer`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from altoruntime.adapters import AdapterConfig, Status, Weights
from altoruntime.backbone import LLAMA_TARGETS
from altoruntime.parallel.shard import mesh_for, shard_backbone
from altoruntime.trainer import MultiAdapterTrainer


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
        # the ranks run their own steps (`forward_tokens`, autograd's gradients), never the trainer's
        # captured ones: no graphs, so its stacks shrink with the adapters as they leave
        self._build = dict(target_modules=target_modules, impl=impl, pad_token_id=pad_token_id, cuda_graphs=False)
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
        dist.all_gather_object(holders, (self.rank, sorted(self.trainer.job_ids)), group=self.group)
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
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
              warmup_steps: int = 0, total_steps: int = 0, max_grad_norm: float | None = None) -> None:
        self.trainer.admit(job_id, rank, alpha, lr, weight_decay, dropout, seed, lr_schedule, warmup_steps,
                           total_steps, max_grad_norm)
        self.history[job_id] = []

    def drop(self, job_id: str) -> None:
        self.trainer.drop(job_id)
        self.history.pop(job_id, None)

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        self.trainer.suspend(job_id, keep_optimizer)

    def resume(self, job_id: str) -> None:
        self.trainer.resume(job_id)

    def config(self, job_id: str) -> AdapterConfig:
        return self.trainer.config(job_id)

    def status(self, job_id: str) -> Status:
        return self.trainer.status(job_id)

    def failure(self, job_id: str) -> str | None:
        return self.trainer.failure(job_id)

    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        return self.trainer.adapter_weights(job_id)

    def snapshot_best(self, job_id: str) -> None:
        self.trainer.snapshot_best(job_id)

    def has_best(self, job_id: str) -> bool:
        return self.trainer.has_best(job_id)

    def best_weights(self, job_id: str) -> Weights | None:
        return self.trainer.best_weights(job_id)

    def restore_best(self, job_id: str) -> None:
        self.trainer.restore_best(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.trainer

    @property
    def active(self) -> list[str]:
        return self.trainer.active

    @property
    def job_ids(self) -> list[str]:
        return self.trainer.job_ids

    @property
    def layer_names(self) -> list[str]:
        return self.trainer.layer_names

    @property
    def target_modules(self) -> tuple[str, ...]:
        return self.trainer.target_modules

    @contextmanager
    def applied(self, job_id: str, merge: bool = True) -> Iterator[nn.Module]:
        """The (sharded) backbone with one adapter on every row. Only on a world of one rank: a
        forward all-gathers every layer, so on more ranks the others would have to join it. The
        adapter is never merged here (`merge` is ignored): the frozen weights may be shards."""
        if self.world != 1:
            raise ValueError(f"applied: needs a world of 1 rank (shrink first), this one has {self.world}")
        with self.trainer.applied(job_id, merge=False) as model:
            yield model

    def state_dict(self) -> dict:
        """This rank's adapters, optimizer state and loss histories (CPU data)."""
        return {"trainer": self.trainer.state_dict(), "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.history = {k: list(v) for k, v in state["history"].items()}
