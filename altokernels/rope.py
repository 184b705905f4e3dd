"""Rotary position embedding of q and k in one Triton kernel, in place, forward and backward.

Liger-Kernel's rope takes the batch size as a `tl.constexpr` (unused where all rows share one
position table), so every new row count compiles the kernel again: in an early-exit run the
fused step's row count changes whenever the group shrinks or a bucket changes (the H200 e2e of
session 18: 9 training and 11 evaluation row counts, each a compile of ~0.3 s in the step that
met it, and `diag_shrink` found new compiles at every group size). Here every constexpr is a
property of the model (heads, head size, rotary width), and the row count, the sequence length
and the position table's batch stride are plain runtime ints that Triton does not specialize,
so a model's rope compiles twice (forward and backward) whatever the batches.

Same math as transformers' `apply_rotary_pos_emb` (the rotate-half form, cos/sin duplicated over
the two halves of the rotary width; partial rotary widths rotate the leading dims only), computed
in fp32 and stored in the activations' dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(ptr, base, head_stride, c, s, d, dmask, N: tl.constexpr, PAD: tl.constexpr, HALF: tl.constexpr):
    """Rotate the N heads at ptr + base (head i at + i * head_stride) in place: the rotary width's
    two halves (x1, x2) -> (x1 c - x2 s, x2 c + x1 s), in fp32, stored in ptr's dtype."""
    h = tl.arange(0, PAD)
    offs = base + h[:, None] * head_stride + d[None, :]
    mask = (h[:, None] < N) & dmask[None, :]
    x1 = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + offs + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(ptr + offs, (x1 * c - x2 * s).to(ptr.dtype.element_ty), mask=mask)
    tl.store(ptr + offs + HALF, (x2 * c + x1 * s).to(ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["sl", "cos_sb"])
def _rope_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, sl, q_sb, q_st, q_sh, k_sb, k_st, k_sh, cos_sb, cos_st,
                 NQ: tl.constexpr, NK: tl.constexpr, PAD_Q: tl.constexpr, PAD_K: tl.constexpr,
                 HALF: tl.constexpr, PAD_HALF: tl.constexpr, BACKWARD: tl.constexpr):
    """One program per token (row b of the batch, position t): rotates that token's q and k heads."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // sl
    t = pid % sl
    d = tl.arange(0, PAD_HALF)
    dmask = d < HALF
    c = tl.load(cos_ptr + b * cos_sb + t * cos_st + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + b * cos_sb + t * cos_st + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    if BACKWARD:  # the transpose of a rotation is the rotation by -angle
        s = -s
    _rotate_heads(q_ptr, b * q_sb + t * q_st, q_sh, c, s, d, dmask, NQ, PAD_Q, HALF)
    _rotate_heads(k_ptr, b * k_sb + t * k_st, k_sh, c, s, d, dmask, NK, PAD_K, HALF)


def _table(cos: torch.Tensor) -> torch.Tensor:
    """cos/sin as [batch or 1, seq, rotary width] (transformers gives [b, s, w]; [s, w] and a head
    dim of 1 are accepted too), last dim contiguous."""
    if cos.dim() == 4:
        cos = cos.squeeze(1)
    if cos.dim() == 2:
        cos = cos.unsqueeze(0)
    return cos if cos.stride(-1) == 1 else cos.contiguous()


def rope_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool = False) -> None:
    """Rotate q [b, heads, s, d] and k [b, kv heads, s, d] in place (any strides with the last dim
    contiguous) by the positions' angles in cos/sin; backward: by minus the angles (the gradient)."""
    b, nq, s, hd = q.shape
    nk = k.shape[1]
    cos, sin = _table(cos), _table(sin)
    width = cos.shape[-1]
    if width % 2 or width > hd or sin.shape != cos.shape or cos.shape[1] != s or cos.shape[0] not in (1, b):
        raise ValueError(f"rope: cos/sin {tuple(cos.shape)} do not fit q {tuple(q.shape)}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or k.shape[0] != b or k.shape[2] != s or k.shape[3] != hd:
        raise ValueError(f"rope: q {tuple(q.shape)} and k {tuple(k.shape)} need the same batch, length and head "
                         "size, with the last dim contiguous")
    if b * s == 0:
        return
    half = width // 2
    cos_sb = cos.stride(0) if cos.shape[0] > 1 else 0
    _rope_kernel[(b * s,)](
        q, k, cos, sin, s, q.stride(0), q.stride(2), q.stride(1), k.stride(0), k.stride(2), k.stride(1),
        cos_sb, cos.stride(1), NQ=nq, NK=nk, PAD_Q=triton.next_power_of_2(nq), PAD_K=triton.next_power_of_2(nk),
        HALF=half, PAD_HALF=triton.next_power_of_2(half), BACKWARD=backward)


class RopeFunction(torch.autograd.Function):
    """(q, k, cos, sin) -> (q, k) rotated, in place (q and k are projections' outputs that no
    backward reads); the backward rotates the incoming gradients back, in place as well."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):  # noqa: ANN001, ANN205
        rope_(q, k, cos, sin)  # (not marked dirty, as Liger's: the projections' Function returns views)
        ctx.save_for_backward(cos, sin)
        return q, k

    @staticmethod
    def backward(ctx, dq, dk):  # noqa: ANN001, ANN205
        cos, sin = ctx.saved_tensors
        dq = dq if dq.stride(-1) == 1 else dq.contiguous()
        dk = dk if dk.stride(-1) == 1 else dk.contiguous()
        rope_(dq, dk, cos, sin, backward=True)
        return dq, dk, None, None
