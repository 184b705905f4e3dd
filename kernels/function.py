"""Autograd Function for the fused path: cuBLAS base GEMM + grouped Triton LoRA kernels.

Forward:  S = drop(X) A (shrink), Y = X W^T + b, then Y += s S B in place (expand, base added in
          registers). S is cached for backward.
Backward: dS = s dY B^T (shrink), dX = dY W then dX += dS A^T in place (expand),
          dA = drop(X)^T dS and dB = s S^T dY (one grouped launch each).
Launches per layer are constant in the number of adapters.
"""

from __future__ import annotations

import torch

from kernels import triton_kernels as tk
from kernels.meta import LoraBatchMeta
from kernels.reference import lora_input


class _FusedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, A, B, meta: LoraBatchMeta, training: bool):  # noqa: ANN001
        x = x.contiguous()
        xl, mult = lora_input(x, meta, training)
        r_max, d_out = B.shape[1], B.shape[2]
        a_str = (A.stride(0), A.stride(1), A.stride(2))  # [slots, K=d_in, r]
        b_str = (B.stride(0), B.stride(1), B.stride(2))  # [slots, r, N=d_out]
        s = tk.shrink(xl, A, meta, r_max, apply_scale=False, w_strides=a_str)
        y = torch.nn.functional.linear(x, weight, bias)
        y = tk.expand(s, B, meta, d_out, apply_scale=True, w_strides=b_str, base=y, out=y)
        ctx.meta = meta
        ctx.save_for_backward(x if weight.requires_grad else None, xl if A.requires_grad else None,
                              mult, s, weight, A, B)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001
        x, xl, mult, s, weight, A, B = ctx.saved_tensors
        meta: LoraBatchMeta = ctx.meta
        dy = dy.contiguous()
        r_max, d_in = A.shape[2], A.shape[1]
        need_x, need_w, need_b, need_a, need_bb = ctx.needs_input_grad[:5]
        dx = dw = db = da = dbb = None
        if need_x or need_a:
            # B^T viewed as [slots, K=d_out, r]
            ds = tk.shrink(dy, B, meta, r_max, apply_scale=True, w_strides=(B.stride(0), B.stride(2), B.stride(1)))
        if need_x:
            at_str = (A.stride(0), A.stride(2), A.stride(1))  # A^T as [slots, r, N=d_in]
            dx = dy @ weight
            if mult is None:
                dx = tk.expand(ds, A, meta, d_in, apply_scale=False, w_strides=at_str, base=dx, out=dx)
            else:
                dx += tk.expand(ds, A, meta, d_in, apply_scale=False, w_strides=at_str, base=None) * mult
        if need_w:
            dw = dy.t() @ x
        if need_b and ctx.has_bias:
            db = dy.sum(0)
        full = len(set(meta.slots)) == A.shape[0]
        alloc = torch.empty if full else torch.zeros
        if need_a:
            da = tk.seg_reduce(xl, ds, alloc(A.shape, device=A.device, dtype=A.dtype), meta,
                               rank_on_m=False, apply_scale=False)
        if need_bb:
            dbb = tk.seg_reduce(s, dy, alloc(B.shape, device=B.device, dtype=B.dtype), meta,
                                rank_on_m=True, apply_scale=True)
        return dx, dw, db, da, dbb, None, None


def fused_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    training: bool = True,
) -> torch.Tensor:
    """Triton path of `multi_lora_linear` (inputs already validated)."""
    return _FusedLoraLinear.apply(x, weight, bias, A, B, meta, training)
