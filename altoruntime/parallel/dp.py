"""Baseline: FSDP data parallelism over the same sharded backbone, every adapter on every rank.

Each adapter's batch is split over the P ranks (rank r takes the r-th of P equal row chunks);
where it does not split evenly it is padded with dummy rows that predict nothing, and
`last_padded_rows` says how many. Each rank's loss for an adapter is its token-CE sum over the
tokens of the *whole* batch, so the all-reduced (summed) gradients are exactly the gradient of
the adapter's mean token CE on its full batch: the same update as one process on one GPU.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.distributed as dist

from altoruntime.batching import IGNORE, Batch
from altoruntime.parallel.base import ShardedTrainer
from altoruntime.parallel.fused import block, check_rows, dummy_rows, token_losses


def split_rows(batch: Batch, world: int, rank: int, pad_token_id: int) -> tuple[Batch, int]:
    """Rank `rank`'s chunk of `batch` padded to a multiple of `world` rows, and the padding."""
    ids, mask, labels = batch
    n = ids.shape[0]
    per = -(-n // world)
    pad = per * world - n
    if pad:
        d = dummy_rows(pad, ids.shape[1], pad_token_id)
        ids, mask, labels = (torch.cat([t, p]) for t, p in zip((ids, mask, labels), d))
    sl = slice(rank * per, (rank + 1) * per)
    return (ids[sl], mask[sl], labels[sl]), pad


class FSDPDPTrainer(ShardedTrainer):
    """Every adapter replicated on every rank, batches split, adapter gradients all-reduced.
    Admit the same adapters (same seeds) on every rank; pass every rank the same full batches."""

    last_padded_rows: int = 0
    released_must_be_empty = False  # every rank holds a replica of every adapter

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """One step of the adapters in `batches` (full, unsplit batches); collective."""
        if not batches:
            raise ValueError("batches: need at least one adapter's batch")
        full = {j: check_rows(j, b, False) for j, b in batches.items()}
        tokens = [int((b[2][:, 1:] != IGNORE).sum()) for b in full.values()]
        local, pads = {}, 0
        for j, b in full.items():
            local[j], pad = split_rows(b, self.world, self.rank, self.pad_token_id)
            pads += pad
        self.last_padded_rows = pads
        length = max(b[0].shape[1] for b in full.values())
        blk = block(local, sum(b[0].shape[0] for b in local.values()), length, self.pad_token_id, allow_unlabelled=True)
        self.trainer.store.zero_grad()
        self.trainer.model.train()
        try:
            sums, _, _ = token_losses(self.trainer, blk, training=True)
            losses = [s / n for s, n in zip(sums, tokens)]
            torch.autograd.backward(losses, [torch.ones_like(l) for l in losses])
        finally:
            self.trainer.ctx.meta = None
        totals = self._all_reduce_grads([float(l.detach()) for l in losses])
        out = dict(zip(blk.job_ids, totals))
        self.trainer.store.update(blk.job_ids, totals)
        for j, l in out.items():
            self.history[j].append(l)
        return out

    @torch.no_grad()
    def evaluate(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """Mean token CE of each adapter on its full batch (split over ranks); collective."""
        if not batches:
            raise ValueError("batches: need at least one adapter's batch")
        full = {j: check_rows(j, b, False) for j, b in batches.items()}
        tokens = [int((b[2][:, 1:] != IGNORE).sum()) for b in full.values()]
        local = {j: split_rows(b, self.world, self.rank, self.pad_token_id)[0] for j, b in full.items()}
        length = max(b[0].shape[1] for b in full.values())
        blk = block(local, sum(b[0].shape[0] for b in local.values()), length, self.pad_token_id, allow_unlabelled=True)
        self.trainer.model.eval()
        sums, _, _ = token_losses(self.trainer, blk, training=False)
        t = torch.stack([s.double() for s in sums])
        dist.all_reduce(t, group=self.group)
        return {j: float(x) / n for j, x, n in zip(blk.job_ids, t.tolist(), tokens)}

    def _all_reduce_grads(self, local_losses: list[float]) -> list[float]:
        """Sum every adapter stack's gradient and the loss parts over ranks, in one bucket."""
        params = self.trainer.store.optim.params
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params]
                         + [torch.tensor(local_losses, dtype=params[0].grad.dtype, device=self.device)])
        dist.all_reduce(flat, group=self.group)
        off = 0
        for p in params:
            p.grad.copy_(flat[off: off + p.numel()].view_as(p))
            off += p.numel()
        return [float(x) if math.isfinite(float(x)) else math.nan for x in flat[off:].tolist()]
