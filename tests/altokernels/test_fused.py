"""Triton path vs the per-adapter loop reference: forward and all gradients.

On CPU the kernels run under TRITON_INTERPRET=1 (see conftest.py) with small shapes; the
GPU-marked tests run the compiled kernels with larger ones.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altokernels import build_meta, loop_lora_linear, multi_lora_linear
from altokernels.function import VARIANTS, fused_lora_linear
from tests.altokernels.helpers import TOL, Case, as_double, assert_close_to_truth, assert_near, make_case, run

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _fused(*args, variant=None, wgrad="auto", chunks=4, **kw):
    if variant is None:
        return multi_lora_linear(*args, impl="triton", **kw)
    return fused_lora_linear(*args, variant=variant, streams=True, wgrad=wgrad, chunks=chunks, **kw)


def _compare(case, dtype, **kw):
    g = torch.Generator().manual_seed(7)
    dy = torch.randn(case.x.shape[0], case.weight.shape[0], generator=g).to(device=case.x.device, dtype=dtype)
    torch.manual_seed(1)
    truth = run(as_double(case), loop_lora_linear, dy.double(), **{k: v for k, v in kw.items() if k not in ("variant", "wgrad", "chunks")})
    torch.manual_seed(1)
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs(),
                    **{k: v for k, v in kw.items() if k not in ("variant", "wgrad", "chunks")})
    torch.manual_seed(1)
    want = run(case, loop_lora_linear, dy, **{k: v for k, v in kw.items() if k not in ("variant", "wgrad", "chunks")})
    torch.manual_seed(1)
    got = run(case, _fused, dy, **kw)
    for name, g, w, t, a in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth):
        assert_close_to_truth(g, w, t, a, TOL[dtype], name)
    return got


@st.composite
def cases(draw, max_segments, max_count, max_rank, max_dim, max_tokens=10**9, dims=None, r_max=None):
    z = draw(st.integers(1, max_segments))
    cap = max(3, min(max_count, max_tokens // z))  # bound the interpreter's work per case
    counts = draw(st.lists(st.integers(0, cap), min_size=z, max_size=z))
    ranks = draw(st.lists(st.integers(1, max_rank), min_size=z, max_size=z))
    dim = st.sampled_from(dims) if dims else st.integers(1, max_dim)
    d_in, d_out = draw(dim), draw(dim)
    extra = draw(st.integers(0, 2))
    r_max = r_max or max(ranks) + draw(st.integers(0, 3))
    return counts, ranks, d_in, d_out, extra, r_max


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=5, deadline=None)
@given(c=cases(max_segments=64, max_count=70, max_rank=128, max_dim=72, max_tokens=300), seed=st.integers(0, 99))
def test_fused_matches_reference_cpu(dtype, c, seed):
    counts, ranks, d_in, d_out, extra, r_max = c
    case = make_case(counts, ranks, d_in, d_out, dtype, extra_slots=extra, r_max=r_max, seed=seed)
    _compare(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_edge_cases_cpu(dtype):
    # one segment; all-empty but one; a segment of 1 token; ranks 1 and r_max=128; d not /64
    for counts, ranks, d_in, d_out in [([65], [3], 67, 3), ([0, 0, 130, 0], [1, 128, 5, 9], 5, 70),
                                       ([1, 64, 63], [128, 1, 64], 129, 33)]:
        case = make_case(counts, ranks, d_in, d_out, dtype, extra_slots=1, r_max=128)
        _compare(case, dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_variants_cpu(variant, dtype):
    drop = [0.0, 0.0, 0.3, 0.1] if variant != "epilogue" else None
    case = make_case([70, 0, 9, 130], [5, 1, 16, 3], 33, 21, dtype, dropout=drop)  # 6 entries, 4 chunks
    _compare(case, dtype, variant=variant)


@pytest.mark.parametrize("wgrad", ["bmm", "triton"])
@pytest.mark.parametrize("extra_slots", [0, 2])  # identity slots / scattered slots with spares
def test_fused_weight_grad_paths_cpu(wgrad, extra_slots):
    case = make_case([66] * 3, [5, 1, 16], 33, 21, torch.float32, extra_slots=extra_slots, r_max=16)
    if extra_slots == 0:
        case.meta = build_meta([66] * 3, [0, 1, 2], [5, 1, 16], [0.5, 1.5, 2.5], "cpu")
    _compare(case, torch.float32, variant="epilogue", wgrad=wgrad)


def test_fused_bmm_wgrad_needs_equal_counts():
    case = make_case([4, 5], [2, 3], 8, 8, torch.float32)
    with pytest.raises(ValueError, match="^wgrad"):
        fused_lora_linear(case.x, case.weight, case.bias, case.A, case.B, case.meta, wgrad="bmm")


def test_fused_dropout_same_mask_as_reference_cpu():
    case = make_case([40, 0, 23], [4, 2, 8], 24, 18, torch.float32, dropout=[0.5, 0.1, 0.25])
    got = _compare(case, torch.float32)
    # dropout really acts: the LoRA term differs from the no-dropout output
    case_nodrop = run(case, _fused, torch.zeros_like(got[0]), training=False)[0]
    assert (got[0] - case_nodrop).abs().max() > 1e-3


def test_fused_without_grad_inputs_cpu():
    case = make_case([5, 7], [2, 3], 10, 9, torch.float32)
    with torch.no_grad():
        y = _fused(case.x, case.weight, case.bias, case.A, case.B, case.meta)
    want = loop_lora_linear(case.x, case.weight, case.bias, case.A, case.B, case.meta).detach()
    assert_near(y, want, TOL[torch.float32], "y")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=10, deadline=None)
# few distinct dims / r_max: every new block shape or int specialization is a fresh compile
@given(c=cases(max_segments=64, max_count=600, max_rank=128, max_dim=0, dims=[67, 1000], r_max=128),
       seed=st.integers(0, 99))
def test_fused_matches_reference_gpu(dtype, c, seed):
    counts, ranks, d_in, d_out, extra, r_max = c
    case = make_case(counts, ranks, d_in, d_out, dtype, device="cuda", extra_slots=extra, r_max=r_max, seed=seed)
    _compare(case, dtype)


@pytest.mark.gpu
@GPU
def test_fused_llama_shapes_gpu():
    z = 32
    ranks = [16, 32, 64] * 10 + [16, 32]
    for d_in, d_out in [(2048, 512), (2048, 8192), (8192, 2048)]:
        case = make_case([512] * z, ranks, d_in, d_out, torch.bfloat16, device="cuda", r_max=64)
        _compare(case, torch.bfloat16)


@pytest.mark.parametrize("d_in, d_out", [(33, 21), (21, 33)])  # addmm on one direction, epilogue on the other
def test_fused_auto_variant_mixed_cpu(monkeypatch, d_in, d_out):
    import altokernels.function as fn

    monkeypatch.setattr(fn, "AUTO_ADDMM_MIN_N", 30)
    case = make_case([70, 0, 9, 130], [5, 1, 16, 3], d_in, d_out, torch.bfloat16)
    _compare(case, torch.bfloat16, variant="auto")


@pytest.mark.parametrize("impl, variant", [("triton", v) for v in (None, *VARIANTS)] + [("torch_grouped", None),
                                                                                      ("loop", None)])
def test_fp32_master_weights_under_bf16_activations_cpu(impl, variant):
    """A/B kept in fp32 (the trainer's stacks) with bf16 x: the kernels round them in registers and
    write fp32 gradients; results match the bf16 reference on the same (bf16-representable) values."""
    case = make_case([70, 0, 9, 130], [5, 1, 16, 3], 33, 21, torch.bfloat16)
    master = Case(case.x, case.weight, case.bias, case.A.detach().float().requires_grad_(True),
                  case.B.detach().float().requires_grad_(True), case.meta)
    dy = torch.randn(case.x.shape[0], case.weight.shape[0], generator=torch.Generator().manual_seed(7)).bfloat16()
    truth = run(as_double(case), loop_lora_linear, dy.double())
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs())
    want = run(case, loop_lora_linear, dy)
    if impl == "triton":
        got = run(master, _fused, dy, variant=variant, wgrad="auto")  # auto must not take bmm here
    else:
        got = run(master, multi_lora_linear, dy, impl=impl)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    assert got[2].dtype == torch.float32 and got[3].dtype == torch.float32
    for name, g, w, t, a in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth):
        assert_close_to_truth(g, w.float() if g.dtype != w.dtype else w, t, a, TOL[torch.bfloat16], name)


def test_bmm_weight_grads_refuse_fp32_master_weights():
    case = make_case([16] * 3, [4, 4, 4], 33, 21, torch.bfloat16, extra_slots=0)
    with pytest.raises(ValueError, match="^wgrad"):
        fused_lora_linear(case.x, case.weight, None, case.A.float(), case.B.float(), case.meta, wgrad="bmm")


@pytest.mark.gpu
@GPU
def test_fp32_master_weights_gpu():
    """The fp32-master path on the GPU (compiled kernels, autotuned configs) at bench-like shapes."""
    case = make_case([300, 0, 77, 512, 5], [16, 64, 32, 8, 1], 1000, 515, torch.bfloat16, device="cuda")
    master = Case(case.x, case.weight, case.bias, case.A.detach().float().requires_grad_(True),
                  case.B.detach().float().requires_grad_(True), case.meta)
    dy = torch.randn(case.x.shape[0], case.weight.shape[0], generator=torch.Generator().manual_seed(7)).to("cuda",
                                                                                                        torch.bfloat16)
    truth = run(as_double(case), loop_lora_linear, dy.double())
    abs_truth = run(as_double(case, absolute=True), loop_lora_linear, dy.double().abs())
    want = run(case, loop_lora_linear, dy)
    for variant in VARIANTS:
        got = run(master, _fused, dy, variant=variant)
        assert got[2].dtype == torch.float32 and got[3].dtype == torch.float32
        for name, g, w, t, a in zip(("y", "dx", "dA", "dB"), got, want, truth, abs_truth):
            assert_close_to_truth(g, w.float() if g.dtype != w.dtype else w, t, a, TOL[torch.bfloat16],
                                  f"{variant} {name}")


@settings(max_examples=6, deadline=None)
@given(split=st.lists(st.integers(1, 3), min_size=2, max_size=4).flatmap(
    lambda a: st.permutations(a).map(lambda b: (a, b))), seed=st.integers(0, 99))
def test_a_meta_retargeted_to_other_counts_equals_a_fresh_one_cpu(split, seed):
    """A padded schedule rewritten for another split of the same rows (what a replayed CUDA graph
    reads) gives the fresh meta's forward and gradients: no-op entries mask every row off."""
    from dataclasses import replace

    from altokernels import max_sched_entries

    a, b = ([17 * r for r in s] for s in split)  # rows of 17 tokens: segments end inside blocks
    case = make_case(b, [2 + i for i in range(len(b))], 24, 20, torch.float32, seed=seed)
    m = case.meta
    padded = build_meta(a, list(reversed(m.slots)), [1] * len(a), [1.0] * len(a), "cpu",
                        sched_entries=max_sched_entries(sum(a), len(a), block_m=16), block_m=16)
    padded.retarget(m.slots, m.ranks, m.scales, token_counts=b)
    assert padded.offsets == m.offsets and padded.num_blocks >= len(m.sched_row_host)
    _compare(replace(case, meta=padded), torch.float32)
    with pytest.raises(ValueError, match="token_counts"):
        padded.retarget(m.slots, m.ranks, m.scales, token_counts=[c + 1 for c in b])
