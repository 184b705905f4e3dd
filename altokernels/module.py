"""`MultiLoraLinear`: a frozen nn.Linear plus stacked adapter slots, for the runtime.

Adapters live in fixed slots of two stacked parameters (A: [capacity, d_in, r_max],
B: [capacity, r_max, d_out]); adding or removing an adapter between steps rewrites its slot in
place, so nothing is reallocated and optimizer parameter references stay valid. Which slots a
step uses, with which ranks and scales, comes from the per-step `LoraBatchMeta`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from altokernels.api import multi_lora_linear
from altokernels.meta import LoraBatchMeta


class MultiLoraLinear(nn.Module):
    """y = base(x) + per-segment LoRA, with adapters stored by slot."""

    def __init__(self, base: nn.Linear, capacity: int, r_max: int, impl: str = "auto") -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        if r_max < 1:
            raise ValueError(f"r_max: must be >= 1, got {r_max}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.A = nn.Parameter(torch.zeros(capacity, base.in_features, r_max, **kw))
        self.B = nn.Parameter(torch.zeros(capacity, r_max, base.out_features, **kw))
        self.impl = impl

    @property
    def capacity(self) -> int:
        return self.A.shape[0]

    @property
    def r_max(self) -> int:
        return self.A.shape[2]

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.capacity:
            raise ValueError(f"slot: {slot} out of range for capacity {self.capacity}")

    @torch.no_grad()
    def add_adapter(self, slot: int, rank: int, generator: torch.Generator | None = None) -> None:
        """Initialise slot `slot` like PEFT: A ~ kaiming-uniform(a=sqrt(5)) on its first `rank`
        columns, B = 0 (the adapter starts as the identity); padded columns stay zero."""
        self._check_slot(slot)
        if not 1 <= rank <= self.r_max:
            raise ValueError(f"rank: must be in [1, {self.r_max}], got {rank}")
        self.remove_adapter(slot)
        bound = 1.0 / math.sqrt(self.A.shape[1])  # kaiming_uniform(a=sqrt(5)) on a [rank, d_in] weight
        init = torch.rand(self.A.shape[1], rank, generator=generator) * (2 * bound) - bound
        self.A[slot, :, :rank].copy_(init)

    @torch.no_grad()
    def remove_adapter(self, slot: int) -> None:
        """Zero the slot (its next user starts clean; unused slots get zero gradient)."""
        self._check_slot(slot)
        self.A[slot].zero_()
        self.B[slot].zero_()

    def forward(self, x: torch.Tensor, meta: LoraBatchMeta) -> torch.Tensor:
        lead = x.shape[:-1]
        y = multi_lora_linear(x.reshape(-1, x.shape[-1]), self.base.weight, self.base.bias, self.A, self.B, meta,
                              impl=self.impl, training=self.training)
        return y.reshape(*lead, y.shape[-1])


@torch.no_grad()
def reset_slot_optimizer_state(optimizer: torch.optim.Optimizer, module: MultiLoraLinear, slot: int) -> None:
    """Zero Adam-style moment slices of one slot (call when a slot gets a new adapter).

    Note: the step count (bias correction) is per parameter, shared by all slots."""
    for p in (module.A, module.B):
        state = optimizer.state.get(p, {})
        for v in state.values():
            if isinstance(v, torch.Tensor) and v.shape == p.shape:
                v[slot].zero_()
