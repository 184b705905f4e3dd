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

Block sizes are autotuned per shape (cached by Triton; few keys: row counts enter the shrink key
only as a power-of-two bucket). The row kernels split each schedule entry (SCHED_M rows) into
SCHED_M / BLOCK_M sub-blocks, so BLOCK_M is tunable (16-64) while the schedule table stays one
per step. Launches go through `altokernels.launch` (direct calls of the compiled kernel after the
first call per key, cached on the meta). Under TRITON_INTERPRET=1 one small config is used and
matmuls are fp32 broadcast-and-sum (the interpreter's `tl.dot` runs without BLAS and gives wrong
bf16 results in triton 3.9).
"""

from __future__ import annotations

import inspect
import os
from typing import Sequence

import torch
import triton
import triton.language as tl

from altokernels import launch as _launch
from altokernels.meta import LoraBatchMeta

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Autotuning is opt-in (ALTO_KERNELS_AUTOTUNE=1; experiments/bench_kernels.py turns it on): a run meets
# many new shapes as its group shrinks, and tuning each costs a compile per config and a timing pass;
# on the H200 e2e run that was ~40 s of a 146-s sweep with no faster steps after (results/device_h200/
# session9). Off, every launch takes its space's first config (it fits every shape).
AUTOTUNE = os.environ.get("ALTO_KERNELS_AUTOTUNE", "0") == "1"
# ALTO_KERNELS_TUNE_CACHE=1: keep autotuning results in Triton's on-disk cache, so a later process
# on the same machine skips the tuning (~15 s of an H200 run's first step). Opt-in until checked on
# a GPU; Triton never disk-caches a kernel whose configs carry a pre_hook (our split-K shrink).
TUNE_CACHE = ({"cache_results": True} if os.environ.get("ALTO_KERNELS_TUNE_CACHE") == "1"
               and "cache_results" in inspect.signature(triton.autotune).parameters else {})


def _zero_out(nargs: dict) -> None:
    nargs["out_ptr"].zero_()


def configs(space: list[tuple[dict, int, int]], interp: dict) -> list[triton.Config]:
    """space: (block sizes, num_warps, num_stages); the first entry is the untuned default (it must
    fit every shape). interp: the one config for the interpreter, small enough for its broadcast
    matmul (BLOCK_M x inner x BLOCK_N <= 2**20 elements with a rank block of up to 256)."""
    if INTERPRET:
        space = [(interp, 4, 1)]
    elif not AUTOTUNE:
        space = space[:1]
    hook = lambda kw: _zero_out if kw.get("SPLIT_K", 1) > 1 else None  # noqa: E731  split-K accumulates
    return [triton.Config(kw, num_warps=w, num_stages=st, pre_hook=hook(kw)) for kw, w, st in space]


def tune_bench(kernel_call, quantiles):  # noqa: ANN001, ANN202
    """Autotuner timing: 5 ms warm-up, 25 ms of repeats (the kernels take 10-300 us; Triton's default
    25/100 ms made tuning the wider spaces cost most of a benchmark run)."""
    import triton.testing

    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


def _keep_first(configs: list, keep: list) -> list:
    return keep or configs[:1]


def _prune_shrink(configs: list, named_args: dict, **kw: object) -> list:
    """Sub-blocks must tile a schedule entry; split-K only where few row blocks leave SMs idle."""
    sched_m = kw.get("SCHED_M", 64)
    many_rows = named_args["ROW_BLOCKS_HINT"] * sched_m >= 512 * 64  # >= 512 full row blocks
    k = named_args["K"]
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= sched_m
            and (c.kwargs["SPLIT_K"] == 1 or (not many_rows and k >= 2 * c.kwargs["SPLIT_K"] * c.kwargs["BLOCK_K"]))
            and c.kwargs["BLOCK_K"] <= max(64, triton.next_power_of_2(k))]
    return _keep_first(configs, keep)


def _prune_expand(configs: list, named_args: dict, **kw: object) -> list:
    sched_m = kw.get("SCHED_M", 64)
    n_cap = max(64, triton.next_power_of_2(named_args["N"]))
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= sched_m and c.kwargs["BLOCK_N"] <= n_cap]
    return _keep_first(configs, keep)


def _prune_reduce(configs: list, named_args: dict, **kw: object) -> list:
    """The rank side is one FULL block: drop configs differing only in its (ignored) block size,
    and blocks wider than the other dimension."""
    full_m, full_n = kw.get("FULL_M", 0), kw.get("FULL_N", 0)
    m_cap = max(32, triton.next_power_of_2(named_args["M"]))
    n_cap = max(32, triton.next_power_of_2(named_args["N"]))
    seen, keep = set(), []
    for c in configs:
        bm, bn = full_m or c.kwargs["BLOCK_M"], full_n or c.kwargs["BLOCK_N"]
        sig = (c.kwargs["BLOCK_T"], bm, bn, c.num_warps, c.num_stages)
        if (full_m or bm <= m_cap) and (full_n or bn <= n_cap) and sig not in seen:
            seen.add(sig)
            keep.append(c)
    return _keep_first(configs, keep)


@triton.jit
def _entry_rows(entry0, sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr,
                SCHED_M: tl.constexpr, BLOCK_M: tl.constexpr):
    """The rows one program of a row kernel (shrink, expand) covers: schedule entry
    program_id(0) // SUBS (counted from entry0) holds up to SCHED_M rows of one segment, split
    into SUBS sub-blocks of BLOCK_M rows; returns the segment, its slot (int64) and rank, this
    program's sub-block of rows and their mask (rows past the segment's end are off)."""
    SUBS: tl.constexpr = (SCHED_M + BLOCK_M - 1) // BLOCK_M  # 1 if BLOCK_M > SCHED_M (then masked)
    pid = tl.program_id(0)
    entry = pid // SUBS + entry0
    seg = tl.load(sched_seg_ptr + entry)
    e_row0 = tl.load(sched_row_ptr + entry)
    row_end = tl.minimum(tl.load(seg_end_ptr + seg), e_row0 + SCHED_M)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rank = tl.load(seg_rank_ptr + seg)
    rows = e_row0 + (pid % SUBS) * BLOCK_M + tl.arange(0, BLOCK_M)
    return seg, slot, rank, rows, rows < row_end


@triton.jit
def dot_acc(a, b, acc, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b in fp32: tl.dot (IEEE: full-precision fp32 inputs), or, under the interpreter
    (UPCAST), a broadcast-and-sum, since its tl.dot runs without BLAS and is wrong for bf16."""
    if UPCAST:
        acc += tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
    elif IEEE:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _shrink_tile(in_ptr, w_ptr, out_ptr, seg_scale_ptr, seg, slot, rank, rows, rmask, K, R, out_row0,
                 stride_im, stride_ik, stride_ws, stride_wk, stride_wr, stride_om, stride_or,
                 APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, SPLIT_K: tl.constexpr):
    """One shrink program's work (the single and the member kernels share it): fp32
    out[rows - out_row0, :R] = (scale?) in[rows] @ W[slot] (columns past `rank` zero). out is
    fp32; with SPLIT_K > 1 each program (program_id(1)) adds its K-slice's partial product
    atomically into a zeroed out (more programs in flight for long K and few row blocks)."""
    pid_k = tl.program_id(1)
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
        b = tl.load(w_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0).to(in_ptr.dtype.element_ty)  # fp32 masters
        acc = dot_acc(a, b, acc, IEEE, UPCAST)
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


# (BLOCK_M, BLOCK_K, SPLIT_K, warps, stages): small BLOCK_M puts more programs in flight for short K
# (dS = dY B^T with d_out 512 read at 240 GB/s with 64-row blocks only); split-K for long K, few rows.
_SHRINK_SPACE = [(64, 64, 1, 4, 3), (64, 128, 1, 4, 3), (32, 64, 1, 4, 3), (32, 128, 1, 4, 3), (16, 128, 1, 2, 3),
                 (16, 256, 1, 4, 3), (32, 256, 1, 8, 2), (32, 64, 2, 4, 3), (64, 64, 2, 4, 3), (64, 64, 4, 4, 3),
                 (64, 128, 4, 8, 3)]


@triton.autotune(
    configs=configs(
        [({"BLOCK_M": m, "BLOCK_K": k, "SPLIT_K": sk}, w, st) for m, k, sk, w, st in _SHRINK_SPACE],
        {"BLOCK_M": 32, "BLOCK_K": 32, "SPLIT_K": 2},  # the interpreter exercises sub-blocks and split-K
    ),
    key=["K", "R", "BLOCK_R", "ROW_BLOCKS_HINT"],
    prune_configs_by={"early_config_prune": _prune_shrink},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit(do_not_specialize=["ROW_BLOCKS_HINT", "entry0", "out_row0"])
def _shrink_kernel(
    in_ptr, w_ptr, out_ptr,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    K, R, ROW_BLOCKS_HINT,  # schedule entries, bucketed (autotune key only; never specialized)
    entry0, out_row0,  # first schedule entry of this launch; row of out_ptr's first row (not specialized:
    # a new value of an int argument that is 1 or a multiple of 16 would otherwise compile a new kernel)
    stride_im, stride_ik, stride_ws, stride_wk, stride_wr, stride_om, stride_or,
    APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, SCHED_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, SPLIT_K: tl.constexpr,
):
    seg, slot, rank, rows, rmask = _entry_rows(entry0, sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr,
                                               seg_rank_ptr, SCHED_M, BLOCK_M)
    _shrink_tile(in_ptr, w_ptr, out_ptr, seg_scale_ptr, seg, slot, rank, rows, rmask, K, R, out_row0,
                 stride_im, stride_ik, stride_ws, stride_wk, stride_wr, stride_om, stride_or,
                 APPLY_SCALE, IEEE, UPCAST, BLOCK_M, BLOCK_K, BLOCK_R, SPLIT_K)


@triton.jit
def _expand_acc(acc, s_ptr, w_ptr, out_ptr, slot, rank, rows, rmask, n_block, N,
                stride_sm, stride_sr, stride_ws, stride_wr, stride_wn,
                IEEE: tl.constexpr, UPCAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    """acc + S[rows, :rank] @ W[slot][:rank, ns], ns the columns of block n_block (past N masked off), both
    operands rounded to out's dtype first (S is kept in fp32, W may be fp32 master weights: rounded
    as the reference's casts round them)."""
    rs = tl.arange(0, BLOCK_R)
    rsmask = rs < rank
    ns = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < N
    rows64 = rows[:, None].to(tl.int64)
    s = tl.load(s_ptr + rows64 * stride_sm + rs[None, :] * stride_sr, mask=rmask[:, None] & rsmask[None, :], other=0.0)
    s = s.to(out_ptr.dtype.element_ty)
    w = tl.load(
        w_ptr + slot * stride_ws + rs[:, None] * stride_wr + ns[None, :] * stride_wn,
        mask=rsmask[:, None] & nmask[None, :], other=0.0,
    ).to(out_ptr.dtype.element_ty)
    return dot_acc(s, w, acc, IEEE, UPCAST)


@triton.jit
def _expand_store(acc, base_ptr, out_ptr, seg_scale_ptr, seg, rows, rmask, n_block, N,
                  stride_bm, stride_bn, stride_om, stride_on,
                  HAS_BASE: tl.constexpr, APPLY_SCALE: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[rows, block n_block's columns] = (base +) (scale?) acc, in out's dtype (out may alias base)."""
    ns = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < N
    rows64 = rows[:, None].to(tl.int64)
    if APPLY_SCALE:
        acc = acc * tl.load(seg_scale_ptr + seg)
    omask = rmask[:, None] & nmask[None, :]
    if HAS_BASE:
        acc += tl.load(base_ptr + rows64 * stride_bm + ns[None, :] * stride_bn, mask=omask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows64 * stride_om + ns[None, :] * stride_on, acc.to(out_ptr.dtype.element_ty), mask=omask)


# (BLOCK_M, BLOCK_N, warps, stages)
_EXPAND_SPACE = [(64, 128, 4, 2), (64, 64, 4, 2), (64, 256, 8, 2), (32, 64, 2, 2), (32, 128, 4, 2), (32, 256, 4, 2),
                 (16, 128, 2, 2), (64, 128, 8, 3)]


@triton.autotune(
    configs=configs(
        [({"BLOCK_M": m, "BLOCK_N": n}, w, st) for m, n, w, st in _EXPAND_SPACE],
        {"BLOCK_M": 32, "BLOCK_N": 64},
    ),
    key=["N", "R", "BLOCK_R", "HAS_BASE"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": _prune_expand},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit(do_not_specialize=["entry0"])
def _expand_kernel(
    s_ptr, w_ptr, base_ptr, out_ptr,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    N, R, entry0,
    stride_sm, stride_sr, stride_ws, stride_wr, stride_wn,
    stride_bm, stride_bn, stride_om, stride_on,
    HAS_BASE: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    SCHED_M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    seg, slot, rank, rows, rmask = _entry_rows(entry0, sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr,
                                               seg_rank_ptr, SCHED_M, BLOCK_M)
    pid_n = tl.program_id(1)
    acc = _expand_acc(tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), s_ptr, w_ptr, out_ptr, slot, rank, rows, rmask,
                      pid_n, N, stride_sm, stride_sr, stride_ws, stride_wr, stride_wn, IEEE, UPCAST, BLOCK_N, BLOCK_R)
    _expand_store(acc, base_ptr, out_ptr, seg_scale_ptr, seg, rows, rmask, pid_n, N, stride_bm, stride_bn,
                  stride_om, stride_on, HAS_BASE, APPLY_SCALE, BLOCK_N)


@triton.jit
def _seg_reduce_tile(p_ptr, q_ptr, out_ptr, flags_ptr, seg, pid_m, pid_n,
                     seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr, M, N,
                     stride_pt, stride_pm, stride_qt, stride_qn, stride_os, stride_om, stride_on,
                     RANK_ON_M: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                     FULL_M: tl.constexpr, FULL_N: tl.constexpr, CAST_TO_Q: tl.constexpr,
                     ACCUMULATE: tl.constexpr, FLAGS: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Block (pid_m, pid_n) of out[slot of `seg`] = (scale?) P[seg's rows]^T Q[seg's rows] (the single
    and the member kernels share it). FULL_M / FULL_N: that dim is the (padded) rank, covered by one
    block of size FULL_*. ACCUMULATE: add to out (a slot's gradient in place); FLAGS: flags[slot] = 1
    when a value stored is not finite (the per-slot finite check, with no pass over the gradients)."""
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
        if CAST_TO_Q:  # S / dS arrive in fp32: both operands in the activations' dtype (dB = S^T dY)
            p = p.to(q_ptr.dtype.element_ty)
        else:  # dA = X^T dS
            q = q.to(p_ptr.dtype.element_ty)
        acc = dot_acc(p, q, acc, IEEE, UPCAST)
    if APPLY_SCALE:
        acc = acc * tl.load(seg_scale_ptr + seg)
    if RANK_ON_M:
        acc = tl.where((ms < rank)[:, None], acc, 0.0)
    else:
        acc = tl.where((ns < rank)[None, :], acc, 0.0)
    out_ptrs = out_ptr + slot * stride_os + ms[:, None] * stride_om + ns[None, :] * stride_on
    omask = mmask[:, None] & nmask[None, :]
    val = acc.to(out_ptr.dtype.element_ty)
    if ACCUMULATE:
        val = val + tl.load(out_ptrs, mask=omask, other=0.0)
    tl.store(out_ptrs, val, mask=omask)
    if FLAGS:
        v32 = val.to(tl.float32)
        nonfinite = omask & ((v32 != v32) | (tl.abs(v32) == float("inf")))  # only the values stored
        bad = tl.max(tl.max(nonfinite.to(tl.int32), axis=1), axis=0)
        if bad > 0:
            tl.atomic_max(flags_ptr + slot, bad)


# (BLOCK_T, BLOCK_M, BLOCK_N, warps, stages); the rank side is one FULL block, so only the other
# block size and BLOCK_T vary per use (configs differing in the ignored size are pruned).
_REDUCE_SPACE = [(64, 64, 64, 4, 3), (64, 128, 128, 8, 3), (32, 128, 128, 8, 3), (64, 64, 128, 4, 3),
                 (64, 32, 32, 4, 3), (128, 64, 64, 4, 3), (128, 32, 32, 4, 3), (32, 256, 256, 8, 2)]


@triton.autotune(
    configs=configs(
        [({"BLOCK_T": t, "BLOCK_M": m, "BLOCK_N": n}, w, st) for t, m, n, w, st in _REDUCE_SPACE],
        {"BLOCK_T": 32, "BLOCK_M": 64, "BLOCK_N": 64},
    ),
    key=["M", "N", "RANK_ON_M", "FULL_M", "FULL_N"],
    restore_value=["out_ptr", "flags_ptr"],  # timing runs must not accumulate into gradients
    prune_configs_by={"early_config_prune": _prune_reduce},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit
def _seg_reduce_kernel(
    p_ptr, q_ptr, out_ptr, flags_ptr,
    seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    M, N,
    stride_pt, stride_pm, stride_qt, stride_qn, stride_os, stride_om, stride_on,
    RANK_ON_M: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    FULL_M: tl.constexpr, FULL_N: tl.constexpr, CAST_TO_Q: tl.constexpr,
    ACCUMULATE: tl.constexpr, FLAGS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    _seg_reduce_tile(p_ptr, q_ptr, out_ptr, flags_ptr, tl.program_id(0), tl.program_id(1), tl.program_id(2),
                     seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr, M, N,
                     stride_pt, stride_pm, stride_qt, stride_qn, stride_os, stride_om, stride_on,
                     RANK_ON_M, APPLY_SCALE, IEEE, UPCAST, FULL_M, FULL_N, CAST_TO_Q, ACCUMULATE, FLAGS,
                     BLOCK_T, BLOCK_M, BLOCK_N)


# ----------------------------------------------------------------------------- member kernels
# The same three kernels over 2 or 3 *members*: projections that read one input (q/k/v; gate/up),
# each with its own stacks and output, in one launch (altokernels/group_function.py). A program
# picks its member's pointers, sizes and strides by member index (`_pick`: a select, which the
# interpreter runs too), then runs the single kernels' tile code. Arguments of member 2 are read
# only when MEMBERS == 3 (with 2, the wrappers repeat member 1's). Strides along a tensor's last
# dim (1 for the contiguous tensors the group path takes) are shared by all members.


@triton.jit
def _pick(m, v0, v1, v2, MEMBERS: tl.constexpr):
    """Member m's value of (v0, v1, v2): a pointer or an int."""
    v = tl.where(m == 0, v0, v1)
    if MEMBERS > 2:
        v = tl.where(m == 2, v2, v)
    return v


@triton.jit
def _member_block(pid, n0, n1, BLOCK: tl.constexpr, MEMBERS: tl.constexpr):
    """(member, block within it) of block `pid` of the members' blocks laid end to end: member p
    has cdiv(n_p, BLOCK) of them (no program is spent on a narrower member's missing blocks)."""
    nb0 = tl.cdiv(n0, BLOCK)
    m = tl.where(pid < nb0, 0, 1)
    blk = tl.where(pid < nb0, pid, pid - nb0)
    if MEMBERS > 2:
        nb01 = nb0 + tl.cdiv(n1, BLOCK)
        m = tl.where(pid < nb01, m, 2)
        blk = tl.where(pid < nb01, blk, pid - nb01)
    return m, blk


def _prune_members(prune, names: tuple[str, ...]):  # noqa: ANN001, ANN202
    """A single kernel's pruning for a member kernel: each size in `names` taken as its members' largest."""

    def run(configs: list, named_args: dict, **kw: object) -> list:
        sizes = {n: max(named_args[f"{n}{p}"] for p in range(3)) for n in names}
        return prune(configs, {**named_args, **sizes}, **kw)

    return run


@triton.autotune(
    configs=configs(
        [({"BLOCK_M": m, "BLOCK_K": k, "SPLIT_K": sk}, w, st) for m, k, sk, w, st in _SHRINK_SPACE],
        {"BLOCK_M": 32, "BLOCK_K": 32, "SPLIT_K": 2},
    ),
    key=["K0", "K1", "K2", "R0", "R1", "R2", "BLOCK_R", "ROW_BLOCKS_HINT", "MEMBERS"],
    prune_configs_by={"early_config_prune": _prune_members(_prune_shrink, ("K",))},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit(do_not_specialize=["ROW_BLOCKS_HINT"])
def _member_shrink_kernel(
    in0, in1, in2, w0, w1, w2, out_ptr,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    K0, K1, K2, R0, R1, R2, C1, C2, ROW_BLOCKS_HINT,
    stride_im0, stride_im1, stride_im2, stride_ik,
    stride_ws0, stride_wk0, stride_wr0, stride_ws1, stride_wk1, stride_wr1, stride_ws2, stride_wk2, stride_wr2,
    stride_om, stride_or,
    APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, MEMBERS: tl.constexpr,
    SCHED_M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    # member program_id(2) writes columns C_p .. C_p + R_p of the one fp32 buffer out (C_0 = 0)
    seg, slot, rank, rows, rmask = _entry_rows(0, sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr,
                                               seg_rank_ptr, SCHED_M, BLOCK_M)
    m = tl.program_id(2)
    _shrink_tile(_pick(m, in0, in1, in2, MEMBERS), _pick(m, w0, w1, w2, MEMBERS),
                 out_ptr + _pick(m, 0, C1, C2, MEMBERS) * stride_or, seg_scale_ptr, seg, slot, rank, rows, rmask,
                 _pick(m, K0, K1, K2, MEMBERS), _pick(m, R0, R1, R2, MEMBERS), 0,
                 _pick(m, stride_im0, stride_im1, stride_im2, MEMBERS), stride_ik,
                 _pick(m, stride_ws0, stride_ws1, stride_ws2, MEMBERS),
                 _pick(m, stride_wk0, stride_wk1, stride_wk2, MEMBERS),
                 _pick(m, stride_wr0, stride_wr1, stride_wr2, MEMBERS), stride_om, stride_or,
                 APPLY_SCALE, IEEE, UPCAST, BLOCK_M, BLOCK_K, BLOCK_R, SPLIT_K)


@triton.autotune(
    configs=configs(
        [({"BLOCK_M": m, "BLOCK_N": n}, w, st) for m, n, w, st in _EXPAND_SPACE],
        {"BLOCK_M": 32, "BLOCK_N": 64},
    ),
    key=["N0", "N1", "N2", "BLOCK_R", "HAS_BASE", "SUM", "MEMBERS"],
    restore_value=["out0", "out1", "out2"],
    prune_configs_by={"early_config_prune": _prune_members(_prune_expand, ("N",))},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit
def _member_expand_kernel(
    s_ptr, w0, w1, w2, out0, out1, out2,
    sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    N0, N1, N2, C1, C2,
    stride_sm, stride_sr,
    stride_ws0, stride_wr0, stride_wn0, stride_ws1, stride_wr1, stride_wn1, stride_ws2, stride_wr2, stride_wn2,
    stride_om0, stride_om1, stride_om2, stride_on,
    SUM: tl.constexpr, HAS_BASE: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr,
    UPCAST: tl.constexpr, MEMBERS: tl.constexpr, SCHED_M: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # member p reads columns C_p .. of S. SUM: out0 (+)= the members' products summed (all N_p equal:
    # dX = sum_p dS_p A_p^T); else out_p (+)= member p's product, program_id(1) over all members' N blocks
    seg, slot, rank, rows, rmask = _entry_rows(0, sched_seg_ptr, sched_row_ptr, seg_end_ptr, seg_slot_ptr,
                                               seg_rank_ptr, SCHED_M, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if SUM:
        pid_n = tl.program_id(1)
        acc = _expand_acc(acc, s_ptr, w0, out0, slot, rank, rows, rmask, pid_n, N0, stride_sm, stride_sr,
                          stride_ws0, stride_wr0, stride_wn0, IEEE, UPCAST, BLOCK_N, BLOCK_R)
        acc = _expand_acc(acc, s_ptr + C1 * stride_sr, w1, out0, slot, rank, rows, rmask, pid_n, N0, stride_sm,
                          stride_sr, stride_ws1, stride_wr1, stride_wn1, IEEE, UPCAST, BLOCK_N, BLOCK_R)
        if MEMBERS > 2:
            acc = _expand_acc(acc, s_ptr + C2 * stride_sr, w2, out0, slot, rank, rows, rmask, pid_n, N0, stride_sm,
                              stride_sr, stride_ws2, stride_wr2, stride_wn2, IEEE, UPCAST, BLOCK_N, BLOCK_R)
        _expand_store(acc, out0, out0, seg_scale_ptr, seg, rows, rmask, pid_n, N0, stride_om0, stride_on,
                      stride_om0, stride_on, HAS_BASE, APPLY_SCALE, BLOCK_N)
    else:
        m, blk = _member_block(tl.program_id(1), N0, N1, BLOCK_N, MEMBERS)
        n = _pick(m, N0, N1, N2, MEMBERS)
        out = _pick(m, out0, out1, out2, MEMBERS)
        stride_om = _pick(m, stride_om0, stride_om1, stride_om2, MEMBERS)
        acc = _expand_acc(acc, s_ptr + _pick(m, 0, C1, C2, MEMBERS) * stride_sr, _pick(m, w0, w1, w2, MEMBERS), out,
                          slot, rank, rows, rmask, blk, n, stride_sm, stride_sr,
                          _pick(m, stride_ws0, stride_ws1, stride_ws2, MEMBERS),
                          _pick(m, stride_wr0, stride_wr1, stride_wr2, MEMBERS),
                          _pick(m, stride_wn0, stride_wn1, stride_wn2, MEMBERS), IEEE, UPCAST, BLOCK_N, BLOCK_R)
        _expand_store(acc, out, out, seg_scale_ptr, seg, rows, rmask, blk, n, stride_om, stride_on,
                      stride_om, stride_on, HAS_BASE, APPLY_SCALE, BLOCK_N)


@triton.autotune(
    configs=configs(
        [({"BLOCK_T": t, "BLOCK_M": m, "BLOCK_N": n}, w, st) for t, m, n, w, st in _REDUCE_SPACE],
        {"BLOCK_T": 32, "BLOCK_M": 64, "BLOCK_N": 64},
    ),
    key=["M0", "M1", "M2", "N0", "N1", "N2", "RANK_ON_M", "FULL_M", "FULL_N", "MEMBERS"],
    restore_value=["out0", "out1", "out2", "flags_ptr"],  # timing runs must not accumulate into gradients
    prune_configs_by={"early_config_prune": _prune_members(_prune_reduce, ("M", "N"))},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit
def _member_seg_reduce_kernel(
    p0, p1, p2, q0, q1, q2, out0, out1, out2, flags_ptr,
    seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    M0, M1, M2, N0, N1, N2,
    stride_pt0, stride_pt1, stride_pt2, stride_pm, stride_qt0, stride_qt1, stride_qt2, stride_qn,
    stride_os0, stride_os1, stride_os2, stride_om0, stride_om1, stride_om2, stride_on,
    RANK_ON_M: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    FULL_M: tl.constexpr, FULL_N: tl.constexpr, CAST_TO_Q: tl.constexpr,
    ACCUMULATE: tl.constexpr, FLAGS: tl.constexpr, MEMBERS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # program_id(1) runs over the members' blocks of the dimension that is not the rank
    if RANK_ON_M:
        m, pid_n = _member_block(tl.program_id(1), N0, N1, BLOCK_N, MEMBERS)
        pid_m = 0
    else:
        m, pid_m = _member_block(tl.program_id(1), M0, M1, BLOCK_M, MEMBERS)
        pid_n = 0
    _seg_reduce_tile(_pick(m, p0, p1, p2, MEMBERS), _pick(m, q0, q1, q2, MEMBERS), _pick(m, out0, out1, out2, MEMBERS),
                     flags_ptr, tl.program_id(0), pid_m, pid_n,
                     seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
                     _pick(m, M0, M1, M2, MEMBERS), _pick(m, N0, N1, N2, MEMBERS),
                     _pick(m, stride_pt0, stride_pt1, stride_pt2, MEMBERS), stride_pm,
                     _pick(m, stride_qt0, stride_qt1, stride_qt2, MEMBERS), stride_qn,
                     _pick(m, stride_os0, stride_os1, stride_os2, MEMBERS),
                     _pick(m, stride_om0, stride_om1, stride_om2, MEMBERS), stride_on,
                     RANK_ON_M, APPLY_SCALE, IEEE, UPCAST, FULL_M, FULL_N, CAST_TO_Q, ACCUMULATE, FLAGS,
                     BLOCK_T, BLOCK_M, BLOCK_N)


def pow2(n: int) -> int:
    """Next power of two >= n (plain Python: triton.next_power_of_2 costs microseconds a call)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def row_blocks_hint(n_entries: int) -> int:
    """The shrink's autotune bucket for a launch over `n_entries` schedule entries: 4, 16, 64, 256,
    1024 or 4096 (a power of four, capped). Each new bucket re-runs the autotuner, and a group's entry
    count changes whenever real data changes its padded length or an adapter leaves; powers of two
    made up to 13 buckets per shape, these 6 (the split-K pruning only asks whether there are
    >= 512 full 64-row blocks)."""
    bucket = 4
    while bucket < n_entries and bucket < 4096:
        bucket *= 4
    return bucket


def config_space(kernel: str) -> list[triton.Config]:
    """Every config of one kernel's tuning space ("shrink", "expand", "seg_reduce"), whatever
    ALTO_KERNELS_AUTOTUNE says (GPU tests run each one against the reference)."""
    hook = lambda kw: _zero_out if kw.get("SPLIT_K", 1) > 1 else None  # noqa: E731
    spaces = {
        "shrink": [({"BLOCK_M": m, "BLOCK_K": k, "SPLIT_K": sk}, w, st) for m, k, sk, w, st in _SHRINK_SPACE],
        "expand": [({"BLOCK_M": m, "BLOCK_N": n}, w, st) for m, n, w, st in _EXPAND_SPACE],
        "seg_reduce": [({"BLOCK_T": t, "BLOCK_M": m, "BLOCK_N": n}, w, st) for t, m, n, w, st in _REDUCE_SPACE],
    }
    if kernel not in spaces:
        raise ValueError(f"kernel: expected one of {sorted(spaces)}, got {kernel!r}")
    return [triton.Config(kw, num_warps=w, num_stages=st, pre_hook=hook(kw)) for kw, w, st in spaces[kernel]]


def rank_block(r_max: int) -> int:
    return max(16, pow2(r_max))


def dot_flags(dtype: torch.dtype) -> tuple[bool, bool]:
    """(IEEE, UPCAST): fp32 operands get exact (non-TF32) dots so fp32 results match the reference."""
    return dtype == torch.float32, INTERPRET


def _entries(meta: LoraBatchMeta, chunk: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    return chunk if chunk is not None else (0, meta.num_blocks, 0, meta.total_tokens)


def _row_grid(n_entries: int, sched_m: int, second: str | None, n: int = 0):  # noqa: ANN202
    """Grid over schedule entries x sub-blocks (x SPLIT_K or N blocks)."""
    if second == "SPLIT_K":
        return lambda c: (n_entries * ((sched_m + c["BLOCK_M"] - 1) // c["BLOCK_M"]), c["SPLIT_K"])
    return lambda c: (n_entries * ((sched_m + c["BLOCK_M"] - 1) // c["BLOCK_M"]), -(-n // c["BLOCK_N"]))


def shrink(inp: torch.Tensor, w: torch.Tensor, meta: LoraBatchMeta, r_max: int, apply_scale: bool,
           w_strides: tuple[int, int, int], out: torch.Tensor | None = None,
           chunk: tuple[int, int, int, int] | None = None, fast: bool = True,
           config: triton.Config | None = None) -> torch.Tensor:
    """fp32 [T, r_max] = per segment inp_i @ W[slot_i] (W given by strides as [slots, K, r]).

    chunk: (entry0, entry1, row0, row1) from `meta.chunks`: only those schedule entries/rows.
    fast: direct launches cached on the meta (False: Triton's launch path every call); config: run
    this config instead of the autotuned one (tests)."""
    t_rows, k = inp.shape
    if out is None:
        out = torch.empty((t_rows, r_max), device=inp.device, dtype=torch.float32)
    e0, e1, r0, r1 = _entries(meta, chunk)
    if e1 == e0:
        return out
    out_rows = out if r0 == 0 and r1 == t_rows else out[r0:r1]  # the split-K pre-hook zeroes exactly these rows
    ieee, upcast = dot_flags(inp.dtype)
    _launch.launch(
        _shrink_kernel, _row_grid(e1 - e0, meta.block_m, "SPLIT_K"),
        (inp, w, out_rows, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank,
         meta.seg_scale, k, r_max, row_blocks_hint(e1 - e0), e0, r0, inp.stride(0), inp.stride(1),
         *w_strides, out.stride(0), out.stride(1)),
        {"APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast, "SCHED_M": meta.block_m,
         "BLOCK_R": rank_block(r_max)},
        meta.launch_cache if fast else None, config,
    )
    return out


def expand(s: torch.Tensor, w: torch.Tensor, meta: LoraBatchMeta, n: int, apply_scale: bool,
           w_strides: tuple[int, int, int], base: torch.Tensor | None, out: torch.Tensor | None = None,
           chunk: tuple[int, int, int, int] | None = None, fast: bool = True,
           config: triton.Config | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[T, n] = (base +) per segment S_i @ W[slot_i] (W given by strides as [slots, r, N]); out may alias base.

    chunk: (entry0, entry1, row0, row1) from `meta.chunks`: only those rows are written. The product
    is computed in out's dtype (dtype: of a new out, default W's; W may be fp32 master weights)."""
    if out is None:
        out = torch.empty((s.shape[0], n), device=s.device, dtype=dtype or w.dtype)
    e0, e1, _, _ = _entries(meta, chunk)
    if e1 == e0:
        return out
    r_max = s.shape[1]
    b = base if base is not None else out
    ieee, upcast = dot_flags(out.dtype)
    _launch.launch(
        _expand_kernel, _row_grid(e1 - e0, meta.block_m, "BLOCK_N", n),
        (s, w, b, out, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank, meta.seg_scale,
         n, r_max, e0, s.stride(0), s.stride(1), *w_strides, b.stride(0), b.stride(1), out.stride(0), out.stride(1)),
        {"HAS_BASE": base is not None, "APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast,
         "SCHED_M": meta.block_m, "BLOCK_R": rank_block(r_max)},
        meta.launch_cache if fast else None, config,
    )
    return out


def seg_reduce(p: torch.Tensor, q: torch.Tensor, out: torch.Tensor, meta: LoraBatchMeta, rank_on_m: bool,
               apply_scale: bool, fast: bool = True, config: triton.Config | None = None,
               accumulate: bool = False, flags: torch.Tensor | None = None) -> torch.Tensor:
    """out[slot_i] = (scale_i *) P_i^T Q_i for every segment; out is [slots, M, N], rank-masked on M or N.

    The product runs in the activations' dtype (the operand that is not the fp32 S or dS) with an
    fp32 accumulator, and is stored in out's dtype (fp32 master-weight gradients need no cast).
    accumulate: out[slot_i] += ... instead (no segment may share a slot); flags: an int32 [slots]
    tensor whose entry for slot_i becomes 1 if a stored value is not finite (never reset here)."""
    m, n = p.shape[1], q.shape[1]
    full_m = rank_block(m) if rank_on_m else 0
    full_n = 0 if rank_on_m else rank_block(n)
    z = meta.num_segments

    def grid(c: dict) -> tuple[int, int, int]:
        gm = 1 if full_m else -(-m // c["BLOCK_M"])
        gn = 1 if full_n else -(-n // c["BLOCK_N"])
        return (z, gm, gn)

    cast_to_q = p.dtype == torch.float32 and q.dtype != torch.float32  # dB = S^T dY: S is fp32
    ieee, upcast = dot_flags(q.dtype if cast_to_q else p.dtype)
    _launch.launch(
        _seg_reduce_kernel, grid,
        (p, q, out, meta.seg_slot if flags is None else flags, meta.seg_start, meta.seg_end, meta.seg_slot, meta.seg_rank,
         meta.seg_scale, m, n, p.stride(0), p.stride(1), q.stride(0), q.stride(1), out.stride(0), out.stride(1),
         out.stride(2)),
        {"RANK_ON_M": rank_on_m, "APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast,
         "FULL_M": full_m, "FULL_N": full_n, "CAST_TO_Q": cast_to_q, "ACCUMULATE": accumulate,
         "FLAGS": flags is not None},
        meta.launch_cache if fast else None, config,
    )
    return out


def _three(values: Sequence) -> list:
    """A member kernel's three slots of a per-member argument (member 1's repeated for a third)."""
    if not 2 <= len(values) <= 3:
        raise ValueError(f"members: expected 2 or 3, got {len(values)}")
    return [*values, values[-1]] if len(values) == 2 else list(values)


def _shared(name: str, values: Sequence[int]) -> int:
    if any(v != values[0] for v in values):
        raise ValueError(f"{name}: the member kernels need one value for every member, got {tuple(values)}")
    return values[0]


def _column_starts(widths: Sequence[int]) -> list[int]:
    starts = [0]
    for w in widths[:-1]:
        starts.append(starts[-1] + w)
    return starts


def member_shrink(inps: Sequence[torch.Tensor], ws: Sequence[torch.Tensor], w_strides: Sequence[tuple[int, int, int]],
                  meta: LoraBatchMeta, r_maxes: Sequence[int], apply_scale: bool, out: torch.Tensor,
                  fast: bool = True, config: triton.Config | None = None) -> torch.Tensor:
    """`shrink` for 2 or 3 members in one launch: fp32 out[:, c_p : c_p + r_p] = per segment
    inps[p]_i @ W_p[slot_i] (W_p given by strides as [slots, K_p, r_p]), c_p = r_0 + ... + r_(p-1).

    The inputs share their row count and their column stride (forward: one X for all; backward:
    each member's dY)."""
    n = len(ws)
    if meta.num_blocks == 0:
        return out
    ins3, ws3, ws_str3 = _three(inps), _three(ws), _three(w_strides)
    ks3, rs3 = _three([i.shape[1] for i in inps]), _three(list(r_maxes))
    cols = _three(_column_starts(r_maxes))
    ieee, upcast = dot_flags(inps[0].dtype)
    _launch.launch(
        _member_shrink_kernel,
        lambda c: (meta.num_blocks * ((meta.block_m + c["BLOCK_M"] - 1) // c["BLOCK_M"]), c["SPLIT_K"], n),
        (*ins3, *ws3, out, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank,
         meta.seg_scale, *ks3, *rs3, cols[1], cols[2], row_blocks_hint(meta.num_blocks),
         *(i.stride(0) for i in ins3), _shared("inps' column stride", [i.stride(1) for i in inps]),
         *(s for st in ws_str3 for s in st), out.stride(0), out.stride(1)),
        {"APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast, "MEMBERS": n, "SCHED_M": meta.block_m,
         "BLOCK_R": rank_block(max(r_maxes))},
        meta.launch_cache if fast else None, config,
    )
    return out


def member_expand(s: torch.Tensor, r_maxes: Sequence[int], ws: Sequence[torch.Tensor],
                  w_strides: Sequence[tuple[int, int, int]], meta: LoraBatchMeta, outs: Sequence[torch.Tensor],
                  has_base: bool, apply_scale: bool, sum_members: bool = False, fast: bool = True,
                  config: triton.Config | None = None) -> None:
    """`expand` for 2 or 3 members in one launch, member p's S being columns c_p .. c_p + r_p of `s`
    (as `member_shrink` writes them) and W_p given by strides as [slots, r_p, N_p]:
    outs[p] (+)= per segment S_p,i @ W_p[slot_i] (in place when has_base); sum_members: one output,
    outs[0] (+)= the members' products summed (every N_p equal). Products run in the outputs' dtype."""
    n = len(ws)
    if meta.num_blocks == 0:
        return
    if sum_members and len(outs) != 1:
        raise ValueError(f"outs: sum_members writes one output, got {len(outs)}")
    ns = [o.shape[1] for o in outs] if not sum_members else [outs[0].shape[1]] * n
    outs3, ws3, ws_str3, ns3 = _three(list(outs) * (n if sum_members else 1)), _three(ws), _three(w_strides), _three(ns)
    cols = _three(_column_starts(r_maxes))
    subs = lambda c: meta.num_blocks * ((meta.block_m + c["BLOCK_M"] - 1) // c["BLOCK_M"])  # noqa: E731
    if sum_members:
        grid = lambda c: (subs(c), -(-ns[0] // c["BLOCK_N"]))  # noqa: E731
    else:
        grid = lambda c: (subs(c), sum(-(-k // c["BLOCK_N"]) for k in ns))  # noqa: E731
    ieee, upcast = dot_flags(outs[0].dtype)
    _launch.launch(
        _member_expand_kernel, grid,
        (s, *ws3, *outs3, meta.sched_seg, meta.sched_row, meta.seg_end, meta.seg_slot, meta.seg_rank, meta.seg_scale,
         *ns3, cols[1], cols[2], s.stride(0), s.stride(1), *(v for st in ws_str3 for v in st),
         *(o.stride(0) for o in outs3), _shared("outs' column stride", [o.stride(1) for o in outs])),
        {"SUM": sum_members, "HAS_BASE": has_base, "APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast,
         "MEMBERS": n, "SCHED_M": meta.block_m, "BLOCK_R": rank_block(max(r_maxes))},
        meta.launch_cache if fast else None, config,
    )


def member_seg_reduce(ps: Sequence[torch.Tensor], qs: Sequence[torch.Tensor], outs: Sequence[torch.Tensor],
                      meta: LoraBatchMeta, rank_on_m: bool, apply_scale: bool, fast: bool = True,
                      config: triton.Config | None = None, accumulate: bool = False,
                      flags: torch.Tensor | None = None) -> None:
    """`seg_reduce` for 2 or 3 members in one launch: outs[p][slot_i] (+)= (scale_i *) P_p,i^T Q_p,i,
    flags as there (one flags tensor for all members: a slot is flagged if any member's value is not
    finite). The members' P (and Q, and outs) share their column stride."""
    n = len(outs)
    ms, ns = [p.shape[1] for p in ps], [q.shape[1] for q in qs]
    full_m = rank_block(max(ms)) if rank_on_m else 0
    full_n = 0 if rank_on_m else rank_block(max(ns))
    z = meta.num_segments

    def grid(c: dict) -> tuple[int, int]:
        if rank_on_m:
            return (z, sum(-(-k // c["BLOCK_N"]) for k in ns))
        return (z, sum(-(-k // c["BLOCK_M"]) for k in ms))

    cast_to_q = ps[0].dtype == torch.float32 and qs[0].dtype != torch.float32
    ieee, upcast = dot_flags(qs[0].dtype if cast_to_q else ps[0].dtype)
    ps3, qs3, outs3 = _three(ps), _three(qs), _three(outs)
    _launch.launch(
        _member_seg_reduce_kernel, grid,
        (*ps3, *qs3, *outs3, meta.seg_slot if flags is None else flags, meta.seg_start, meta.seg_end, meta.seg_slot,
         meta.seg_rank, meta.seg_scale, *_three(ms), *_three(ns),
         *(p.stride(0) for p in ps3), _shared("ps' column stride", [p.stride(1) for p in ps]),
         *(q.stride(0) for q in qs3), _shared("qs' column stride", [q.stride(1) for q in qs]),
         *(o.stride(0) for o in outs3), *(o.stride(1) for o in outs3),
         _shared("outs' last stride", [o.stride(2) for o in outs])),
        {"RANK_ON_M": rank_on_m, "APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast,
         "FULL_M": full_m, "FULL_N": full_n, "CAST_TO_Q": cast_to_q, "ACCUMULATE": accumulate,
         "FLAGS": flags is not None, "MEMBERS": n},
        meta.launch_cache if fast else None, config,
    )

