"""Per-adapter AdamW over stacked adapter tensors, vectorized over slots.

Each stacked parameter [S, ...] holds one adapter per slot; every slot has its own lr, weight
decay, betas, eps and step count. One `step(slots)` updates the given slots of every parameter
with a few batched tensor ops (no Python loop over adapters), following torch.optim.AdamW's
single-tensor update op for op so an adapter trained here matches one trained alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_HYPER = ("lr", "weight_decay", "beta1", "beta2", "eps", "step")


class SlotAdamW:
    """AdamW whose hyperparameters and state are indexed by adapter slot (dim 0 of each param)."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        if not params:
            raise ValueError("params: need at least one stacked parameter")
        self.params = list(params)
        s = self.capacity
        if any(p.shape[0] != s for p in self.params):
            raise ValueError("params: all stacked parameters need the same slot count (dim 0)")
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # float64 host copies: bias corrections are computed in double, like torch's scalar path
        self.hyper = {k: torch.zeros(s, dtype=torch.float64) for k in _HYPER}

    @property
    def capacity(self) -> int:
        return self.params[0].shape[0]

    def resize(self) -> None:
        """Pad state to the params' current shapes (call after the layers grew)."""
        s = self.capacity
        for states in (self.exp_avg, self.exp_avg_sq):
            for i, p in enumerate(self.params):
                old = states[i]
                if old.shape == p.shape:
                    continue
                new = torch.zeros_like(p)
                new[tuple(slice(0, n) for n in old.shape)] = old
                states[i] = new
        for k, v in self.hyper.items():
            if v.shape[0] < s:
                self.hyper[k] = torch.cat([v, torch.zeros(s - v.shape[0], dtype=torch.float64)])

    @torch.no_grad()
    def compact(self, order: Sequence[int]) -> None:
        """Keep slots `order` as slots 0..n-1, padded to the params' current (smaller) shapes
        (call after the layers compacted the same way)."""
        idx_cpu = torch.as_tensor(list(order), dtype=torch.long)
        for states in (self.exp_avg, self.exp_avg_sq):
            for i, p in enumerate(self.params):
                kept = states[i].index_select(0, idx_cpu.to(states[i].device))
                new = torch.zeros_like(p)
                new[tuple(slice(0, min(a, b)) for a, b in zip(kept.shape, p.shape))] = kept[
                    tuple(slice(0, min(a, b)) for a, b in zip(kept.shape, p.shape))]
                states[i] = new
        s = self.capacity
        for k, v in self.hyper.items():
            self.hyper[k] = torch.cat([v[idx_cpu], torch.zeros(s - len(idx_cpu), dtype=torch.float64)])

    def init_slot(
        self, slot: int, lr: float, weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> None:
        """Fresh state for a newly admitted adapter."""
        if not lr > 0:
            raise ValueError(f"lr: must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {weight_decay}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas: each must be in [0, 1), got {betas}")
        self.free_slot(slot)
        for k, v in zip(_HYPER, (lr, weight_decay, betas[0], betas[1], eps, 0.0)):
            self.hyper[k][slot] = v

    @torch.no_grad()
    def free_slot(self, slot: int) -> None:
        for st in self.exp_avg + self.exp_avg_sq:
            st[slot].zero_()
        for v in self.hyper.values():
            v[slot] = 0.0

    def slot_state(self, slot: int) -> dict[str, object]:
        """CPU copy of one slot's state (for suspend, snapshots, checkpoints)."""
        return {
            "exp_avg": [t[slot].detach().cpu().clone() for t in self.exp_avg],
            "exp_avg_sq": [t[slot].detach().cpu().clone() for t in self.exp_avg_sq],
            "hyper": {k: float(v[slot]) for k, v in self.hyper.items()},
        }

    @torch.no_grad()
    def load_slot_state(self, slot: int, state: dict[str, object]) -> None:
        """Write a `slot_state` back, into a possibly larger slot (rank padding is kept zero)."""
        self.free_slot(slot)
        for dst, src in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for t, s in zip(dst, src):
                # the saved state may be padded to a larger r_max than now; padding is zero, so
                # copying the common leading block is exact (the slot has room for the rank)
                idx = tuple(slice(0, min(n, m)) for n, m in zip(s.shape, t[slot].shape))
                t[slot][idx] = s[idx].to(t.device, t.dtype)
        for k, v in state["hyper"].items():
            self.hyper[k][slot] = v

    def step_count(self, slot: int) -> int:
        return int(self.hyper["step"][slot])

    @torch.no_grad()
    def step(self, slots: Sequence[int]) -> None:
        """One AdamW update of `slots` (those that had a finite gradient this step)."""
        if len(slots) == 0:
            return
        idx_cpu = torch.as_tensor(list(slots), dtype=torch.long)
        h = {k: v[idx_cpu] for k, v in self.hyper.items()}
        h["step"] = h["step"] + 1
        self.hyper["step"][idx_cpu] = h["step"]
        bc1 = 1 - h["beta1"] ** h["step"]
        bc2_sqrt = (1 - h["beta2"] ** h["step"]).sqrt()
        coef_host = torch.stack([
            1 - h["lr"] * h["weight_decay"], 1 - h["beta1"], h["beta2"], 1 - h["beta2"], bc2_sqrt, h["eps"],
            -h["lr"] / bc1,
        ])  # [7, n]: one host-to-device copy per (device, dtype) per step, shared by all params
        cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            key = (p.device, p.dtype)
            if key not in cache:
                cache[key] = (idx_cpu.to(p.device), coef_host.to(p.device, p.dtype))
            idx, coef = cache[key]
            c = coef.view(7, -1, *(1,) * (p.dim() - 1))
            decay, one_b1, b2, one_b2, bc2, eps, neg_step = c
            w, g = p.data.index_select(0, idx), p.grad.index_select(0, idx)
            m, v = self.exp_avg[i].index_select(0, idx), self.exp_avg_sq[i].index_select(0, idx)
            w.mul_(decay)
            m.lerp_(g, one_b1)
            v.mul_(b2).addcmul_(g, g * one_b2)
            denom = (v.sqrt() / bc2).add_(eps)
            w.addcdiv_(m * neg_step, denom)
            p.data.index_copy_(0, idx, w)
            self.exp_avg[i].index_copy_(0, idx, m)
            self.exp_avg_sq[i].index_copy_(0, idx, v)

    def state_dict(self) -> dict[str, object]:
        return {
            "exp_avg": [t.detach().cpu().clone() for t in self.exp_avg],
            "exp_avg_sq": [t.detach().cpu().clone() for t in self.exp_avg_sq],
            "hyper": {k: v.clone() for k, v in self.hyper.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        for dst, src in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for i, s in enumerate(src):
                if s.shape != self.params[i].shape:
                    raise ValueError(f"state: shape {tuple(s.shape)} != param shape {tuple(self.params[i].shape)}")
                dst[i] = s.to(self.params[i].device, self.params[i].dtype).clone()
        self.hyper = {k: v.clone() for k, v in state["hyper"].items()}
