"""One autograd Function for 2 or 3 LoRA projections that read the same input (q/k/v; gate/up).

Per projection (`function.py`) a layer's LoRA work is 6 Triton launches; a group of P members that
share X runs it as 6 launches in all, each with a member axis (the `member_*` kernels of
triton_kernels.py):

Forward:  S_p = X A_p for every p (one shrink; the S_p side by side in one fp32 buffer), the P base
          GEMMs Y_p = X W_p^T (cuBLAS, one per member: the frozen weights are not concatenated,
          which would copy most of a model), then Y_p += s S_p B_p for every p (one expand, in place).
Backward: dS_p = s dY_p B_p^T (one shrink), dX = sum_p dS_p A_p^T (one expand summing the members)
          plus the P base GEMMs dY_p W_p (addmm_ onto it), dA_p = X^T dS_p (one segment reduce) and
          dB_p = s S_p^T dY_p (one segment reduce), in place with per-slot finite flags as
          `fused_lora_linear(grad_flags=...)` writes them.

The step is host-bound (SmolLM2, 4 adapters: 42 of a decoder layer's 78 kernels were LoRA
launches, `experiments/bench_step_kernels.py`): a group cuts q/k/v's 18 launches and gate/up's 12
to 6 each. What it does not cover runs the members one by one (`group_covers` says which): dropout
(PEFT draws one mask per projection), a bias, mixed dtypes, non-contiguous stacks.
"""

from __future__ import annotations

from typing import Sequence

import torch

from altokernels import triton_kernels as tk
from altokernels.api import triton_usable
from altokernels.function import check_grad_flags
from altokernels.meta import LoraBatchMeta
from altokernels.validate import check_inputs

MAX_MEMBERS = 3


def _transposed(t: torch.Tensor) -> tuple[int, int, int]:
    """Strides of a [slots, a, b] stack read as [slots, b, a]."""
    return t.stride(0), t.stride(2), t.stride(1)


def _columns(s: torch.Tensor, widths: Sequence[int]) -> list[torch.Tensor]:
    """Member p's columns of a side-by-side buffer (views)."""
    out, c = [], 0
    for w in widths:
        out.append(s[:, c:c + w])
        c += w
    return out


class _GroupLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, meta: LoraBatchMeta, fast: bool, grad_flags: torch.Tensor | None, n: int,  # noqa: ANN001
                *params):
        weights, As, Bs = params[:n], params[n:2 * n], params[2 * n:]
        x = x.contiguous()
        r_maxes = [A.shape[2] for A in As]
        s = torch.empty((x.shape[0], sum(r_maxes)), device=x.device, dtype=torch.float32)  # S stays fp32
        tk.member_shrink([x] * n, As, [A.stride() for A in As], meta, r_maxes, apply_scale=False, out=s, fast=fast)
        ys = [torch.nn.functional.linear(x, w) for w in weights]
        tk.member_expand(s, r_maxes, Bs, [B.stride() for B in Bs], meta, ys, has_base=True, apply_scale=True,
                         fast=fast)
        ctx.meta, ctx.fast, ctx.n, ctx.r_maxes = meta, fast, n, r_maxes
        ctx.into = None  # in place: (A grads, B grads, flags), read now (a captured step keeps these addresses)
        if grad_flags is not None and all(A.requires_grad for A in As) and all(B.requires_grad for B in Bs):
            if any(t.grad is None or t.grad.shape != t.shape for t in (*As, *Bs)):
                raise ValueError("grad_flags: in-place weight gradients need the stacks' gradients allocated")
            ctx.into = ([A.grad for A in As], [B.grad for B in Bs], grad_flags)
        need_x = any(A.requires_grad for A in As) or any(w.requires_grad for w in weights)
        ctx.save_for_backward(x if need_x else None, s, *weights, *As, *Bs)
        return tuple(ys)

    @staticmethod
    def backward(ctx, *dys):  # noqa: ANN001
        n, meta, fast, r_maxes = ctx.n, ctx.meta, ctx.fast, ctx.r_maxes
        x, s, *params = ctx.saved_tensors
        weights, As, Bs = params[:n], params[n:2 * n], params[2 * n:]
        dys = [d.contiguous() for d in dys]
        need = ctx.needs_input_grad
        need_x, need_w = need[0], need[5:5 + n]
        need_a, need_b = any(need[5 + n:5 + 2 * n]), any(need[5 + 2 * n:])
        into: dict = {}
        das = dbs = None
        if ctx.into is not None:  # accumulate into the gradients themselves, flagging non-finite slots
            das, dbs, flags = ctx.into
            into = {"accumulate": True, "flags": flags}
        else:
            alloc = torch.empty if len(meta.slots) == As[0].shape[0] else torch.zeros  # unused slots: zero grad
            if need_a:
                das = [alloc(A.shape, device=A.device, dtype=A.dtype) for A in As]
            if need_b:
                dbs = [alloc(B.shape, device=B.device, dtype=B.dtype) for B in Bs]
        ds = None
        if need_x or need_a:
            ds = torch.empty((dys[0].shape[0], sum(r_maxes)), device=dys[0].device, dtype=torch.float32)
            tk.member_shrink(dys, Bs, [_transposed(B) for B in Bs], meta, r_maxes, apply_scale=True, out=ds,
                             fast=fast)
        if need_a:
            tk.member_seg_reduce([x] * n, _columns(ds, r_maxes), das, meta, rank_on_m=False, apply_scale=False,
                                 fast=fast, **into)
        if need_b:
            tk.member_seg_reduce(_columns(s, r_maxes), dys, dbs, meta, rank_on_m=True, apply_scale=True, fast=fast,
                                 **into)
        dx = None
        if need_x:
            dx = torch.empty((dys[0].shape[0], As[0].shape[1]), device=dys[0].device, dtype=dys[0].dtype)
            tk.member_expand(ds, r_maxes, As, [_transposed(A) for A in As], meta, [dx], has_base=False,
                             apply_scale=False, sum_members=True, fast=fast)
            for dy, w in zip(dys, weights):
                dx.addmm_(dy, w)
        dws = [dy.t() @ x if nw else None for dy, nw in zip(dys, need_w)]
        if into or not need_a:
            das = [None] * n  # written in place (or not asked for): nothing for autograd to accumulate
        if into or not need_b:
            dbs = [None] * n
        return (dx, None, None, None, None, *dws, *das, *dbs)


def group_covers(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                 As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor], meta: LoraBatchMeta,
                 training: bool) -> bool:
    """Whether `group_lora_linear` takes these members (else: one `multi_lora_linear` call each).

    Not covered: fewer than 2 or more than 3 members; dropout while training (PEFT draws a mask per
    projection); a bias; weights of another dtype than x, or stacks of mixed dtypes; stacks that are
    not contiguous, or that differ in which of them need a gradient."""
    n = len(weights)
    if not 2 <= n <= MAX_MEMBERS or not (len(biases) == len(As) == len(Bs) == n):
        return False
    if training and meta.row_dropout is not None:
        return False
    if any(b is not None for b in biases) or any(w.dtype != x.dtype for w in weights):
        return False
    stacks = (*As, *Bs)
    if any(t.dtype != As[0].dtype or not t.is_contiguous() for t in stacks):
        return False
    return len({A.requires_grad for A in As}) == 1 and len({B.requires_grad for B in Bs}) == 1


def group_lora_linear(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    meta: LoraBatchMeta,
    training: bool = True,
    grad_flags: torch.Tensor | None = None,
    fast_launch: bool = True,
) -> tuple[torch.Tensor, ...]:
    """(y_p for each member p) = x W_p^T plus, on segment i's rows, scales[i] * x_i A_p[slot_i] B_p[slot_i],
    as `fused_lora_linear` computes each (no bias; no dropout while `training`: `group_covers`), in 6
    Triton launches for the members' LoRA work together. grad_flags: in-place weight gradients, as
    there (one flags tensor for every member's stacks)."""
    n = len(weights)
    if not 2 <= n <= MAX_MEMBERS or len(As) != n or len(Bs) != n:
        raise ValueError(f"members: expected 2 or 3 (weight, A, B) triples, got {n}, {len(As)}, {len(Bs)}")
    for w, A, B in zip(weights, As, Bs):
        check_inputs(x, w, None, A, B, meta, "triton")
    if not triton_usable(x):
        raise ValueError("x: the group path needs CUDA tensors or TRITON_INTERPRET=1 set before importing triton")
    if training and meta.row_dropout is not None:
        raise ValueError("meta: dropout draws a mask per projection; run the members one by one")
    for A in As:
        check_grad_flags(grad_flags, A)
    return _GroupLoraLinear.apply(x, meta, fast_launch, grad_flags, n, *weights, *As, *Bs)
