"""Grouped Triton kernels for multi-adapter LoRA, walking the schedule table of `LoraBatchMeta`.

Three kernels cover forward and backward:
- `shrink`: fp32 out[rows_i, :r_max] = (scale_i?) in[rows_i, :] @ W[slot_i] (K x r, rank-masked).
  Forward S = X A; backward dS = s dY B^T (B read through transposed strides). Long K may be
  split over SPLIT_K programs that add atomically (few row blocks would otherwise leave SMs idle).
- `expand`: out[rows_i, :] = (base[rows_i, :] +) (scale_i?) S[rows_i, :r] @ W[slot_i] (r x N).
  Forward Y = Y_base + s S B (base added in registers, may write in place); backward
  dX = dX_base + dS A^T.
- `seg_reduce`: out[slot_i] = (scale_i?) P[rows_i]^T Q[rows_i], the weight gradients
  dA = X^T dS and dB = s S^T dY, one launch for all segments (used when token counts differ;
  equal counts go to torch.bmm, see function.py).

Block sizes are autotuned per shape (cached by Triton). Under TRITON_INTERPRET=1 one small config
is used and matmuls are fp32 broadcast-and-sum (the interpreter's `tl.dot` runs without BLAS
and gives wrong bf16 results in triton 3.9).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels.meta import LoraBatchMeta

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# ALTO_KERNELS_AUTOTUNE=0: first config only (tests: no tuning per random shape)
AUTOTUNE = os.environ.get("ALTO_KERNELS_AUTOTUNE", "1") != "0"


def _zero_out(nargs: dict) -> None:
    nargs["out_ptr"].zero_()


def _configs(space: list[tuple[dict, int, int]], interp: dict) -> list[triton.Config]:
    """space: (block sizes, num_warps, num_stages); the first entry is the untuned default.
    interp: the one config for the interpreter, small enough for its broadcast matmul
    (BLOCK_M x inner x BLOCK_N <= 2**20 elements with a rank block of up to 256)."""
    if INTERPRET:
        space = [(interp, 4, 1)]
    elif not AUTOTUNE:
        space = space[:1]
    hook = lambda kw: _zero_out if kw.get("SPLIT_K", 1) > 1 else None  # noqa: E731  split-K accumulates
    return [triton.Config(kw, num_warps=w, num_stages=st, pre_hook=hook(kw)) for kw, w, st in space]


@triton.autotune(
    configs=_configs(
        [({"BLOCK_K": 64, "SPLIT_K": 1}, 4, 3), ({"BLOCK_K": 128, "SPLIT_K": 1}, 4, 3),
         ({"BLOCK_K": 64, "SPLIT_K": 2}, 4, 3), ({"BLOCK_K": 64, "SPLIT_K": 4}, 4, 3),
         ({"BLOCK_K": 128, "SPLIT_K": 4}, 8, 3)],
        {"BLOCK_K": 32, "SPLIT_K": 2},  # the interpreter exercises the split-K (atomic) path
    ),
    key=["K", "R", "BLOCK_R", "ROW_BLOCKS_HINT"],
)
@triton.jit
def _shrink_kernel(
    in_ptr, w_ptr, out_ptr,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    K, R, ROW_BLOCKS_HINT,  # hint: row blocks rounded to a power of two (autotune key only)
    entry0, out_row0,  # first schedule entry of this launch; row of out_ptr's first row
    stride_im, stride_ik, stride_ws, stride_wk, stride_wr, stride_om, stride_or,
    APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, SPLIT_K: tl.constexpr,
):
    # out is fp32; with SPLIT_K > 1 each program adds its K-slice's partial product atomically
    # into a zeroed out (more programs in flight for long K and few row blocks).
    pid = tl.program_id(0) + entry0
    pid_k = tl.program_id(1)
    seg = tl.load(sched_seg_ptr + pid)
    row0 = tl.load(sched_row_ptr + pid)
    row_end = tl.load(seg_end_ptr + seg)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rank = tl.load(seg_rank_ptr + seg)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    cols = tl.arange(0, BLOCK_R)
    cmask = cols < rank
    k_per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = pid_k * k_per
    k_hi = tl.minimum(k_lo + k_per, K)
    ks = tl.arange(0, BLOCK_K)
    in_ptrs = in_ptr + rows[:, None].to(tl.int64) * stride_im + (k_lo + ks)[None, :] * stride_ik
    w_ptrs = w_ptr + slot * stride_ws + (k_lo + ks)[:, None] * stride_wk + cols[None, :] * stride_wr
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kmask = (k0 + ks) < K
        a = tl.load(in_ptrs, mask=rmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
        if UPCAST:  # interpreter only: its tl.dot runs without BLAS and is wrong for bf16
            acc += tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
        elif IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        in_ptrs += BLOCK_K * stride_ik
        w_ptrs += BLOCK_K * stride_wk
    if APPLY_SCALE:
        acc = acc * tl.load(seg_scale_ptr + seg)
    out_ptrs = out_ptr + (rows - out_row0)[:, None].to(tl.int64) * stride_om + cols[None, :] * stride_or
    omask = rmask[:, None] & (cols[None, :] < R)
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc, mask=omask)
    else:
        tl.atomic_add(out_ptrs, acc, mask=omask, sem="relaxed")


@triton.autotune(
    configs=_configs(
        [({"BLOCK_N": 128}, 4, 2), ({"BLOCK_N": 64}, 4, 2), ({"BLOCK_N": 256}, 8, 2), ({"BLOCK_N": 128}, 8, 3)],
        {"BLOCK_N": 64},
    ),
    key=["N", "R", "BLOCK_R", "HAS_BASE"],
    restore_value=["out_ptr"],
)
@triton.jit
def _expand_kernel(
    s_ptr, w_ptr, base_ptr, out_ptr,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    N, R, entry0,
    stride_sm, stride_sr, stride_ws, stride_wr, stride_wn,
    stride_bm, stride_bn, stride_om, stride_on,
    HAS_BASE: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0) + entry0
    pid_n = tl.program_id(1)
    seg = tl.load(sched_seg_ptr + pid)
    row0 = tl.load(sched_row_ptr + pid)
    row_end = tl.load(seg_end_ptr + seg)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rank = tl.load(seg_rank_ptr + seg)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    rs = tl.arange(0, BLOCK_R)
    rsmask = rs < rank
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < N
    rows64 = rows[:, None].to(tl.int64)
    s = tl.load(s_ptr + rows64 * stride_sm + rs[None, :] * stride_sr, mask=rmask[:, None] & rsmask[None, :], other=0.0)
    s = s.to(w_ptr.dtype.element_ty)  # S is kept in fp32; round like the reference before the matmul
    w = tl.load(
        w_ptr + slot * stride_ws + rs[:, None] * stride_wr + ns[None, :] * stride_wn,
        mask=rsmask[:, None] & nmask[None, :], other=0.0,
    )
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if UPCAST:  # interpreter only: its tl.dot runs without BLAS and is wrong for bf16
        acc += tl.sum(s.to(tl.float32)[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
    elif IEEE:
        acc = tl.dot(s, w, acc, input_precision="ieee")
    else:
        acc = tl.dot(s, w, acc)
    if APPLY_SCALE:
        acc = acc * tl.load(seg_scale_ptr + seg)
    omask = rmask[:, None] & nmask[None, :]
    if HAS_BASE:
        acc += tl.load(base_ptr + rows64 * stride_bm + ns[None, :] * stride_bn, mask=omask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows64 * stride_om + ns[None, :] * stride_on, acc.to(out_ptr.dtype.element_ty), mask=omask)


@triton.autotune(
    configs=_configs(
        [({"BLOCK_T": 64, "BLOCK_M": 64, "BLOCK_N": 64}, 4, 3), ({"BLOCK_T": 64, "BLOCK_M": 128, "BLOCK_N": 128}, 8, 3),
         ({"BLOCK_T": 32, "BLOCK_M": 128, "BLOCK_N": 128}, 8, 3), ({"BLOCK_T": 64, "BLOCK_M": 64, "BLOCK_N": 128}, 4, 3)],
        {"BLOCK_T": 32, "BLOCK_M": 64, "BLOCK_N": 64},
    ),
    key=["M", "N", "RANK_ON_M", "FULL_M", "FULL_N"],
)
@triton.jit
def _seg_reduce_kernel(
    p_ptr, q_ptr, out_ptr,
    seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    M, N,
    stride_pt, stride_pm, stride_qt, stride_qn, stride_os, stride_om, stride_on,
    RANK_ON_M: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    FULL_M: tl.constexpr, FULL_N: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # FULL_M / FULL_N: that dim is the (padded) rank, covered by one block of size FULL_*.
    seg = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    BM: tl.constexpr = FULL_M if FULL_M > 0 else BLOCK_M
    BN: tl.constexpr = FULL_N if FULL_N > 0 else BLOCK_N
    t0 = tl.load(seg_start_ptr + seg)
    t1 = tl.load(seg_end_ptr + seg)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rank = tl.load(seg_rank_ptr + seg)
    ms = pid_m * BM + tl.arange(0, BM)
    ns = pid_n * BN + tl.arange(0, BN)
    mmask = ms < M
    nmask = ns < N
    ts = tl.arange(0, BLOCK_T)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for t in range(t0, t1, BLOCK_T):
        rows = t + ts
        tmask = rows < t1
        rows64 = rows.to(tl.int64)
        p = tl.load(p_ptr + rows64[None, :] * stride_pt + ms[:, None] * stride_pm, mask=mmask[:, None] & tmask[None, :], other=0.0)
        q = tl.load(q_ptr + rows64[:, None] * stride_qt + ns[None, :] * stride_qn, mask=tmask[:, None] & nmask[None, :], other=0.0)
        p = p.to(out_ptr.dtype.element_ty)  # S / dS arrive in fp32
        q = q.to(out_ptr.dtype.element_ty)
        if UPCAST:  # interpreter only: its tl.dot runs without BLAS and is wrong for bf16
            acc += tl.sum(p.to(tl.float32)[:, :, None] * q.to(tl.float32)[None, :, :], axis=1)
        elif IEEE:
            acc = tl.dot(p, q, acc, input_precision="ieee")
        else:
            acc = tl.dot(p, q, acc)
    if APPLY_SCALE:
        acc = acc * tl.load(seg_scale_ptr + seg)
    if RANK_ON_M:
        acc = tl.where((ms < rank)[:, None], acc, 0.0)
    else:
        acc = tl.where((ns < rank)[None, :], acc, 0.0)
    out_ptrs = out_ptr + slot * stride_os + ms[:, None] * stride_om + ns[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :])


def _rank_block(r_max: int) -> int:
    return max(16, triton.next_power_of_2(r_max))


def _flags(dtype: torch.dtype) -> dict:
    """fp32 operands get exact (non-TF32) dots so fp32 results match the reference."""
    return {"IEEE": dtype == torch.float32, "UPCAST": INTERPRET}


def _entries(meta: LoraBatchMeta, chunk: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    return chunk if chunk is not None else (0, meta.num_blocks, 0, meta.total_tokens)


def shrink(inp: torch.Tensor, w: torch.Tensor, meta: LoraBatchMeta, r_max: int, apply_scale: bool,
           w_strides: tuple[int, int, int], out: torch.Tensor | None = None,
           chunk: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """fp32 [T, r_max] = per segment inp_i @ W[slot_i] (W given by strides as [slots, K, r]).

    chunk: (entry0, entry1, row0, row1) from `meta.chunks`: only those schedule entries/rows."""
    t_rows, k = inp.shape
    if out is None:
        out = torch.empty((t_rows, r_max), device=inp.device, dtype=torch.float32)
    e0, e1, r0, r1 = _entries(meta, chunk)
    if e1 == e0:
        return out
    out_rows = out[r0:r1]  # the split-K pre-hook zeroes exactly these rows
    grid = lambda c: (e1 - e0, c["SPLIT_K"])  # noqa: E731
    _shrink_kernel[grid](
        inp, w, out_rows, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank,
        meta.seg_scale, k, r_max, triton.next_power_of_2(e1 - e0), e0, r0, inp.stride(0), inp.stride(1),
        *w_strides, out.stride(0), out.stride(1),
        APPLY_SCALE=apply_scale, BLOCK_M=meta.block_m, BLOCK_R=_rank_block(r_max), **_flags(inp.dtype),
    )
    return out


def expand(s: torch.Tensor, w: torch.Tensor, meta: LoraBatchMeta, n: int, apply_scale: bool,
           w_strides: tuple[int, int, int], base: torch.Tensor | None, out: torch.Tensor | None = None,
           chunk: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """[T, n] = (base +) per segment S_i @ W[slot_i] (W given by strides as [slots, r, N]); out may alias base.

    chunk: (entry0, entry1, row0, row1) from `meta.chunks`: only those rows are written."""
    if out is None:
        out = torch.empty((s.shape[0], n), device=s.device, dtype=w.dtype)
    e0, e1, _, _ = _entries(meta, chunk)
    if e1 == e0:
        return out
    r_max = s.shape[1]
    b = base if base is not None else out
    grid = lambda m: (e1 - e0, triton.cdiv(n, m["BLOCK_N"]))  # noqa: E731
    _expand_kernel[grid](
        s, w, b, out, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank, meta.seg_scale,
        n, r_max, e0, s.stride(0), s.stride(1), *w_strides, b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        HAS_BASE=base is not None, APPLY_SCALE=apply_scale, BLOCK_M=meta.block_m, BLOCK_R=_rank_block(r_max),
        **_flags(w.dtype),
    )
    return out


def seg_reduce(p: torch.Tensor, q: torch.Tensor, out: torch.Tensor, meta: LoraBatchMeta, rank_on_m: bool,
               apply_scale: bool) -> torch.Tensor:
    """out[slot_i] = (scale_i *) P_i^T Q_i for every segment; out is [slots, M, N], rank-masked on M or N."""
    m, n = p.shape[1], q.shape[1]
    full_m = _rank_block(m) if rank_on_m else 0
    full_n = 0 if rank_on_m else _rank_block(n)

    def grid(c: dict) -> tuple[int, int, int]:
        gm = 1 if full_m else triton.cdiv(m, c["BLOCK_M"])
        gn = 1 if full_n else triton.cdiv(n, c["BLOCK_N"])
        return (meta.num_segments, gm, gn)

    _seg_reduce_kernel[grid](
        p, q, out, meta.seg_start, meta.seg_end, meta.seg_slot, meta.seg_rank, meta.seg_scale,
        m, n, p.stride(0), p.stride(1), q.stride(0), q.stride(1), out.stride(0), out.stride(1), out.stride(2),
        RANK_ON_M=rank_on_m, APPLY_SCALE=apply_scale, FULL_M=full_m, FULL_N=full_n, **_flags(out.dtype),
    )
    return out
