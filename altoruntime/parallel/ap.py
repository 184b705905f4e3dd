"""Rank-local adapter parallelism (AP): a sharded frozen backbone, each rank training its own
disjoint set of whole adapters.

The backbone's frozen weights are all-gathered layer by layer (FSDP2); adapters, their AdamW
state, data and loss history never leave their rank, so there is no gradient all-reduce and a
batch of 1 keeps every rank busy. Per step the ranks agree on (rows, length) with one tiny
all-reduce and pad to it, so a rank that drops adapters (or has none left) still runs every
layer's collectives: nothing hangs. Adapters move between ranks with `migrate`.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.distributed as dist

from altoruntime.batching import Batch
from altoruntime.parallel.base import ShardedTrainer
from altoruntime.parallel.fused import RowBlock, block, shape_of, token_losses
from altoruntime.protocol import EvalResult


class APTrainer(ShardedTrainer):
    """Rank-local adapter parallelism over `world` ranks (construction: see ShardedTrainer)."""

    last_dummy_rows: int = 0

    def _agree(self, batches: Mapping[str, Batch]) -> RowBlock:
        """Validate this rank's batches, agree with every rank on (rows, length) and pad to it.
        A rank whose batches are bad still joins the all-reduce with an error flag, so all ranks
        raise together instead of the others waiting in a collective."""
        error = None
        try:
            for j in batches:
                if j not in self.trainer or self.trainer.status(j) != "active":
                    raise ValueError(f"batches: adapter {j!r} is not active on rank {self.rank}")
            rows, length = shape_of(batches)
            block(batches, rows, length, self.pad_token_id)  # validates every batch
        except ValueError as e:
            error, rows, length = e, 0, 0
        t = torch.tensor([rows, length, error is not None], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        if error is not None:
            raise error
        if int(t[2]):
            raise ValueError("batches: another rank rejected its batches this step (see its error)")
        return block(batches, int(t[0]), int(t[1]), self.pad_token_id)

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """One fused step of this rank's adapters in `batches` (may be empty); collective."""
        blk = self._agree(batches)
        self.last_dummy_rows = blk.dummy_rows
        self.trainer.store.zero_grad()
        self.trainer.model.train()
        try:
            sums, counts, _ = token_losses(self.trainer, blk, training=True)
            losses = [s / max(c, 1) for s, c in zip(sums, counts)]
            finite = [bool(torch.isfinite(l)) for l in losses]
            # non-finite losses get a zero upstream gradient: the backward (and its all-gathers)
            # still runs on every rank; only the failed adapter's own slot sees NaN gradients
            torch.autograd.backward(losses, [torch.ones_like(l) * ok for l, ok in zip(losses, finite)])
        finally:
            self.trainer.ctx.meta = None
        out = {j: float(l.detach()) for j, l in zip(blk.job_ids, losses)}
        self.trainer.store.update(blk.job_ids, list(out.values()))
        for j, l in out.items():
            self.history[j].append(l)
        return out

    @torch.no_grad()
    def evaluate(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """Mean token CE of this rank's adapters on `batches` (may be empty); collective."""
        blk = self._agree(batches)
        self.trainer.model.eval()
        sums, counts, _ = token_losses(self.trainer, blk, training=False)
        return {j: float(s) / c for j, s, c in zip(blk.job_ids, sums, counts)}

    @torch.no_grad()
    def evaluate_tokens(self, batches: Mapping[str, Batch]) -> dict[str, EvalResult]:
        """Per adapter of this rank: CE sum, labelled tokens and argmax hits; collective."""
        blk = self._agree(batches)
        self.trainer.model.eval()
        sums, counts, hits = token_losses(self.trainer, blk, training=False, with_hits=True)
        return {j: EvalResult(float(s), c, h) for j, s, c, h in zip(blk.job_ids, sums, counts, hits)}

    def migrate(self, job_id: str, src: int, dst: int) -> None:
        """Move one adapter (weights, AdamW state, loss history) from rank `src` to rank `dst`.
        Collective: every rank calls it with the same arguments."""
        if not (0 <= src < self.world and 0 <= dst < self.world) or src == dst:
            raise ValueError(f"src/dst: need two different ranks in [0, {self.world}), got {src}, {dst}")
        payload: list[object] = [None]
        if self.rank == src:
            if job_id not in self.trainer or self.trainer.status(job_id) == "failed":
                payload[0] = {"error": f"job_id: adapter {job_id!r} is not an active or suspended adapter of rank {src}"}
            else:
                was_active = self.trainer.status(job_id) == "active"
                if was_active:
                    self.trainer.suspend(job_id)
                state = self.trainer.store.export_adapter(job_id)
                payload[0] = {"state": state, "active": was_active, "history": self.history.pop(job_id)}
                self.trainer.drop(job_id)
        dist.broadcast_object_list(payload, group=self.group, group_src=src)
        msg = payload[0]
        if "error" in msg:  # every rank raises, so none is left waiting in a collective
            raise ValueError(msg["error"])
        if self.rank == dst:
            self.trainer.store.import_adapter(job_id, msg["state"])
            self.history[job_id] = msg["history"]
            if msg["active"]:
                self.trainer.resume(job_id)

    def gather_history(self) -> dict[str, list[float]]:
        """Every rank's adapters' loss histories (for a controller on any rank); collective."""
        parts: list[dict[str, list[float]] | None] = [None] * self.world
        dist.all_gather_object(parts, self.history, group=self.group)
        return {k: v for p in parts for k, v in p.items()}
