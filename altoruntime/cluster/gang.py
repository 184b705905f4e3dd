"""A multi-GPU task's gang: P Ray actors, one per GPU of a placement group, running rank-local
adapter parallelism (altoruntime/parallel/) over one torch.distributed group.

The driver creates the P `GangRank` actors in the task's placement group, asks rank 0's actor for
a rendezvous address (its node's IP and a free port) and has every rank `join` it: NCCL when the
actor sees a GPU, gloo otherwise. Each rank builds its `APTrainer` (the frozen backbone sharded
over the ranks); rank 0 also hosts the task's `TaskWorker`, whose trainer is the `GangTrainer`
(altoruntime/parallel/gang.py). The driver talks to rank 0 only (`exchange`, `catch_up`, as to a
one-GPU worker) and, for every such call, starts `serve` on the other ranks: they carry out rank
0's calls over the process group until the exchange ends.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from altosim.policy.types import Action, TaskSpec
from altoruntime.cluster.worker import TaskWorker, WorkerReport
from altoruntime.parallel.gang import GangTrainer, RankLocal, serve
from altoruntime.repro import seed_everything

RankTrainerFactory = Callable[[TaskSpec, int, int, torch.device], Any]  # (task, world, rank, device) -> APTrainer


class GangRank:
    """One rank of a multi-GPU task (wrapped with `ray.remote` by the engine)."""

    def __init__(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank: {rank} not in [0, {world})")
        self.rank, self.world = rank, world
        self.local: RankLocal | None = None
        self.worker: TaskWorker | None = None
        self.released = False

    def address(self) -> tuple[str, int]:
        """Rank 0's rendezvous point: this node's IP (as Ray knows it) and a free port."""
        import ray

        host = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((host, 0))
            return host, s.getsockname()[1]

    def join(self, host: str, port: int, task: TaskSpec, make_rank_trainer: RankTrainerFactory, seed: int,
             timeout_s: float, worker_args: dict[str, Any] | None = None) -> str:
        """Join the gang's process group and build this rank's trainer; rank 0 also builds the task's
        worker from `worker_args` (TaskWorker's arguments after `make_trainer`). Returns the node id."""
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")  # Ray shows each rank its one GPU
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://{host}:{port}", rank=self.rank,
                                world_size=self.world, timeout=timedelta(seconds=timeout_s),
                                device_id=device if cuda else None)
        seed_everything(seed)
        ap = make_rank_trainer(task, self.world, self.rank, device)
        self.local = RankLocal(ap, {j.job_id: j.batch_size for j in task.jobs})
        if self.rank == 0:
            gang = GangTrainer(self.local)
            args = dict(worker_args or {})
            self.worker = TaskWorker(task, tuple(args.pop("gpus", range(self.world))), lambda t, g: gang, seed=seed,
                                     **args)
        import ray

        return ray.get_runtime_context().get_node_id()

    def serve(self) -> bool:
        """A rank other than 0: take part in one exchange of rank 0 (False once released)."""
        if self.released:
            return False
        self.released = not serve(self.local)
        return not self.released

    # rank 0: the task worker's calls, each ending the other ranks' `serve`
    def exchange(self, actions: list[Action], checkpoint: bool = False) -> WorkerReport:
        try:
            return self.worker.exchange(actions, checkpoint)
        finally:
            self._pause()

    def catch_up(self, actions: list[list[Action]], keys: list[list[tuple[str, str, int]]]) -> WorkerReport:
        try:
            return self.worker.catch_up(actions, keys)
        finally:
            self._pause()

    def _pause(self) -> None:
        trainer = self.worker.runner.trainer
        if isinstance(trainer, GangTrainer):
            trainer.pause()
