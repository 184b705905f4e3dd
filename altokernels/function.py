"""Autograd Function for the fused path: a base GEMM (cuBLAS, or ours: "gemm") + grouped Triton LoRA kernels.

Forward:  S = drop(X) A (shrink, cached for backward) and Y = X W^T + b + s S B.
Backward: dS = s dY B^T (shrink), dX = dY W + dS A^T, dA = drop(X)^T dS and dB = s S^T dY
          (one grouped launch each). Launches per layer are constant in the number of adapters.

Ways to join the LoRA term with the base GEMM (`variant`):
- "epilogue": cuBLAS writes Y_base, then the expand kernel adds s S B to it in registers and
  stores in place (one extra read+write of Y).
- "addmm": the expand kernel writes the LoRA term (plus bias) and cuBLAS accumulates X W^T onto it
  (beta=1): the extra read of Y happens inside the compute-bound GEMM.
- "auto": per direction, "addmm" when the output (d_out forward, d_in backward) has >= 4096
  columns, else "epilogue" (H100 breakdown, run3: the in-place epilogue pass costs more than the
  delta write + beta=1 GEMM only at 8192 columns).
- "pipelined": "addmm" cut into row chunks (schedule-entry ranges): the LoRA kernels of chunk c+1
  run on the side stream while cuBLAS accumulates chunk c, so only the first chunk's LoRA work is
  exposed (needs `streams` on CUDA to overlap; runs chunk by chunk otherwise).
- "gemm": no cuBLAS: our Triton base GEMM adds s S B in its epilogue and stores Y once
  (altokernels/gemm_epilogue.py); backward dX = dY W + dS A^T the same way (with dropout, dX takes
  the "addmm" form: the mask multiplies the LoRA term alone). An A/B candidate against cuBLAS
  (issue 28), not a default: `experiments/bench_kernels.py --gemm` times both on a GPU.
With `streams`, LoRA kernels that do not feed the base GEMM (shrink in the epilogue form; dS, dA
and dB in backward) run on a side stream, overlapped with cuBLAS.
Weight grads (`wgrad`): "triton" (the grouped segment-reduce kernel, any counts; the default), "bmm"
(cuBLAS batched GEMM over a [segments, tokens, .] view; only when all token counts are equal), or
"auto" (bmm at equal counts, else triton). On an H200 (2026-12-03) the segment-reduce kernel beat
bmm on every projection of a Llama-3.2-1B layer (dA 0.031 vs 0.034 ms, dB 0.015-0.098 vs
0.022-0.135 ms at 32 x 512 tokens; the layer 8.93 vs 9.58 ms at batch 1, 16.8 vs 17.1 at 2, equal at 4)
and takes 11 fewer torch ops per layer call (the runtime's SmolLM2 step is host-bound).
S and dS are kept in fp32 (the shrink kernel may split K and accumulate atomically).
A and B may be fp32 master weights under bf16/fp16 activations: the kernels round them to the
activations' dtype in registers (as the reference's cast does) and write dA/dB in fp32, so a layer
call needs no cast of the stacks and no cast of their gradients back: 4 aten ops and 2 autograd
nodes fewer per call, 840 per SmolLM2 step (under torch.profiler on an H200 `aten::to` and
`ToCopyBackward0` held ~13% and ~6% of the step's host time).
"""

from __future__ import annotations

import contextlib

import torch

from altokernels import gemm_epilogue as ge
from altokernels import triton_kernels as tk
from altokernels.meta import LoraBatchMeta
from altokernels.reference import lora_input

VARIANTS = ("epilogue", "addmm", "pipelined", "auto", "gemm")
AUTO_ADDMM_MIN_N = 4096  # "auto": addmm where the output is this wide, else epilogue (per direction)
PIPELINE_CHUNKS = 2  # default row chunks of the pipelined variant
WGRADS = ("auto", "bmm", "triton")


def _scale3(meta: LoraBatchMeta, dtype: torch.dtype) -> torch.Tensor:
    """Per-segment scales as a [segments, 1, 1] tensor of `dtype`, made once per step."""
    key = ("scale3", dtype)
    if key not in meta.step_cache:
        meta.step_cache[key] = meta.seg_scale.to(dtype)[:, None, None]
    return meta.step_cache[key]


def _bmm_wgrads(xl, ds, s, dy, meta: LoraBatchMeta, da, dbb) -> None:  # noqa: ANN001
    """dA = X^T dS and dB = (s S)^T dY per segment with torch.bmm (equal token counts only).

    Columns/rows beyond a segment's rank come out zero because dS and S are zero there. When the
    segments use slots 0..z-1 the products are written straight into the gradients (no copy)."""
    z, n = meta.num_segments, meta.token_counts[0]
    identity = meta.slots == tuple(range((da if da is not None else dbb).shape[0]))
    if da is not None:
        xt, dsv = xl.view(z, n, -1).transpose(1, 2), ds.view(z, n, -1).to(xl.dtype)
        if identity:
            torch.bmm(xt, dsv, out=da)
        else:
            da.index_copy_(0, meta.seg_slot.long(), torch.bmm(xt, dsv))
    if dbb is not None:
        st = s.view(z, n, -1).to(dy.dtype).transpose(1, 2)
        if identity:
            torch.bmm(st, dy.view(z, n, -1), out=dbb).mul_(_scale3(meta, dbb.dtype))
        else:
            res = torch.bmm(st, dy.view(z, n, -1)).mul_(_scale3(meta, dbb.dtype))
            dbb.index_copy_(0, meta.seg_slot.long(), res)


def _on(stream):  # noqa: ANN001, ANN202
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def _fork(side):  # noqa: ANN001, ANN202
    """Make the side stream (if any) wait for work queued so far on the current stream."""
    if side is None:
        return None
    main = torch.cuda.current_stream()
    side.wait_stream(main)
    return main


def _join(side, main) -> None:  # noqa: ANN001
    if side is not None:
        main.wait_stream(side)


def _handoff(side, main) -> None:  # noqa: ANN001
    """Make the main stream wait for the side stream's work queued so far (one event)."""
    if side is not None:
        main.wait_event(side.record_event())


def _pipelined_forward(x, xl, weight, bias, A, B, s, meta: LoraBatchMeta, side, chunks: int, fast: bool):  # noqa: ANN001, ANN202
    t_rows, d_out, r_max = x.shape[0], B.shape[2], B.shape[1]
    y = torch.empty((t_rows, d_out), device=x.device, dtype=x.dtype)
    base = bias.expand(t_rows, d_out) if bias is not None else None
    main = _fork(side)
    for ch in meta.chunks(chunks):
        with _on(side):
            tk.shrink(xl, A, meta, r_max, apply_scale=False, w_strides=A.stride(), out=s, chunk=ch, fast=fast)
            tk.expand(s, B, meta, d_out, apply_scale=True, w_strides=B.stride(), base=base, out=y, chunk=ch,
                      fast=fast)
        _handoff(side, main)
        y[ch[2]:ch[3]].addmm_(x[ch[2]:ch[3]], weight.t())
    _join(side, main)
    return y


def _pipelined_backward(dy, xl, mult, s, weight, A, B, meta: LoraBatchMeta, side, chunks, need_x, use_bmm, da, dbb,
                        fast, into: dict):  # noqa: ANN001, ANN202, E501
    t_rows, r_max, d_in = dy.shape[0], A.shape[2], A.shape[1]
    ds = torch.empty((t_rows, r_max), device=dy.device, dtype=torch.float32)
    dx = torch.empty((t_rows, d_in), device=dy.device, dtype=dy.dtype) if need_x else None
    bt_str = (B.stride(0), B.stride(2), B.stride(1))
    at_str = (A.stride(0), A.stride(2), A.stride(1))
    main = _fork(side)
    for ch in meta.chunks(chunks):
        r0, r1 = ch[2], ch[3]
        with _on(side):
            tk.shrink(dy, B, meta, r_max, apply_scale=True, w_strides=bt_str, out=ds, chunk=ch, fast=fast)
            if need_x:
                tk.expand(ds, A, meta, d_in, apply_scale=False, w_strides=at_str, base=None, out=dx, chunk=ch,
                          fast=fast)
                if mult is not None:
                    dx[r0:r1].mul_(mult[r0:r1])
        if need_x:
            _handoff(side, main)
            dx[r0:r1].addmm_(dy[r0:r1], weight)
    with _on(side):  # weight grads after the last dS chunk, overlapped with the last GEMMs
        if use_bmm and (da is not None or dbb is not None):
            _bmm_wgrads(xl, ds, s, dy, meta, da, dbb)
        else:
            if da is not None:
                tk.seg_reduce(xl, ds, da, meta, rank_on_m=False, apply_scale=False, fast=fast, **into)
            if dbb is not None:
                tk.seg_reduce(s, dy, dbb, meta, rank_on_m=True, apply_scale=True, fast=fast, **into)
    _join(side, main)
    return dx


class _FusedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, A, B, meta: LoraBatchMeta, training: bool, variant: str, streams: bool,  # noqa: ANN001
                wgrad: str, chunks: int, fast: bool, grad_flags: torch.Tensor | None):
        x = x.contiguous()
        xl, mult = lora_input(x, meta, training)
        t_rows = x.shape[0]
        r_max, d_out = B.shape[1], B.shape[2]
        side = meta.side_stream if streams and x.is_cuda else None
        s = torch.empty((t_rows, r_max), device=x.device, dtype=torch.float32)  # S stays fp32
        bwd_variant = variant
        if variant == "auto":
            bwd_variant = "addmm" if x.shape[1] >= AUTO_ADDMM_MIN_N else "epilogue"
            variant = "addmm" if d_out >= AUTO_ADDMM_MIN_N else "epilogue"
        if variant == "epilogue":
            main = _fork(side)
            with _on(side):
                tk.shrink(xl, A, meta, r_max, apply_scale=False, w_strides=A.stride(), out=s, fast=fast)
            y = torch.nn.functional.linear(x, weight, bias)
            _join(side, main)
            tk.expand(s, B, meta, d_out, apply_scale=True, w_strides=B.stride(), base=y, out=y, fast=fast)
        elif variant == "gemm":  # S first: the GEMM's epilogue reads it
            tk.shrink(xl, A, meta, r_max, apply_scale=False, w_strides=A.stride(), out=s, fast=fast)
            y = ge.gemm_expand(x, weight, (weight.stride(1), weight.stride(0)), d_out, s, B, B.stride(), meta,
                               apply_scale=True, bias=bias, fast=fast)
        elif variant == "pipelined":
            y = _pipelined_forward(x, xl, weight, bias, A, B, s, meta, side, chunks, fast)
        else:
            tk.shrink(xl, A, meta, r_max, apply_scale=False, w_strides=A.stride(), out=s, fast=fast)
            base = bias.expand(t_rows, d_out) if bias is not None else None
            y = tk.expand(s, B, meta, d_out, apply_scale=True, w_strides=B.stride(), base=base, fast=fast,
                          dtype=x.dtype)
            y.addmm_(x, weight.t())
        ctx.meta, ctx.variant, ctx.streams, ctx.chunks, ctx.fast = meta, bwd_variant, streams, chunks, fast
        # bmm writes the activations' dtype: not into fp32 master-weight gradients
        ctx.use_bmm = grad_flags is None and A.dtype == x.dtype and (
            wgrad == "bmm" or (wgrad == "auto" and meta.equal_counts))
        ctx.into = None  # in place: (A.grad, B.grad, flags), read now (a captured step keeps these addresses)
        if grad_flags is not None and A.requires_grad and B.requires_grad:
            ga, gb = A.grad, B.grad
            if ga is None or gb is None or ga.shape != A.shape or gb.shape != B.shape:
                raise ValueError("grad_flags: in-place weight gradients need the stacks' gradients allocated")
            ctx.into = (ga, gb, grad_flags)
        ctx.save_for_backward(x if weight.requires_grad else None, xl if A.requires_grad else None,
                              mult, s, weight, A, B)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001
        x, xl, mult, s, weight, A, B = ctx.saved_tensors
        meta: LoraBatchMeta = ctx.meta
        fast = ctx.fast
        dy = dy.contiguous()
        r_max, d_in = A.shape[2], A.shape[1]
        need_x, need_w, need_b, need_a, need_bb = ctx.needs_input_grad[:5]
        side = meta.side_stream if ctx.streams and dy.is_cuda else None
        dx = dw = db = da = dbb = None
        at_str = (A.stride(0), A.stride(2), A.stride(1))  # A^T as [slots, r, N=d_in]
        into: dict = {}
        if ctx.into is not None:  # accumulate into the gradients themselves, flagging non-finite slots
            da, dbb, flags = ctx.into
            da, dbb = (da if need_a else None), (dbb if need_bb else None)
            into = {"accumulate": True, "flags": flags}
        else:
            alloc = torch.empty if len(meta.slots) == A.shape[0] else torch.zeros  # unused slots: zero grad
            if need_a:
                da = alloc(A.shape, device=A.device, dtype=A.dtype)
            if need_bb:
                dbb = alloc(B.shape, device=B.device, dtype=B.dtype)
        if ctx.variant == "pipelined":
            if need_x or need_a or need_bb:
                dx = _pipelined_backward(dy, xl, mult, s, weight, A, B, meta, side, ctx.chunks, need_x, ctx.use_bmm,
                                         da if need_a else None, dbb if need_bb else None, fast, into)
            if need_w:
                dw = dy.t() @ x
            if need_b and ctx.has_bias:
                db = dy.sum(0)
            if into:
                da = dbb = None  # written in place: nothing for autograd to accumulate
            return dx, dw, db, da, dbb, None, None, None, None, None, None, None, None
        ds = None
        if need_x or need_a:  # allocated on the main stream: it outlives the side stream's work
            ds = torch.empty((dy.shape[0], r_max), device=dy.device, dtype=torch.float32)
        # dS and the weight grads do not need the dX GEMM: with `streams` they run on the side
        # stream, overlapped with it; dX waits only for dS (one event)
        main = _fork(side)
        ds_ready = None
        with _on(side):
            if ds is not None:  # B^T viewed as [slots, K=d_out, r]
                tk.shrink(dy, B, meta, r_max, apply_scale=True, w_strides=(B.stride(0), B.stride(2), B.stride(1)),
                          out=ds, fast=fast)
                if side is not None and need_x:
                    ds_ready = side.record_event()
            if ctx.use_bmm and (need_a or need_bb):
                _bmm_wgrads(xl, ds, s, dy, meta, da, dbb)
            else:
                if need_a:
                    tk.seg_reduce(xl, ds, da, meta, rank_on_m=False, apply_scale=False, fast=fast, **into)
                if need_bb:
                    tk.seg_reduce(s, dy, dbb, meta, rank_on_m=True, apply_scale=True, fast=fast, **into)
        if need_x:
            if ctx.variant == "gemm" and mult is None:
                if ds_ready is not None:
                    main.wait_event(ds_ready)
                dx = ge.gemm_expand(dy, weight, (weight.stride(0), weight.stride(1)), d_in, ds, A, at_str, meta,
                                    apply_scale=False, fast=fast)
            elif ctx.variant == "epilogue" and mult is None:
                dx = dy @ weight
                if ds_ready is not None:
                    main.wait_event(ds_ready)
                tk.expand(ds, A, meta, d_in, apply_scale=False, w_strides=at_str, base=dx, out=dx, fast=fast)
            else:
                if ds_ready is not None:
                    main.wait_event(ds_ready)
                dx = tk.expand(ds, A, meta, d_in, apply_scale=False, w_strides=at_str, base=None, fast=fast,
                               dtype=dy.dtype)
                if mult is not None:
                    dx.mul_(mult)
                dx.addmm_(dy, weight)
        if need_w:
            dw = dy.t() @ x
        if need_b and ctx.has_bias:
            db = dy.sum(0)
        _join(side, main)
        if into:
            da = dbb = None  # written in place: nothing for autograd to accumulate
        return dx, dw, db, da, dbb, None, None, None, None, None, None, None, None


def check_grad_flags(grad_flags: torch.Tensor | None, A: torch.Tensor) -> None:
    """In-place gradients' flags fit the stack A: an int32 [slots] tensor on A's device (or None)."""
    if grad_flags is not None and (grad_flags.dtype != torch.int32 or grad_flags.shape != (A.shape[0],)
                                   or grad_flags.device != A.device):
        raise ValueError(f"grad_flags: expected an int32 tensor of shape ({A.shape[0]},) on {A.device}")


def fused_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    training: bool = True,
    variant: str = "epilogue",
    streams: bool = False,
    wgrad: str = "triton",
    chunks: int = PIPELINE_CHUNKS,
    fast_launch: bool = True,
    grad_flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton path of `multi_lora_linear` (inputs already validated). Defaults: the fastest
    measured at per-adapter batch 1 (epilogue, no side stream, segment-reduce weight grads; H100
    run3: 11.1 ms/layer vs 12.0 for addmm; H200: 8.93 ms vs 9.58 with bmm weight grads). fast_launch: direct launches of the compiled kernels, cached on `meta`
    (False: Triton's own launch path every call, for A/B timing).

    grad_flags: an int32 [slots] tensor; given, the weight gradients are accumulated in place into
    A.grad and B.grad (allocated by the caller; only the segments' slots are touched, so no
    capacity-sized temporary or accumulation runs, and a captured step writes to fixed addresses)
    and flags[slot] becomes 1 where a stored gradient value is not finite. The caller zeroes the
    slots' gradients and flags before a step (not between the micro-batches of one update)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if wgrad not in WGRADS:
        raise ValueError(f"wgrad: expected one of {WGRADS}, got {wgrad!r}")
    if wgrad == "bmm" and grad_flags is not None:
        raise ValueError("wgrad: 'bmm' writes new gradients; in-place ones (grad_flags) take the segment-reduce kernel")
    if wgrad == "bmm" and not meta.equal_counts:
        raise ValueError("wgrad: 'bmm' needs equal, non-zero token counts in every segment")
    if wgrad == "bmm" and A.dtype != x.dtype:
        raise ValueError(f"wgrad: 'bmm' needs A/B in x's dtype {x.dtype}, got {A.dtype} (use 'triton')")
    if chunks < 1:
        raise ValueError(f"chunks: must be >= 1, got {chunks}")
    check_grad_flags(grad_flags, A)
    return _FusedLoraLinear.apply(x, weight, bias, A, B, meta, training, variant, streams, wgrad, chunks, fast_launch,
                                  grad_flags)
