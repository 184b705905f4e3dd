"""RMSNorm of a frozen weight in one Triton kernel forward and one backward (dX only), as
transformers' Llama computes it: the inverse RMS in fp32, the normalized row cast back to the
input's dtype before the weight multiplies it.

Liger-Kernel's RMSNorm backward takes its rows per program (rows / SMs) as an argument that Triton
specializes (1, or a multiple of 16, or neither), as it does the row count: a group that shrinks
from 60 adapters to 1 met new compiles of it on an H200 (session 18's `diag_shrink`). Here every
constexpr is the hidden size, and the row count is a plain runtime int that Triton does not
specialize: one compile each way for a model, whatever the batches. The weight's gradient is not
computed (the backbone is frozen): a weight that requires one is refused.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["x_stride", "y_stride"])
def _rms_forward(x_ptr, w_ptr, y_ptr, rstd_ptr, x_stride, y_stride, n, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n + eps)
    tl.store(rstd_ptr + row, rstd)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    h = (x * rstd).to(y_ptr.dtype.element_ty).to(tl.float32)  # cast back before the weight, as transformers
    tl.store(y_ptr + row * y_stride + cols, (w * h).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["x_stride", "dy_stride", "dx_stride"])
def _rms_backward(x_ptr, w_ptr, dy_ptr, dx_ptr, rstd_ptr, x_stride, dy_stride, dx_stride, n, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * dy_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + row)
    m = (dy * w).to(dx_ptr.dtype.element_ty).to(tl.float32)  # the gradient of the cast row, in its dtype
    dx = rstd * m - (rstd * rstd * rstd / n) * x * tl.sum(m * x, axis=0)
    tl.store(dx_ptr + row * dx_stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as [rows, hidden] with the last dim contiguous (a view where the strides allow)."""
    t = t if t.stride(-1) == 1 else t.contiguous()
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:  # rows not evenly strided
        return t.reshape(-1, t.shape[-1])


class RMSNormFunction(torch.autograd.Function):
    """(x [..., hidden], weight [hidden], eps) -> weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype);
    the backward gives dX only."""

    @staticmethod
    def forward(ctx, x, weight, eps):  # noqa: ANN001, ANN205
        if weight.requires_grad:
            raise ValueError("RMSNormFunction: the weight's gradient is not computed (a frozen backbone's norm only)")
        if weight.dim() != 1 or weight.shape[0] != x.shape[-1] or weight.dtype != x.dtype:
            raise ValueError(f"RMSNormFunction: weight {tuple(weight.shape)} {weight.dtype} does not fit "
                             f"x {tuple(x.shape)} {x.dtype}")
        x2 = _rows(x)
        n = x2.shape[1]
        y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        rstd = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)
        if x2.shape[0]:
            _rms_forward[(x2.shape[0],)](x2, weight, y, rstd, x2.stride(0), y.stride(0), n, eps,
                                         BLOCK=triton.next_power_of_2(n))
        ctx.save_for_backward(x2, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        x2, weight, rstd = ctx.saved_tensors
        dy2 = _rows(dy)
        dx = torch.empty(x2.shape, dtype=x2.dtype, device=x2.device)
        if x2.shape[0]:
            _rms_backward[(x2.shape[0],)](x2, weight, dy2, dx, rstd, x2.stride(0), dy2.stride(0), dx.stride(0),
                                          x2.shape[1], BLOCK=triton.next_power_of_2(x2.shape[1]))
        return dx.view(dy.shape), None, None
