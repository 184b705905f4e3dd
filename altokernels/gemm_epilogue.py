"""The base GEMM in Triton with the LoRA expand in its epilogue (the "gemm" variant of function.py).

One kernel computes, for every row m of segment i,
    out[m, :] = X[m, :] @ W (+ bias) + (scale_i?) S[m, :r_i] @ L[slot_i, :r_i, :]
Each (BLOCK_M x BLOCK_N) program runs the K-loop over X and W, then adds, for every adapter segment
overlapping its rows, that segment's rank-masked product to the same fp32 accumulator (row-masked to
the segment), and stores once. Forward: Y = X W^T + b + s S B (S from `triton_kernels.shrink`);
backward: dX = dY W + dS A^T (W and A^T read through strides). Against the "epilogue" variant this
drops the expand kernel's extra read and write of Y (or dX) and one launch; against cuBLAS it costs
whatever this GEMM loses to cuBLAS on the base product. `base_gemm` is the same kernel without the
LoRA term, so a benchmark can show that floor beside cuBLAS (experiments/bench_kernels.py,
`triton_base_only`). Which wins is for an H200 to say: nothing here makes "gemm" a default.

Segments of a tile: segments are contiguous and ordered by row, so those overlapping rows
[m0, m0 + BLOCK_M) run from #(seg_end <= m0) to #(seg_start < m0 + BLOCK_M) (exclusive): two vector
loads of the meta's tables and two sums per program, with no per-BLOCK_M host table (BLOCK_M is
autotuned) and nothing a CUDA graph could not replay after `LoraBatchMeta.retarget`. Empty segments
and rows of no segment contribute nothing (their rows are masked off).

Hopper: tl.dot on the activations' dtype with fp32 accumulation, a grouped (GROUP_M-swizzled) tile
order so the programs in flight share rows of X and columns of W in L2, and an autotune space of
128-256 tiles, BLOCK_K 64, 4-8 warps, 3-5 stages (`ALTO_KERNELS_AUTOTUNE=1`; off, the first config,
and under TRITON_INTERPRET=1 one small config with the broadcast-and-sum product, as for the other
kernels: triton_kernels.py). Cross-compiled for sm_90 on CPU (triton 3.9, specialized as at the bench
shapes; tests/altokernels/test_gemm_epilogue.py): the default 128x256x64 tile, 8 warps, 3 stages runs
its K-loop on wgmma over 3 pipelined stages in 147,456 B of shared memory (4 stages: 196,608 B) with
250-255 registers and no spills, fp32 masters or bf16 L, forward or backward layout (ptxas -v); the
LoRA epilogue reuses the pipeline's buffers. Not measured on a GPU yet.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from altokernels import launch as _launch
from altokernels import triton_kernels as tk
from altokernels.meta import LoraBatchMeta
from altokernels.triton_kernels import TUNE_CACHE, configs, dot_acc, tune_bench

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps, stages); the first is the untuned default (Triton's
# matmul tutorial's H100 fp16 choice; it fits every shape: out-of-range rows/columns are masked)
_GEMM_SPACE = [(128, 256, 64, 8, 8, 3), (128, 256, 64, 8, 8, 4), (256, 128, 64, 8, 8, 3), (256, 128, 64, 8, 8, 4),
               (128, 128, 64, 8, 8, 4), (128, 128, 64, 8, 4, 4), (128, 128, 64, 8, 4, 5), (128, 128, 64, 8, 8, 5)]
# interpreter: small blocks (its product is a [BLOCK_M, inner, BLOCK_N] broadcast) and GROUP_M 2, so
# the tests' few tiles still take the swizzled order
_INTERP = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}


def _prune_gemm(configs: list, named_args: dict, **kw: object) -> list:
    """Tiles no wider than the output (past 128): a narrow projection keeps more programs in flight."""
    m_cap = max(128, tk.pow2(named_args["M"]))
    n_cap = max(128, tk.pow2(named_args["N"]))
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= m_cap and c.kwargs["BLOCK_N"] <= n_cap]
    return keep or configs[:1]


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program_id(0) in the grouped order: GROUP_M row blocks walk the column
    blocks together, so consecutive programs reuse X's row blocks and W's column blocks from L2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    return pid_m, pid_n


@triton.jit
def _lora_epilogue(acc, m0, rows, cols, s_ptr, l_ptr, out_ptr, seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr,
                   seg_scale_ptr, N, Z, stride_sm, stride_sr, stride_ls, stride_lr, stride_ln,
                   APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, SEG_BLOCK: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr):
    """acc + sum over the segments i overlapping `rows` of (scale_i?) S[rows of i, :r_i] @ L[slot_i, :r_i, cols],
    both operands rounded to out's dtype (S is fp32, L may be fp32 master weights)."""
    idx = tl.arange(0, SEG_BLOCK)
    big = 2147483647
    ends = tl.load(seg_end_ptr + idx, mask=idx < Z, other=big)
    starts = tl.load(seg_start_ptr + idx, mask=idx < Z, other=big)
    first = tl.sum((ends <= m0).to(tl.int32), axis=0)  # segments ending before this tile
    last = tl.sum((starts < m0 + BLOCK_M).to(tl.int32), axis=0)  # segments starting before its end
    rs = tl.arange(0, BLOCK_R)
    cmask = cols < N
    rows64 = rows.to(tl.int64)
    for seg in range(first, last):
        lo = tl.load(seg_start_ptr + seg)
        hi = tl.load(seg_end_ptr + seg)
        slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
        rmask = rs < tl.load(seg_rank_ptr + seg)
        smask = (rows >= lo) & (rows < hi)
        s = tl.load(s_ptr + rows64[:, None] * stride_sm + rs[None, :] * stride_sr,
                    mask=smask[:, None] & rmask[None, :], other=0.0)
        if APPLY_SCALE:  # folded into S before its rounding: one multiply of a [BLOCK_M, BLOCK_R] tile
            s = s * tl.load(seg_scale_ptr + seg)
        w = tl.load(l_ptr + slot * stride_ls + rs[:, None] * stride_lr + cols[None, :].to(tl.int64) * stride_ln,
                    mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc = dot_acc(s.to(out_ptr.dtype.element_ty), w.to(out_ptr.dtype.element_ty), acc, IEEE, UPCAST)
    return acc


@triton.autotune(
    configs=configs(
        [({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": g}, w, st) for m, n, k, g, w, st in _GEMM_SPACE],
        _INTERP,
    ),
    key=["N", "K", "ROW_HINT", "stride_wn", "BLOCK_R", "HAS_BIAS", "LORA", "APPLY_SCALE"],
    prune_configs_by={"early_config_prune": _prune_gemm},
    do_bench=tune_bench,
    **TUNE_CACHE,
)
@triton.jit(do_not_specialize=["ROW_HINT"])
def _gemm_lora_kernel(
    x_ptr, w_ptr, bias_ptr, s_ptr, l_ptr, out_ptr,
    seg_start_ptr, seg_end_ptr, seg_slot_ptr, seg_rank_ptr, seg_scale_ptr,
    M, N, K, Z, ROW_HINT,  # ROW_HINT: rows bucketed (autotune key only)
    stride_xm, stride_xk, stride_wk, stride_wn, stride_sm, stride_sr, stride_ls, stride_lr, stride_ln,
    stride_om, stride_on,
    HAS_BIAS: tl.constexpr, LORA: tl.constexpr, APPLY_SCALE: tl.constexpr, IEEE: tl.constexpr,
    UPCAST: tl.constexpr, SEG_BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # out-of-range rows/columns read row/column 0 (in bounds, no mask in the K-loop); the store masks them
    rows_in = tl.max_contiguous(tl.multiple_of(tl.where(rows < M, rows, 0), BLOCK_M), BLOCK_M)
    cols_in = tl.max_contiguous(tl.multiple_of(tl.where(cols < N, cols, 0), BLOCK_N), BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rows_in[:, None].to(tl.int64) * stride_xm + ks[None, :] * stride_xk
    w_ptrs = w_ptr + ks[:, None] * stride_wk + cols_in[None, :].to(tl.int64) * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        kmask = ks < K - kb * BLOCK_K
        a = tl.load(x_ptrs, mask=kmask[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=kmask[:, None], other=0.0)
        acc = dot_acc(a, b, acc, IEEE, UPCAST)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if LORA:
        acc = _lora_epilogue(acc, pid_m * BLOCK_M, rows, cols, s_ptr, l_ptr, out_ptr, seg_start_ptr, seg_end_ptr,
                             seg_slot_ptr, seg_rank_ptr, seg_scale_ptr, N, Z, stride_sm, stride_sr, stride_ls,
                             stride_lr, stride_ln, APPLY_SCALE, IEEE, UPCAST, SEG_BLOCK, BLOCK_M, BLOCK_R)
    cmask = cols < N
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rows[:, None].to(tl.int64) * stride_om + cols[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows < M)[:, None] & cmask[None, :])


def config_space() -> list[triton.Config]:
    """Every config of the kernel's tuning space, whatever ALTO_KERNELS_AUTOTUNE says (GPU tests run
    each one against the reference)."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": g}, num_warps=w, num_stages=st)
            for m, n, k, g, w, st in _GEMM_SPACE]


def _grid(m: int, n: int):  # noqa: ANN202
    return lambda c: (-(-m // c["BLOCK_M"]) * -(-n // c["BLOCK_N"]),)


def gemm_expand(x: torch.Tensor, w: torch.Tensor, w_strides: tuple[int, int], n: int, s: torch.Tensor | None,
                lw: torch.Tensor | None, lw_strides: tuple[int, int, int] | None, meta: LoraBatchMeta,
                apply_scale: bool, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
                fast: bool = True, config: triton.Config | None = None) -> torch.Tensor:
    """[T, n] in x's dtype = x @ W (+ bias) + per segment (scale_i?) S_i @ L[slot_i], one kernel.

    W given by strides as [K, n] (forward: the frozen weight [n, K] transposed, (w.stride(1),
    w.stride(0)); backward dX: the weight as it is). L given by strides as [slots, r, n] (forward B;
    backward A^T: (A.stride(0), A.stride(2), A.stride(1))); s: fp32 [T, r_max] (the shrink's output;
    its columns past a segment's rank are not read). s = lw = None: the base GEMM alone.
    fast: direct launches cached on the meta; config: run this config instead of the autotuned one."""
    t_rows, k = x.shape
    if out is None:
        out = torch.empty((t_rows, n), device=x.device, dtype=x.dtype)
    if t_rows == 0 or n == 0:
        return out
    lora = s is not None
    if not lora:
        s, lw, lw_strides = x, w, (0, 0, 0)  # never read (LORA=False)
    r_max = s.shape[1] if lora else 1
    ieee, upcast = tk.dot_flags(x.dtype)
    z = meta.num_segments
    _launch.launch(
        _gemm_lora_kernel, _grid(t_rows, n),
        (x, w, bias if bias is not None else x, s, lw, out, meta.seg_start, meta.seg_end, meta.seg_slot, meta.seg_rank,
         meta.seg_scale, t_rows, n, k, z, tk.row_blocks_hint(-(-t_rows // 64)), x.stride(0), x.stride(1), *w_strides,
         s.stride(0), s.stride(1), *lw_strides, out.stride(0), out.stride(1)),
        {"HAS_BIAS": bias is not None, "LORA": lora, "APPLY_SCALE": apply_scale, "IEEE": ieee, "UPCAST": upcast,
         "SEG_BLOCK": max(16, tk.pow2(z)), "BLOCK_R": tk.rank_block(r_max) if lora else 16},
        meta.launch_cache if fast else None, config,
    )
    return out


def base_gemm(x: torch.Tensor, w: torch.Tensor, w_strides: tuple[int, int], n: int, meta: LoraBatchMeta,
              bias: torch.Tensor | None = None, fast: bool = True, config: triton.Config | None = None) -> torch.Tensor:
    """x @ W (+ bias) with the same kernel and no LoRA term: the floor the "gemm" variant can reach
    (benchmarked against cuBLAS)."""
    return gemm_expand(x, w, w_strides, n, None, None, None, meta, False, bias, fast=fast, config=config)
