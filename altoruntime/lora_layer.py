"""Multi-adapter LoRA layers: one frozen projection plus every adapter, stacked by slot.

Adapters live in two stacked parameters per layer, A [S, d_in, r_max] and B [S, r_max, d_out]
(PEFT stores lora_A.weight as [r, d_in] and lora_B.weight as [d_out, r]; ours are their
transposes, padded to r_max with zeros). A slot is an index into dim 0. The per-step segment
metadata is built once and set on a `LoraContext` shared by all layers, so a layer call does no
host work beyond reading it (vLLM-style). Capacity S grows by doubling; the store shrinks it to a
power of two when at most half its slots hold training adapters, except under CUDA graphs, where it
keeps it (altoruntime/adapters/store.py, `shrink_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from altokernels import build_meta, multi_lora_linear
from altoruntime.backbone import find_targets


@dataclass
class LoraContext:
    """What every layer reads during one step: the segment metadata (None = base model only),
    whether dropout is on, and which kernel implementation to use. `single` = (slot, rank,
    scale) applies one adapter to every row whatever the row count (generation with a KV cache,
    where each call sees a different number of tokens); its metadata is built once per count.
    `group`: projections that share an input (q/k/v; gate/up) run as one fused call where
    `lora_group` covers them (off until measured on a GPU; ALTO_GROUP_PROJECTIONS=1)."""

    meta: Any | None = None
    training: bool = False
    impl: str = "auto"
    single: tuple[int, int, float] | None = None
    # training on the Triton path: weight gradients written in place, non-finite slots flagged here
    grad_flags: torch.Tensor | None = None
    group: bool = False
    _single_metas: dict[tuple[int, str], Any] = field(default_factory=dict)

    def meta_for(self, rows: int, device: torch.device) -> Any | None:
        if self.meta is not None or self.single is None:
            return self.meta
        key = (rows, str(device))
        if key not in self._single_metas:
            slot, rank, scale = self.single
            self._single_metas[key] = build_meta([rows], [slot], [rank], [scale], device)
        return self._single_metas[key]

    def set_single(self, single: tuple[int, int, float] | None) -> None:
        self.single = single
        self._single_metas.clear()

    def flags_now(self) -> torch.Tensor | None:
        """The in-place gradients' flags for a call now: only while training with autograd on."""
        return self.grad_flags if self.training and torch.is_grad_enabled() else None

    def uses_triton(self, x: torch.Tensor) -> bool:
        """Whether a layer call on x takes the Triton path (`impl` "triton", or "auto" on CUDA)."""
        return self.impl == "triton" or (self.impl == "auto" and x.is_cuda)


class MultiLoraLinear(nn.Module):
    """Drop-in replacement for a frozen nn.Linear (or transformers Conv1D, whose weight is stored
    [in, out]: PEFT's fan_in_fan_out) that adds each segment's own adapter."""

    def __init__(self, base: nn.Module, ctx: LoraContext, capacity: int = 1, r_max: int = 1) -> None:
        super().__init__()
        self.fan_in_fan_out = not isinstance(base, nn.Linear)  # a Conv1D: y = x W + b
        if self.fan_in_fan_out:
            self.in_features, self.out_features = base.weight.shape
        else:
            self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.ctx = ctx
        dev = base.weight.device
        self.A = nn.Parameter(torch.zeros(capacity, self.in_features, r_max, device=dev))
        self.B = nn.Parameter(torch.zeros(capacity, r_max, self.out_features, device=dev))

    @property
    def max_rank(self) -> int:
        """Largest rank this layer can hold (PEFT would accept more, but it is never useful)."""
        return min(self.in_features, self.out_features)

    def resize(self, capacity: int, r_max: int) -> None:
        """Grow the stacks in place (same Parameter objects, so optimizers keep their handles)."""
        s, _, r = self.A.shape
        if capacity == s and r_max == r:
            return
        with torch.no_grad():
            a = self.A.new_zeros(capacity, self.in_features, r_max)
            b = self.B.new_zeros(capacity, r_max, self.out_features)
            a[:s, :, :r] = self.A
            b[:s, :r, :] = self.B
        self.replace_stacks(a, b)

    @torch.no_grad()
    def compact(self, order: Sequence[int], capacity: int, r_max: int) -> None:
        """Keep slots `order` as slots 0..n-1 of smaller stacks (capacity, r_max)."""
        idx = torch.as_tensor(list(order), dtype=torch.long, device=self.A.device)
        a = self.A.new_zeros(capacity, self.in_features, r_max)
        b = self.B.new_zeros(capacity, r_max, self.out_features)
        a[: len(order)] = self.A.index_select(0, idx)[:, :, :r_max]
        b[: len(order)] = self.B.index_select(0, idx)[:, :r_max, :]
        self.replace_stacks(a, b)

    def replace_stacks(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """New stacks, with zero gradients of their shape made here: a gradient left to the next
        backward would be allocated inside a captured step (from the graphs' pool) and move
        again after it, so every captured graph would be dropped twice per reallocation."""
        had_grad = self.A.grad is not None
        self.A.grad = None
        self.B.grad = None
        self.A.data = a
        self.B.data = b
        if had_grad:
            self.A.grad = torch.zeros_like(a)
            self.B.grad = torch.zeros_like(b)

    @torch.no_grad()
    def zero_slot(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()

    @torch.no_grad()
    def set_slot(self, slot: int, lora_a: torch.Tensor, lora_b: torch.Tensor) -> None:
        """Write PEFT-layout weights (lora_A [r, d_in], lora_B [d_out, r]) into a slot."""
        r = lora_a.shape[0]
        self.zero_slot(slot)
        self.A[slot, :, :r] = lora_a.t().to(self.A)
        self.B[slot, :r, :] = lora_b.t().to(self.B)

    def get_slot(self, slot: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """PEFT-layout copies (lora_A [r, d_in], lora_B [d_out, r]) of a slot."""
        return (
            self.A.detach()[slot, :, :rank].t().contiguous().clone(),
            self.B.detach()[slot, :rank, :].t().contiguous().clone(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        meta = self.ctx.meta_for(x.numel() // shape[-1], x.device)
        weight = self.weight.t() if self.fan_in_fan_out else self.weight  # [out, in] either way
        if meta is None:
            return nn.functional.linear(x, weight, self.bias)
        y = multi_lora_linear(  # fp32 stacks under bf16 x: Triton reads them as they are, torch paths cast
            x.reshape(-1, shape[-1]), weight, self.bias, self.A, self.B, meta,
            impl=self.ctx.impl, training=self.ctx.training, grad_flags=self.ctx.flags_now(),
        )
        return y.view(*shape[:-1], self.out_features)


def lora_group(layers: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each of `layers` applied to x, the input they share (q/k/v; gate/up): one fused call for all
    of them (6 LoRA launches instead of 6 per layer, altokernels/group_function.py) where it covers
    them: alto's LoRA layers on one context with `group` on, on the Triton path, with adapters
    applied, no dropout drawn, no bias, one dtype (`group_covers`). Otherwise one call each, as
    the model's own forward makes them (any module: a projection that LoRA does not target too)."""
    ctx = getattr(layers[0], "ctx", None)
    if (ctx is None or not ctx.group or not all(isinstance(m, MultiLoraLinear) and m.ctx is ctx and not m.fan_in_fan_out
                                                  for m in layers) or not ctx.uses_triton(x)):
        return tuple(m(x) for m in layers)
    shape = x.shape
    meta = ctx.meta_for(x.numel() // shape[-1], x.device)
    if meta is None:
        return tuple(m(x) for m in layers)
    from altokernels.group_function import group_covers, group_lora_linear  # imports triton: not before it is used

    x2 = x.reshape(-1, shape[-1])
    weights, As, Bs = [m.weight for m in layers], [m.A for m in layers], [m.B for m in layers]
    if not group_covers(x2, weights, [m.bias for m in layers], As, Bs, meta, ctx.training):
        return tuple(m(x) for m in layers)
    ys = group_lora_linear(x2, weights, As, Bs, meta, training=ctx.training, grad_flags=ctx.flags_now())
    return tuple(y.view(*shape[:-1], m.out_features) for y, m in zip(ys, layers))


def install_lora_layers(
    model: nn.Module, target_modules: str | Sequence[str], ctx: LoraContext, capacity: int = 1, r_max: int = 1
) -> list[tuple[str, MultiLoraLinear]]:
    """Replace every target linear layer of `model` (`find_targets`) in place; return (name, layer)
    in module order."""
    out: list[tuple[str, MultiLoraLinear]] = []
    for name, lin in find_targets(model, target_modules):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoraLinear(lin, ctx, capacity, r_max)
        setattr(parent, leaf, layer)
        out.append((name, layer))
    return out


def peft_init(
    layers: Sequence[MultiLoraLinear], rank: int, seed: int,
    into: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Initial (lora_A, lora_B) per layer, exactly as PEFT makes them after `torch.manual_seed(seed)`.

    PEFT builds, per target in module order, nn.Linear(d_in, r) and nn.Linear(r, d_out) (each
    draws its default kaiming init), then re-draws lora_A with kaiming_uniform(a=sqrt(5)) and
    zeroes lora_B. We replay those draws on a private generator (no global RNG touched).
    into: (lora_A, lora_B) tensors per layer to draw into (e.g. views of one packed buffer).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, layer in enumerate(layers):
        a = torch.empty(rank, layer.in_features) if into is None else into[k][0]
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)  # nn.Linear(d_in, r) ctor
        nn.init.kaiming_uniform_(torch.empty(layer.out_features, rank), a=math.sqrt(5), generator=g)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)  # reset_lora_parameters
        b = torch.zeros(layer.out_features, rank) if into is None else into[k][1].zero_()
        out.append((a, b))
    return out
