"""The Triton base GEMM with the LoRA expand in its epilogue (altokernels/gemm_epilogue.py) and the
"gemm" variant of fused_lora_linear built on it: the kernel against plain torch over segment layouts
(empty segments, segments shorter than a block and spanning blocks, rows of no segment, bias,
forward and backward operand layouts, fp32 masters), the variant's output and gradients against the
fp64 reference and the "epilogue" variant, and a cross-compile for sm_90.

On CPU the kernels run under TRITON_INTERPRET=1 (conftest.py) with 32x32 tiles; the GPU-marked tests
run the compiled kernel at the benchmark's shapes and every config of its tuning space.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altokernels import build_meta, loop_lora_linear
from altokernels import gemm_epilogue as ge
from altokernels.function import fused_lora_linear
from tests.altokernels.helpers import (TOL, Case, as_double, assert_close_to_truth, assert_near, cross_compile_for_sm90,
                                      make_case, run)

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# 32-row tiles under the interpreter: 40 rows span two tiles, 5 and 1 sit inside one with others,
# the empty segment sits between two, 70 span three
COUNTS = [40, 0, 5, 70, 1]
RANKS = [3, 1, 8, 5, 2]


def _torch_gemm_lora(x, w_kn, bias, s, lw, meta, apply_scale):  # noqa: ANN001, ANN202
    """Plain torch: x @ W (+ bias) + per segment (scale?) S_i[:, :r_i] @ L[slot_i, :r_i], in fp64 on
    operands rounded as the kernel rounds them: (scale S) and L to x's dtype."""
    out = x.double() @ w_kn.double()
    if bias is not None:
        out = out + bias.double()
    for i in range(meta.num_segments):
        lo, hi, slot, r = meta.offsets[i], meta.offsets[i + 1], meta.slots[i], meta.ranks[i]
        si = s[lo:hi, :r] * (meta.scales[i] if apply_scale else 1.0)
        out[lo:hi] += si.to(x.dtype).double() @ lw[slot, :r].to(x.dtype).double()
    return out


# elementwise |got - want| <= EPS * (the same sum over |terms|): bf16 allows the operands' rounding
# twice over (the interpreter's fp32 -> bf16 casts truncate: up to 2^-7 each for S and an fp32 L) and
# the output's; fp32, the summation order. A wrong row, slot, rank or scale errs by O(1) of the bound.
EPS = {torch.float32: 1e-5, torch.bfloat16: 2**-5}


def _assert_within_rounding(got, x, w_kn, bias, s, lw, meta, apply_scale, name):  # noqa: ANN001
    want = _torch_gemm_lora(x, w_kn, bias, s, lw, meta, apply_scale)
    bound = _torch_gemm_lora(x.abs(), w_kn.abs(), bias.abs() if bias is not None else None, s.abs(), lw.abs(), meta,
                             apply_scale)
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double() - want).abs()
    worst = (err - EPS[x.dtype] * bound).max().item() if err.numel() else 0.0
    assert worst <= 1e-12, f"{name}: max err {err.max().item():.3g} beyond the rounding bound"


def _operands(counts, ranks, d_in, d_out, dtype, lw_dtype=None, r_max=None, seed=0, n_slots=None):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    z = len(counts)
    n_slots = n_slots or z + 2
    slots = torch.randperm(n_slots, generator=g)[:z].tolist()
    meta = build_meta(counts, slots, ranks, [0.5 + i % 4 for i in range(z)], "cpu")
    t, r_max = sum(counts), r_max or max(ranks)

    def rnd(*shape, dt=dtype):  # noqa: ANN001, ANN202
        return torch.randn(*shape, generator=g).to(dt)

    x, w, bias = rnd(t, d_in), rnd(d_out, d_in) * d_in**-0.5, rnd(d_out)
    s = rnd(t, r_max, dt=torch.float32)
    B = rnd(n_slots, r_max, d_out, dt=lw_dtype or dtype)
    A = rnd(n_slots, d_in, r_max, dt=lw_dtype or dtype)
    return x, w, bias, s, A, B, meta


def _check_forward_and_backward_layouts(x, w, bias, s, A, B, meta):  # noqa: ANN001
    """Y = X W^T + b + s S B (W transposed by strides) and dX = dY W + dS A^T (A^T by strides)."""
    d_out, d_in = w.shape
    y = ge.gemm_expand(x, w, (w.stride(1), w.stride(0)), d_out, s, B, B.stride(), meta, True, bias)
    assert y.dtype == x.dtype
    _assert_within_rounding(y, x, w.t(), bias, s, B, meta, True, "forward")
    dy = torch.randn(x.shape[0], d_out, generator=torch.Generator().manual_seed(3)).to(x.dtype)
    at = (A.stride(0), A.stride(2), A.stride(1))
    dx = ge.gemm_expand(dy, w, (w.stride(0), w.stride(1)), d_in, s, A, at, meta, False)
    _assert_within_rounding(dx, dy, w, None, s, A.transpose(1, 2), meta, False, "backward")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_expand_matches_torch_cpu(dtype, bias):
    x, w, b, s, A, B, meta = _operands(COUNTS, RANKS, 37, 45, dtype, r_max=11)
    _check_forward_and_backward_layouts(x, w, b if bias else None, s, A, B, meta)


def test_gemm_expand_reads_fp32_masters_under_bf16_cpu():
    """fp32 L (master weights) under bf16 X/W: rounded in registers, as if cast first."""
    x, w, b, s, A, B, meta = _operands(COUNTS, RANKS, 37, 45, torch.bfloat16, lw_dtype=torch.float32)
    _check_forward_and_backward_layouts(x, w, b, s, A, B, meta)


def test_gemm_expand_adds_the_lora_term_only_to_its_segments_rows_cpu():
    """A zero base isolates the epilogue: each segment's rows get exactly its own slot's term (a
    kernel that took a neighbour's slot, rank or scale, or none, fails), and a rank past r_i is
    never read (NaN there must not leak)."""
    x, w, _, s, _, B, meta = _operands(COUNTS, RANKS, 8, 45, torch.float32, r_max=11)
    B[:, 8:] = float("nan")  # past every rank (the largest is 8)
    y = ge.gemm_expand(x, torch.zeros_like(w), (1, w.shape[1]), 45, s, B, B.stride(), meta, True)
    assert torch.isfinite(y).all()
    _assert_within_rounding(y, x, torch.zeros(8, 45), None, s, torch.nan_to_num(B), meta, True, "lora term")


def test_base_gemm_is_the_kernel_without_the_lora_term_cpu():
    x, w, b, s, _, B, meta = _operands(COUNTS, RANKS, 70, 33, torch.float32)
    got = ge.base_gemm(x, w, (w.stride(1), w.stride(0)), 33, meta, bias=b)
    _assert_within_rounding(got, x, w.t(), b, s[:, :0], B[:, :0], meta, True, "base")


@settings(max_examples=12, deadline=None)
@given(counts=st.lists(st.integers(0, 45), min_size=1, max_size=9), d_in=st.integers(1, 70),
       d_out=st.integers(1, 70), extra_r=st.integers(0, 3), seed=st.integers(0, 999), bias=st.booleans())
def test_gemm_expand_over_random_segment_layouts_cpu(counts, d_in, d_out, extra_r, seed, bias):
    """Any split of the rows into segments (empty ones, ones inside a tile, ones over several
    tiles, tiles meeting 3+ segments), any ranks, widths off the 32-wide tiles."""
    if sum(counts) == 0:
        counts = [*counts[:-1], 1]
    g = torch.Generator().manual_seed(seed)
    ranks = torch.randint(1, 9, (len(counts),), generator=g).tolist()
    x, w, b, s, A, B, meta = _operands(counts, ranks, d_in, d_out, torch.float32, r_max=max(ranks) + extra_r,
                                       seed=seed)
    _check_forward_and_backward_layouts(x, w, b if bias else None, s, A, B, meta)


def test_gemm_expand_leaves_rows_of_no_segment_to_the_base_cpu():
    """Rows past the last segment (an x longer than the meta's rows) get X W alone."""
    x, w, b, s, A, B, meta = _operands([20, 9], [3, 4], 24, 40, torch.float32)
    pad = torch.randn(19, 24)
    xp, sp = torch.cat([x, pad]), torch.cat([s, torch.full((19, s.shape[1]), float("nan"))])
    y = ge.gemm_expand(xp, w, (w.stride(1), w.stride(0)), 40, sp, B, B.stride(), meta, True, b)
    _assert_within_rounding(y[:29], x, w.t(), b, s, B, meta, True, "segments' rows")
    base = pad.double() @ w.t().double() + b.double()
    bound = pad.double().abs() @ w.t().double().abs() + b.double().abs()
    assert ((y[29:].double() - base).abs() <= EPS[torch.float32] * bound).all(), "rows of no segment"


# ----------------------------------------------------------------------------- the "gemm" variant


def _variant_vs_reference_and_epilogue(case: Case, dtype, **kw):  # noqa: ANN001, ANN003
    """The gemm variant's y, dX, dA, dB: within the reference's own rounding of the fp64 truth
    (as tests/altokernels/test_fused.py checks every variant), and near the epilogue variant's."""
    dy = torch.randn(case.x.shape[0], case.weight.shape[0], generator=torch.Generator().manual_seed(7)).to(dtype)
    torch.manual_seed(1)
    truth = run(as_double(case), loop_lora_linear, dy.double(), **kw)
    torch.manual_seed(1)
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs(), **kw)
    torch.manual_seed(1)
    want = run(case, loop_lora_linear, dy, **kw)
    torch.manual_seed(1)
    got = run(case, fused_lora_linear, dy, variant="gemm", **kw)
    torch.manual_seed(1)
    epi = run(case, fused_lora_linear, dy, variant="epilogue", **kw)
    for name, g, w, t, a, e in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth, epi):
        assert g.dtype == e.dtype, name
        assert_close_to_truth(g, w.to(g.dtype), t, a, TOL[dtype], name)
        assert_near(g, e, 4 * TOL[dtype], f"{name} vs epilogue")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_variant_matches_reference_and_epilogue_cpu(dtype, bias):
    case = make_case(COUNTS, RANKS, 37, 45, dtype, r_max=8, bias=bias)
    _variant_vs_reference_and_epilogue(case, dtype)


@settings(max_examples=8, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=6), d_in=st.integers(1, 48), d_out=st.integers(1, 48),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), bias=st.booleans(), seed=st.integers(0, 999))
def test_gemm_variant_over_random_segment_layouts_cpu(counts, d_in, d_out, dtype, bias, seed):
    if sum(counts) == 0:
        counts = [*counts[:-1], 1]
    ranks = torch.randint(1, 9, (len(counts),), generator=torch.Generator().manual_seed(seed)).tolist()
    case = make_case(counts, ranks, d_in, d_out, dtype, r_max=max(ranks) + seed % 3, bias=bias, seed=seed)
    _variant_vs_reference_and_epilogue(case, dtype)


def test_gemm_variant_with_dropout_cpu():
    """Dropout: dX's LoRA term takes the mask (the addmm form); forward and weight grads as usual."""
    case = make_case(COUNTS, RANKS, 24, 18, torch.float32, dropout=[0.5, 0.0, 0.1, 0.25, 0.0])
    _variant_vs_reference_and_epilogue(case, torch.float32)


def test_gemm_variant_with_fp32_masters_under_bf16_cpu():
    case = make_case(COUNTS, RANKS, 33, 21, torch.bfloat16)
    master = Case(case.x, case.weight, case.bias, case.A.detach().float().requires_grad_(True),
                  case.B.detach().float().requires_grad_(True), case.meta)
    dy = torch.randn(case.x.shape[0], 21, generator=torch.Generator().manual_seed(7)).bfloat16()
    truth = run(as_double(case), loop_lora_linear, dy.double())
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs())
    want = run(case, loop_lora_linear, dy)
    got = run(master, fused_lora_linear, dy, variant="gemm")
    epi = run(master, fused_lora_linear, dy, variant="epilogue")
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for name, g, w, t, a, e in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth, epi):
        assert_close_to_truth(g, w.to(g.dtype), t, a, TOL[torch.bfloat16], name)
        assert_near(g, e, 4 * TOL[torch.bfloat16], f"{name} vs epilogue")


def test_gemm_config_space_suits_hopper():
    space = ge.config_space()
    assert len({str(c) for c in space}) == len(space) >= 6
    for c in space:
        assert 128 <= c.kwargs["BLOCK_M"] <= 256 and 128 <= c.kwargs["BLOCK_N"] <= 256 and c.kwargs["BLOCK_K"] == 64
        assert c.num_warps in (4, 8) and 3 <= c.num_stages <= 5


CROSS_COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from altokernels import gemm_epilogue as ge

fn = ge._gemm_lora_kernel.fn
tables = {"seg_start_ptr": "*i32", "seg_end_ptr": "*i32", "seg_slot_ptr": "*i32", "seg_rank_ptr": "*i32",
          "seg_scale_ptr": "*fp32", "s_ptr": "*fp32", "l_ptr": "*fp32",
          **{n: "*bf16" for n in ("x_ptr", "w_ptr", "bias_ptr", "out_ptr")}}
block = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "SEG_BLOCK": 32, "BLOCK_R": 64,
         "IEEE": False, "UPCAST": False, "LORA": True, "stride_xk": 1, "stride_sr": 1, "stride_on": 1}
# forward: W^T read K-contiguous, bias, scaled B (fp32 masters); backward: W read N-contiguous, A^T
for consts in ({"HAS_BIAS": True, "APPLY_SCALE": True, "stride_wk": 1, "stride_ln": 1},
               {"HAS_BIAS": False, "APPLY_SCALE": False, "stride_wn": 1, "stride_lr": 1}):
    consts = {**block, **consts}
    sig = {n: "constexpr" if n in consts else tables.get(n, "i32") for n in fn.arg_names}
    # as the JIT specializes them at the bench shapes: pointers 16-byte aligned, sizes and strides
    # multiples of 16 (without it the loads cannot be asynchronous and the K-loop is not pipelined)
    div16 = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if sig[n] not in ("constexpr",)
             and n != "ROW_HINT"}
    k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=div16), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 8, "num_stages": 3})
    assert "wgmma" in k.asm["ptx"], "no Hopper tensor-core instructions"
    assert "3x128x64xbf16" in k.asm["ttgir"], "the K-loop is not pipelined over 3 stages"
print("ok")
"""


@pytest.mark.slow  # two sm_90 compiles: ~1 min each on this project's busy 2-core CPU
def test_gemm_kernel_compiles_for_an_h200():
    """The interpreter runs what the GPU compiler may refuse (a loop over a segment range read from
    memory, tile-wide reductions of the tables): cross-compile both layouts for sm_90 here, and
    check the K-loop uses Hopper's wgmma and is software-pipelined."""
    cross_compile_for_sm90(CROSS_COMPILE, 600)


# --------------------------------------------------------------------------- the compiled kernel


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("d_in, d_out", [(2048, 512), (2048, 8192), (8192, 2048)])
def test_gemm_variant_at_the_bench_shapes_gpu(d_in, d_out):
    """32 adapters x 512 tokens, ranks 16/32/64, bf16 (experiments/bench_kernels.py's layer)."""
    ranks = [16, 32, 64] * 10 + [16, 32]
    case = make_case([512] * 32, ranks, d_in, d_out, torch.bfloat16, device="cuda", r_max=64, bias=False)
    dy = torch.randn(case.x.shape[0], d_out, device="cuda", dtype=torch.bfloat16)
    truth = run(as_double(case), loop_lora_linear, dy.double())
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs())
    want = run(case, loop_lora_linear, dy)
    epi = run(case, fused_lora_linear, dy, variant="epilogue")
    for streams in (False, True):
        got = run(case, fused_lora_linear, dy, variant="gemm", streams=streams)
        for name, g, w, t, a, e in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth, epi):
            assert_close_to_truth(g, w, t, a, TOL[torch.bfloat16], name)
            assert_near(g, e, 4 * TOL[torch.bfloat16], f"{name} vs epilogue")


def _every_config_matches_torch(device, dtype, counts, d_in, d_out, configs):  # noqa: ANN001
    """Each of `configs` on both layouts, segments off the tile grid, widths off it, fp32 master L."""
    ranks = [16, 64, 32, 8, 1]
    meta = build_meta(counts, [4, 0, 2, 1, 3], ranks, [0.5, 1, 2, 3, 4], device)
    g = torch.Generator(device=device).manual_seed(0)
    t, r = sum(counts), 64
    x = torch.randn(t, d_in, device=device, generator=g).to(dtype)
    w = (torch.randn(d_out, d_in, device=device, generator=g) * d_in**-0.5).to(dtype)
    bias = torch.randn(d_out, device=device, generator=g).to(dtype)
    s = torch.randn(t, r, device=device, generator=g)
    B = torch.randn(5, r, d_out, device=device, generator=g)  # fp32 masters
    A = torch.randn(5, d_in, r, device=device, generator=g)
    for config in configs:
        y = ge.gemm_expand(x, w, (w.stride(1), w.stride(0)), d_out, s, B, B.stride(), meta, True, bias, config=config)
        _assert_within_rounding(y, x, w.t(), bias, s, B, meta, True, f"forward {config}")
        at = (A.stride(0), A.stride(2), A.stride(1))
        dx = ge.gemm_expand(y, w, (w.stride(0), w.stride(1)), d_in, s, A, at, meta, False, config=config)
        _assert_within_rounding(dx, y, w, None, s, A.transpose(1, 2), meta, False, f"backward {config}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_configs_the_interpreter_can_run_match_torch_cpu(dtype):
    """The GPU configs whose broadcast product fits the interpreter (BLOCK_M x BLOCK_K x BLOCK_N <=
    2**20: the 128x128 tiles), GROUP_M 8 included: 300 rows in 3 row blocks, 140 columns in 2."""
    fits = [c for c in ge.config_space() if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_K"] * c.kwargs["BLOCK_N"] <= 2**20]
    assert len(fits) >= 3
    _every_config_matches_torch("cpu", dtype, [100, 0, 37, 150, 13], 70, 140, fits)


@pytest.mark.gpu
@GPU
def test_every_gemm_config_matches_torch_gpu():
    _every_config_matches_torch("cuda", torch.bfloat16, [300, 0, 77, 512, 5], 1000, 515, ge.config_space())
