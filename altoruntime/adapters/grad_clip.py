"""Per-adapter gradient-norm clipping over stacked gradients, without a host sync."""

from __future__ import annotations

import math
from typing import Sequence

import torch


@torch.no_grad()
def clip_slot_grad_norms(params: Sequence[torch.nn.Parameter], max_norms: Sequence[float],
                         slots: Sequence[int]) -> None:
    """Scale slot `slots[i]`'s gradients (dim 0 of every param) so their joint 2-norm over all
    params is at most `max_norms[i]`, as `torch.nn.utils.clip_grad_norm_` does for one adapter's
    parameters alone: per-tensor norms, the norm of those, then a factor
    min(1, max_norm / (norm + 1e-6)). Only those slots are read and written (the others may hold
    stale gradients of adapters not in this step). Zero rank padding adds nothing to a norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not slots or all(math.isinf(m) for m in max_norms):
        return
    idx = torch.as_tensor(list(slots), dtype=torch.long).to(grads[0].device, non_blocking=True)
    picked = [g.index_select(0, idx) for g in grads]
    k = len(slots)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in picked])  # [params, k]
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    limit = torch.tensor(list(max_norms), dtype=total.dtype).to(total.device, non_blocking=True)
    coef = torch.clamp(limit / (total + 1e-6), max=1.0)
    for g, sel in zip(grads, picked):
        g.index_copy_(0, idx, sel.mul_(coef.view(k, *(1,) * (g.dim() - 1)).to(g.dtype)))
