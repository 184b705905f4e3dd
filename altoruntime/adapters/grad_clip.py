"""Per-adapter gradient-norm clipping over stacked gradients, without a host sync."""

from __future__ import annotations

import math
from typing import Sequence

import torch


@torch.no_grad()
def clip_slot_grad_norms(params: Sequence[torch.nn.Parameter], max_norms: Sequence[float]) -> None:
    """Scale each slot's gradients (dim 0 of every param) so their joint 2-norm over all params is
    at most `max_norms[slot]` (inf: no clipping), as `torch.nn.utils.clip_grad_norm_` does for one
    adapter's parameters alone: per-tensor norms, the norm of those, then a factor
    min(1, max_norm / (norm + 1e-6)). Zero rank padding adds nothing to a slot's norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or all(math.isinf(m) for m in max_norms):
        return
    s = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(s, -1), 2, dim=1) for g in grads])  # [params, slots]
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    limit = torch.tensor(list(max_norms), dtype=total.dtype).to(total.device, non_blocking=True)
    coef = torch.clamp(limit / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(s, *(1,) * (g.dim() - 1)).to(g.dtype))
