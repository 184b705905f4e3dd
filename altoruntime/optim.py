"""Per-adapter AdamW over stacked adapter tensors, vectorized over slots.

Each stacked parameter [S, ...] holds one adapter per slot; every slot has its own lr, weight
decay, betas, eps and step count. One `step(slots)` updates the given slots of every parameter
with a few batched tensor ops (no Python loop over adapters), following torch.optim.AdamW's
single-tensor update op for op so an adapter trained here matches one trained alone.

The default `impl="fused"` step groups the stepped slots by their (lr, weight decay, betas,
eps) and calls `torch._fused_adamw_` once per group on per-slot views of every parameter (a
handful of multi-tensor launches instead of ~18 ops per parameter); `impl="loop"` keeps the
original batched-index path for comparison. Slot state moves to and from the host in one copy.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from altoruntime.slot_blocks import SlotBlocks

_HYPER = ("lr", "weight_decay", "beta1", "beta2", "eps", "step")


class SlotAdamW:
    """AdamW whose hyperparameters and state are indexed by adapter slot (dim 0 of each param)."""

    def __init__(self, params: Sequence[nn.Parameter], impl: Literal["fused", "loop"] = "fused",
                 rank_dims: Sequence[int | None] | None = None) -> None:
        """`rank_dims[i]`: which dim of param i's per-slot tensor is the LoRA rank (None: none);
        `slot_state(slot, rank)` then saves only the first `rank` entries of that dim."""
        if impl not in ("fused", "loop"):
            raise ValueError(f"impl: must be 'fused' or 'loop', got {impl!r}")
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
        if rank_dims is not None and len(rank_dims) != len(self.params):
            raise ValueError(f"rank_dims: need one entry per param ({len(self.params)}), got {len(rank_dims)}")
        self.rank_dims = list(rank_dims) if rank_dims is not None else [None] * len(self.params)
        one_device = len({(p.device, p.dtype) for p in self.params}) == 1
        self.impl = impl if one_device else "loop"  # the fused kernel wants one device and dtype
        # slot_state / load_slot_state in one packed transfer (worth it off the CPU only)
        self.pack = one_device and self.params[0].device.type != "cpu"
        # one slot's rank blocks of every moment, moved in a few ops (suspend, resume, park)
        self._blocks = SlotBlocks(self._moments, self.rank_dims * 2)
        self._ranked = one_device and all(d is not None for d in self.rank_dims)
        self._invalidate()

    def _moments(self) -> list[torch.Tensor]:
        """exp_avg then exp_avg_sq of every param (a bound method: copies of the optimizer
        read their own)."""
        return self.exp_avg + self.exp_avg_sq

    def _invalidate(self) -> None:
        """Drop every cached view (they keep old storage alive, e.g. after a compact)."""
        self._blocks.invalidate()
        self._views: tuple | None = None  # per-slot views for the fused step (see _slot_views)
        self._views_key: tuple = ()
        self._grad_cache: dict[int, tuple[int, tuple[int, ...], tuple[torch.Tensor, ...]]] = {}
        self._lists_key: tuple | None = None
        self._grads_key: tuple | None = None
        self._state_lists: dict[int, tuple[list[torch.Tensor], ...]] = {}
        self._grad_lists: dict[int, list[torch.Tensor]] = {}

    @property
    def capacity(self) -> int:
        return self.params[0].shape[0]

    def resize(self) -> None:
        """Pad state to the params' current shapes (call after the layers grew)."""
        self._invalidate()
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
        self._invalidate()
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

    def set_lr(self, slot: int, lr: float) -> None:
        """The slot's lr from its next update on (a schedule sets it before each update)."""
        if not lr >= 0:
            raise ValueError(f"lr: must be >= 0, got {lr}")
        self.hyper["lr"][slot] = lr

    @torch.no_grad()
    def free_slot(self, slot: int) -> None:
        torch._foreach_zero_(self._blocks.full(slot))
        for v in self.hyper.values():
            v[slot] = 0.0

    def _rank_view(self, t: torch.Tensor, i: int, rank: int | None) -> torch.Tensor:
        d = self.rank_dims[i]
        return t if rank is None or d is None else t.narrow(d, 0, min(rank, t.shape[d]))

    @torch.no_grad()
    def slot_state(self, slot: int, rank: int | None = None, moments: bool = True,
                   host: bool = True) -> dict[str, object]:
        """CPU copy of one slot's state (for suspend, snapshots, checkpoints), gathered on the
        device and moved in one copy. With `rank` (and `rank_dims`), only the rank block is
        kept: the rest is zero padding, and `load_slot_state` pads it back. `moments=False`
        keeps the hyper-parameters and step count only (for a job that never trains again);
        `load_slot_state` then leaves the moments zero. `host=False`: the moments stay on the
        params' device, as views of one gathered tensor (no copy to the host, no host sync)."""
        n = len(self.params)
        hyper = {k: float(v[slot]) for k, v in self.hyper.items()}
        if not moments:
            return {"exp_avg": [], "exp_avg_sq": [], "hyper": hyper}
        if rank is not None and self._ranked and (self.pack or not host):
            r = min(rank, *(p.shape[d + 1] for p, d in zip(self.params, self.rank_dims)))
            flat = self._blocks.gather(slot, r)  # a stack per block shape and one cat, whatever the layer count
            if host:
                outs = [v.clone() for v in self._blocks.unflatten(flat.cpu(), r)]
            else:  # views of one new device tensor: nothing else holds it
                outs = self._blocks.unflatten(flat, r)
            return {"exp_avg": outs[:n], "exp_avg_sq": outs[n:], "hyper": hyper}
        parts = [self._rank_view(t[slot], i % n, rank) for i, t in enumerate(self.exp_avg + self.exp_avg_sq)]
        if not self.pack and host:
            outs = [p.detach().cpu().clone() for p in parts]
        else:
            flat = torch.cat([p.reshape(-1) for p in parts])
            if host:
                flat = flat.cpu()
            chunks = flat.split([p.numel() for p in parts])
            # on the device: views of one new tensor (nothing else holds it); on the host: each its own copy
            outs = [c.view(p.shape).clone() if host else c.view(p.shape) for c, p in zip(chunks, parts)]
        return {"exp_avg": outs[:n], "exp_avg_sq": outs[n:], "hyper": hyper}

    @torch.no_grad()
    def load_slot_state(self, slot: int, state: dict[str, object]) -> None:
        """Write a `slot_state` back, into a possibly larger slot (rank padding is kept zero),
        in one host-to-device copy (or on-device copies for a state kept there)."""
        self.free_slot(slot)
        if self._fast_load(slot, [*state["exp_avg"], *state["exp_avg_sq"]]):
            for k, v in state["hyper"].items():
                self.hyper[k][slot] = v
            return
        dsts, srcs = [], []
        for dst, src in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for t, s in zip(dst, src):
                # the saved state may be padded to a larger r_max than now; padding is zero, so
                # copying the common leading block is exact (the slot has room for the rank)
                idx = tuple(slice(0, min(n, m)) for n, m in zip(s.shape, t[slot].shape))
                dsts.append(t[slot][idx])
                srcs.append(s[idx])
        if dsts and srcs[0].device == dsts[0].device and self.pack:  # kept on the device: no transfer
            torch._foreach_copy_(dsts, srcs)
            dsts = []
        if not self.pack:
            for d, s in zip(dsts, srcs):
                d.copy_(s)
            dsts = []
        if dsts:
            flat = torch.cat([s.reshape(-1).to(dsts[0].dtype) for s in srcs]).to(dsts[0].device)
            pieces = [c.view(s.shape) for c, s in zip(flat.split([s.numel() for s in srcs]), srcs)]
            torch._foreach_copy_(dsts, pieces)
        for k, v in state["hyper"].items():
            self.hyper[k][slot] = v

    def _fast_load(self, slot: int, srcs: list[torch.Tensor]) -> bool:
        """Copy a state of the slot's own block shapes (a `slot_state` at a rank the stacks
        hold) in a few ops; False when the shapes differ (the general path pads them)."""
        if not (self._ranked and self.pack and len(srcs) == 2 * len(self.params)):
            return False
        r = srcs[0].shape[self.rank_dims[0]]
        dsts = self._blocks.blocks(slot, r)
        if any(d.shape != s.shape for d, s in zip(dsts, srcs)):
            return False
        if srcs[0].device != dsts[0].device:  # from the host: one transfer
            srcs = self._blocks.unflatten(self._blocks.flatten(srcs, r).to(dsts[0].device, dsts[0].dtype), r)
        torch._foreach_copy_(dsts, srcs)
        return True

    def step_count(self, slot: int) -> int:
        return int(self.hyper["step"][slot])

    @torch.no_grad()
    def step(self, slots: Sequence[int]) -> None:
        """One AdamW update of `slots` (those that had a finite gradient this step)."""
        if len(slots) == 0:
            return
        if self.impl == "fused":
            self._step_fused(slots)
        else:
            self._step_loop(slots)

    def _slot_views(self) -> tuple:
        """Per param: the per-slot views (unbind(0)) of the param, exp_avg, exp_avg_sq and of a
        [capacity, n_params] float32 step buffer (one distinct step tensor per slot and param,
        as the fused kernel wants). Rebuilt when any param's storage or shape changed."""
        key = tuple((p.data_ptr(), tuple(p.shape)) for p in self.params)
        if self._views is None or key != self._views_key:
            p0 = self.params[0]
            steps = torch.zeros(self.capacity, len(self.params), dtype=torch.float32, device=p0.device)
            self._views = (
                [p.data.unbind(0) for p in self.params],
                [t.unbind(0) for t in self.exp_avg],
                [t.unbind(0) for t in self.exp_avg_sq],
                steps,
                [list(row.unbind(0)) for row in steps.unbind(0)],  # [slot][param]
            )
            self._views_key = key
        return self._views

    def _grad_views(self, i: int) -> tuple[torch.Tensor, ...]:
        """Per-slot views of param i's gradient, reused while the gradient tensor is the same
        one (see `zero_grad`): making ~slots x params views costs more host time than the update."""
        g = self.params[i].grad
        key = (g.data_ptr(), tuple(g.shape))
        hit = self._grad_cache.get(i)
        if hit is not None and hit[:2] == key:
            return hit[2]
        if not g.is_contiguous():
            return g.contiguous().unbind(0)
        views = g.unbind(0)
        self._grad_cache[i] = (*key, views)
        return views

    @torch.no_grad()
    def zero_grad(self, slots: Sequence[int] | None = None) -> None:
        """Zero the params' gradients in place (a few multi-tensor launches), keeping the tensors
        so the backward accumulates into them and the cached per-slot views stay valid; with
        `slots`, exactly those slots (per-slot views)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        if slots is None:
            torch._foreach_zero_([self.params[i].grad for i in live])
            return
        views = []
        for i in live:
            g = self.params[i].grad
            if g.is_contiguous():  # (cached per-slot views of a contiguous gradient write through)
                views.append(self._grad_views(i))
            else:
                g.index_fill_(0, torch.as_tensor(list(slots), device=g.device), 0)
        if views:
            torch._foreach_zero_([v[s] for s in slots for v in views])

    def _slot_lists(self, live: list[int], grads: list[tuple[torch.Tensor, ...]]) -> tuple[dict, dict]:
        """Per-slot lists of the views a fused call takes, filled lazily and kept while the
        views they come from are the same objects (compared by identity, references held)."""
        key = (self._views, tuple(live))
        if self._lists_key is None or self._lists_key[0] is not key[0] or self._lists_key[1] != key[1]:
            self._lists_key, self._state_lists = key, {}
        if self._grads_key is None or len(self._grads_key) != len(grads) or any(
                a is not b for a, b in zip(self._grads_key, grads)):
            self._grads_key, self._grad_lists = tuple(grads), {}
        return self._state_lists, self._grad_lists

    def _step_fused(self, slots: Sequence[int]) -> None:
        idx_cpu = torch.as_tensor(list(slots), dtype=torch.long)
        self.hyper["step"][idx_cpu] += 1
        params, exp_avg, exp_avg_sq, steps, step_views = self._slot_views()
        # one host-to-device copy keeps the kernel's float32 steps equal to the float64 host ones
        steps.copy_(self.hyper["step"].to(torch.float32).unsqueeze(1).expand_as(steps))
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        grads = [self._grad_views(i) for i in live]
        state_lists, grad_lists = self._slot_lists(live, grads)
        h = {k: v.tolist() for k, v in self.hyper.items()}
        groups: dict[tuple[float, ...], list[int]] = {}
        for s in slots:
            key = (h["lr"][s], h["weight_decay"][s], h["beta1"][s], h["beta2"][s], h["eps"][s])
            groups.setdefault(key, []).append(s)
        for (lr, wd, b1, b2, eps), group in groups.items():
            ps, ms, vs, ss, gs = [], [], [], [], []
            for s in group:
                if s not in state_lists:
                    state_lists[s] = ([params[i][s] for i in live], [exp_avg[i][s] for i in live],
                                      [exp_avg_sq[i][s] for i in live], [step_views[s][i] for i in live])
                if s not in grad_lists:
                    grad_lists[s] = [g[s] for g in grads]
                p_, m_, v_, s_ = state_lists[s]
                ps += p_
                ms += m_
                vs += v_
                ss += s_
                gs += grad_lists[s]
            torch._fused_adamw_(ps, gs, ms, vs, [], ss, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=eps,
                                amsgrad=False, maximize=False)

    def _step_loop(self, slots: Sequence[int]) -> None:
        """The original path: batched index_select / elementwise / index_copy per param."""
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
        self._invalidate()
        for dst, src in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for i, s in enumerate(src):
                if s.shape != self.params[i].shape:
                    raise ValueError(f"state: shape {tuple(s.shape)} != param shape {tuple(self.params[i].shape)}")
                dst[i] = s.to(self.params[i].device, self.params[i].dtype).clone()
        self.hyper = {k: v.clone() for k, v in state["hyper"].items()}
