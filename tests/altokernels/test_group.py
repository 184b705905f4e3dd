"""The group path (altokernels/group_function.py): 2 or 3 projections of one input in one autograd
Function whose LoRA work is 6 launches, equal to one `fused_lora_linear` per projection and to the
plain-torch reference, in outputs and every gradient (in place with flags too).

On CPU the kernels run under TRITON_INTERPRET=1 (conftest.py); the GPU-marked tests run the
compiled kernels at SmolLM2's widths, eagerly and captured in a CUDA graph.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altokernels import build_meta, loop_lora_linear
from altokernels.function import fused_lora_linear
from altokernels.group_function import group_covers, group_lora_linear
from tests.altokernels.helpers import TOL, assert_close_to_truth, cross_compile_for_sm90

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
COUNTS = [9, 0, 70, 5]  # an empty segment; 70 rows span two schedule entries
RANKS = [3, 2, 8, 5]


def members(counts, ranks, d_in, d_outs, dtype, r_maxes=None, extra_slots=2, masters=False, seed=0, device="cpu"):
    """x, the frozen weights, A and B stacks (own r_max each; fp32 `masters` under a lower dtype), meta."""
    g = torch.Generator().manual_seed(seed)
    z = len(counts)
    n_slots = z + extra_slots
    slots = torch.randperm(n_slots, generator=g)[:z].tolist()  # scattered slots, some unused
    meta = build_meta(counts, slots, ranks, [0.5 + (i % 4) for i in range(z)], device)
    r_maxes = r_maxes or [max(ranks)] * len(d_outs)
    wdt = torch.float32 if masters else dtype

    def rnd(*shape, s=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dt)

    x = rnd(sum(counts), d_in).requires_grad_(True)
    ws = [rnd(n, d_in, s=d_in**-0.5) for n in d_outs]
    As = [rnd(n_slots, d_in, r, s=d_in**-0.5, dt=wdt).requires_grad_(True) for r in r_maxes]
    Bs = [rnd(n_slots, r, n, s=r**-0.5, dt=wdt).requires_grad_(True) for r, n in zip(r_maxes, d_outs)]
    return x, ws, As, Bs, meta


def run(fn, x, ws, As, Bs, meta, dys):
    """(outputs, dX, dA per member, dB per member) of fn's outputs under upstream gradients dys."""
    ys = fn(x, ws, As, Bs, meta)
    grads = torch.autograd.grad(ys, [x, *As, *Bs], dys)
    n = len(ws)
    return [y.detach() for y in ys], grads[0], list(grads[1:1 + n]), list(grads[1 + n:])


def per_projection(x, ws, As, Bs, meta, **kw):
    return [fused_lora_linear(x, w, None, A, B, meta, **kw) for w, A, B in zip(ws, As, Bs)]


def reference(x, ws, As, Bs, meta):
    return [loop_lora_linear(x, w, None, A.to(x.dtype), B.to(x.dtype), meta) for w, A, B in zip(ws, As, Bs)]


def upstream(x, ws, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x.shape[0], w.shape[0], generator=g).to(device=x.device, dtype=x.dtype) for w in ws]


def double(x, ws, As, Bs, absolute=False):
    def d(t, grad):
        t = t.detach().double()
        return (t.abs() if absolute else t).requires_grad_(grad)

    return d(x, True), [d(w, False) for w in ws], [d(A, True) for A in As], [d(B, True) for B in Bs]


def check_group(x, ws, As, Bs, meta, dtype):
    """Group == per projection (outputs, dA, dB bit for bit: the same tile code on the same inputs;
    dX up to the order of its sum) and both within the kernels' tolerance of the fp64 reference."""
    dys = upstream(x, ws)
    got = run(group_lora_linear, x, ws, As, Bs, meta, dys)
    want = run(per_projection, x, ws, As, Bs, meta, dys)
    for name, g, w in (("y", got[0], want[0]), ("dA", got[2], want[2]), ("dB", got[3], want[3])):
        for p, (a, b) in enumerate(zip(g, w)):
            assert torch.equal(a, b), f"{name}[{p}]: group differs from per projection by {(a - b).abs().max()}"
    truth = run(reference, *double(x, ws, As, Bs), meta, [d.double() for d in dys])
    abs_truth = run(reference, *double(x, ws, As, Bs, absolute=True), meta, [d.double().abs() for d in dys])
    ref = run(reference, x, ws, As, Bs, meta, dys)
    assert_close_to_truth(got[1], ref[1], truth[1], abs_truth[1], TOL[dtype], "dx")
    assert_close_to_truth(want[1], ref[1], truth[1], abs_truth[1], TOL[dtype], "dx (per projection)")
    for i, name in ((0, "y"), (2, "dA"), (3, "dB")):
        for p in range(len(ws)):
            assert_close_to_truth(got[i][p], ref[i][p].to(got[i][p].dtype), truth[i][p], abs_truth[i][p], TOL[dtype],
                                  f"{name}[{p}]")
    return got


@pytest.mark.parametrize("dtype,masters", [(torch.float32, False), (torch.bfloat16, True)])
@pytest.mark.parametrize("d_outs,r_maxes", [((32, 8, 8), (8, 12, 8)), ((48, 40), (8, 8))])
def test_group_equals_per_projection_and_reference(dtype, masters, d_outs, r_maxes):
    """q/k/v-like (one wide, two narrow members, GQA) and gate/up-like groups; heterogeneous ranks
    and stack widths, an empty segment, unused slots; fp32 activations, bf16 under fp32 masters."""
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, d_outs, dtype, r_maxes=r_maxes, masters=masters)
    got = check_group(x, ws, As, Bs, meta, dtype)
    used = set(meta.slots)
    for p in range(len(ws)):  # slots no segment uses get zero gradients
        for s in range(As[p].shape[0]):
            if s not in used:
                assert not got[2][p][s].any() and not got[3][p][s].any()
    assert all(g.dtype == torch.float32 for g in got[2] + got[3]) if masters else True


@st.composite
def layouts(draw):
    z = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(0, 70), min_size=z, max_size=z))
    ranks = draw(st.lists(st.integers(1, 8), min_size=z, max_size=z))
    n = draw(st.integers(2, 3))
    d_outs = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    r_maxes = [max(ranks) + draw(st.integers(0, 3)) for _ in range(n)]
    return counts, ranks, draw(st.integers(1, 40)), d_outs, r_maxes, draw(st.integers(0, 2))


@settings(max_examples=6, deadline=None)
@given(c=layouts(), seed=st.integers(0, 99))
def test_group_equals_per_projection_on_random_layouts(c, seed):
    counts, ranks, d_in, d_outs, r_maxes, extra = c
    x, ws, As, Bs, meta = members(counts, ranks, d_in, d_outs, torch.float32, r_maxes=r_maxes, extra_slots=extra,
                                  seed=seed)
    check_group(x, ws, As, Bs, meta, torch.float32)


def _zero_grads(As, Bs, start=None):
    for t in (*As, *Bs):
        t.grad = torch.zeros_like(t) if start is None else start[id(t)].clone()


def test_in_place_gradients_equal_per_projection_over_micro_batches():
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8), torch.bfloat16, r_maxes=(8, 12, 8), masters=True)
    g = torch.Generator().manual_seed(3)
    start = {id(t): torch.randn(t.shape, generator=g) for t in (*As, *Bs)}
    micro = [upstream(x, ws, seed) for seed in (11, 12)]
    results = []
    for fn in (per_projection, group_lora_linear):
        _zero_grads(As, Bs, start)
        held = [t.grad for t in (*As, *Bs)]
        flags = torch.zeros(As[0].shape[0], dtype=torch.int32)
        for dys in micro:  # two micro-batches into one update
            ys = fn(x, ws, As, Bs, meta, grad_flags=flags)
            torch.autograd.backward(ys, dys)
        assert all(t.grad is h for t, h in zip((*As, *Bs), held))  # written in place, nothing accumulated by autograd
        assert not flags.any()
        results.append([t.grad.clone() for t in (*As, *Bs)])
    for a, b in zip(*results):
        assert torch.equal(a, b)
    used = set(meta.slots)
    for t, got in zip((*As, *Bs), results[1]):
        for s in range(t.shape[0]):
            if s not in used:  # a slot no segment uses is not even read
                assert torch.equal(got[s], start[id(t)][s])


@pytest.mark.parametrize("member", [0, 2])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_a_non_finite_gradient_flags_its_slot_only(member, bad_value):
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8), torch.float32, r_maxes=(8, 12, 8))
    _zero_grads(As, Bs)
    dys = upstream(x, ws)
    bad = 2  # segment 2's rows: 9 .. 79
    dys[member][9 + 3, 5] = bad_value
    flags = torch.zeros(As[0].shape[0], dtype=torch.int32)
    torch.autograd.backward(group_lora_linear(x, ws, As, Bs, meta, grad_flags=flags), dys)
    assert flags.tolist() == [int(s == meta.slots[bad]) for s in range(As[0].shape[0])]
    assert not torch.isfinite(Bs[member].grad[meta.slots[bad]]).all()
    for p, B in enumerate(Bs):  # the other members' gradients stay finite
        if p != member:
            assert torch.isfinite(B.grad).all()


def test_one_group_call_is_six_launches(monkeypatch):
    """Forward shrink and expand, backward dS, dX, dA, dB: 6 launches for the group, 6 per projection."""
    from altokernels import launch

    names = []
    real = launch.launch

    def counting(fn, *args, **kw):  # noqa: ANN001, ANN002, ANN003
        names.append(fn.fn.__name__)
        return real(fn, *args, **kw)

    monkeypatch.setattr(launch, "launch", counting)
    for n in (2, 3):
        x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8)[:n], torch.float32)
        names.clear()
        torch.autograd.backward(group_lora_linear(x, ws, As, Bs, meta), upstream(x, ws))
        assert sorted(names) == sorted(["_member_shrink_kernel"] * 2 + ["_member_expand_kernel"] * 2
                                       + ["_member_seg_reduce_kernel"] * 2)
        names.clear()
        torch.autograd.backward(per_projection(x, ws, As, Bs, meta), upstream(x, ws))
        assert len(names) == 6 * n
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8), torch.float32)
    names.clear()
    torch.autograd.backward(group_lora_linear(x.detach(), ws, As, Bs, meta), upstream(x, ws))
    assert len(names) == 5  # no dX wanted: no dX expand


def test_eval_forward_only_and_frozen_stacks():
    """Without gradients (evaluation) the group runs its two forward launches; with frozen stacks
    only dX flows, equal to the per-projection path's."""
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8), torch.float32)
    with torch.no_grad():
        got = group_lora_linear(x, ws, As, Bs, meta, training=False)
        want = per_projection(x, ws, As, Bs, meta, training=False)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    frozen_a = [A.detach() for A in As]
    frozen_b = [B.detach() for B in Bs]
    dys = upstream(x, ws)
    (gx,) = torch.autograd.grad(group_lora_linear(x, ws, frozen_a, frozen_b, meta), [x], dys)
    (wx,) = torch.autograd.grad(per_projection(x, ws, frozen_a, frozen_b, meta), [x], dys)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-6)


def test_what_the_group_covers():
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8), torch.float32)
    none = [None] * 3
    assert group_covers(x, ws, none, As, Bs, meta, training=True)
    assert not group_covers(x, ws[:1], none[:1], As[:1], Bs[:1], meta, training=True)  # one member
    assert not group_covers(x, ws, [None, torch.zeros(8), None], As, Bs, meta, training=True)  # a bias
    assert not group_covers(x, ws, none, [As[0].double(), *As[1:]], Bs, meta, training=True)  # mixed dtypes
    assert not group_covers(x, [ws[0].bfloat16(), *ws[1:]], none, As, Bs, meta, training=True)
    assert not group_covers(x, ws, none, [As[0].transpose(1, 2).contiguous().transpose(1, 2), *As[1:]], Bs, meta,
                            training=True)  # a non-contiguous stack
    assert not group_covers(x, ws, none, [As[0].detach(), *As[1:]], Bs, meta, training=True)  # mixed requires_grad
    dropout = build_meta(COUNTS, meta.slots, RANKS, meta.scales, "cpu", dropout=[0.1, 0.0, 0.0, 0.0])
    assert not group_covers(x, ws, none, As, Bs, dropout, training=True)  # PEFT draws a mask per projection
    assert group_covers(x, ws, none, As, Bs, dropout, training=False)  # evaluation draws none


def test_group_arguments_are_validated():
    x, ws, As, Bs, meta = members(COUNTS, RANKS, 24, (32, 8, 8), torch.float32)
    with pytest.raises(ValueError, match="expected 2 or 3"):
        group_lora_linear(x, ws[:1], As[:1], Bs[:1], meta)
    with pytest.raises(ValueError, match="expected 2 or 3"):
        group_lora_linear(x, ws, As[:2], Bs, meta)
    with pytest.raises(ValueError, match="^B: expected shape"):
        group_lora_linear(x, ws, As, [Bs[1], Bs[0], Bs[2]], meta)
    dropout = build_meta(COUNTS, meta.slots, RANKS, meta.scales, "cpu", dropout=[0.1, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="mask per projection"):
        group_lora_linear(x, ws, As, Bs, dropout)
    with pytest.raises(ValueError, match="int32"):
        group_lora_linear(x, ws, As, Bs, meta, grad_flags=torch.zeros(As[0].shape[0], dtype=torch.int64))
    with pytest.raises(ValueError, match="gradients allocated"):
        group_lora_linear(x, ws, As, Bs, meta, grad_flags=torch.zeros(As[0].shape[0], dtype=torch.int32))


CROSS_COMPILE = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from altokernels import triton_kernels as tk

def compile_for_h200(kernel, types, consts):
    fn = kernel.fn
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32)).asm["ptx"]

ptrs = lambda names, t: {n: t for n in names}
tables = {**ptrs(["sched_seg_ptr", "sched_row_ptr", "seg_end_ptr", "seg_slot_ptr", "seg_rank_ptr", "seg_start_ptr",
                  "flags_ptr"], "*i32"), "seg_scale_ptr": "*fp32"}
for members in (2, 3):
    compile_for_h200(tk._member_shrink_kernel, {**tables, **ptrs(["in0", "in1", "in2"], "*bf16"),
                     **ptrs(["w0", "w1", "w2"], "*fp32"), "out_ptr": "*fp32"},
                     {"APPLY_SCALE": True, "IEEE": False, "UPCAST": False, "MEMBERS": members, "SCHED_M": 64,
                      "BLOCK_M": 64, "BLOCK_K": 64, "BLOCK_R": 64, "SPLIT_K": 2, "stride_ik": 1, "stride_or": 1,
                      "stride_wr1": 1})  # a stride specialized to 1 for one member only
    for summed in (False, True):
        compile_for_h200(tk._member_expand_kernel, {**tables, "s_ptr": "*fp32", **ptrs(["w0", "w1", "w2"], "*fp32"),
                         **ptrs(["out0", "out1", "out2"], "*bf16")},
                         {"SUM": summed, "HAS_BASE": not summed, "APPLY_SCALE": not summed, "IEEE": False,
                          "UPCAST": False, "MEMBERS": members, "SCHED_M": 64, "BLOCK_M": 64, "BLOCK_N": 128,
                          "BLOCK_R": 64, "stride_sr": 1, "stride_on": 1})
    for rank_on_m in (False, True):
        act, side = ("*bf16", "*fp32") if not rank_on_m else ("*fp32", "*bf16")
        compile_for_h200(tk._member_seg_reduce_kernel, {**tables, **ptrs(["p0", "p1", "p2"], act),
                         **ptrs(["q0", "q1", "q2"], side), **ptrs(["out0", "out1", "out2"], "*fp32")},
                         {"RANK_ON_M": rank_on_m, "APPLY_SCALE": rank_on_m, "IEEE": False, "UPCAST": False,
                          "FULL_M": 64 if rank_on_m else 0, "FULL_N": 0 if rank_on_m else 64, "CAST_TO_Q": rank_on_m,
                          "ACCUMULATE": True, "FLAGS": True, "MEMBERS": members, "BLOCK_T": 64, "BLOCK_M": 64,
                          "BLOCK_N": 64, "stride_pm": 1, "stride_qn": 1, "stride_on": 1})
print("ok")
"""


def test_member_kernels_compile_for_an_h200():
    """The interpreter runs what a GPU compiler may refuse (a select of pointers, an int that Triton
    specialized to a constant for one member only): cross-compile each member kernel for sm_90 here."""
    cross_compile_for_sm90(CROSS_COMPILE, 300)


# --------------------------------------------------------------------------- the compiled kernels


def _gpu_members(n, masters=True):
    counts = [64 * (i % 5) + 7 for i in range(8)]
    ranks = [(16, 32, 64)[i % 3] for i in range(8)]
    d_outs = (576, 192, 192)[:n] if n == 3 else (1536, 1536)  # SmolLM2's q/k/v and gate/up
    return members(counts, ranks, 576, d_outs, torch.bfloat16, r_maxes=[64] * n, masters=masters, device="cuda")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("n", [2, 3])
def test_group_equals_per_projection_on_the_gpu(n):
    x, ws, As, Bs, meta = _gpu_members(n)
    dys = upstream(x, ws)
    got = run(group_lora_linear, x, ws, As, Bs, meta, dys)
    want = run(per_projection, x, ws, As, Bs, meta, dys)
    for name, i in (("y", 0), ("dA", 2), ("dB", 3)):  # split-K adds atomically: equal up to its order
        for a, b in zip(got[i], want[i]):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2, msg=name)
    # dX sums the members' expands in another order: bf16 rounds each partial sum, so equal up to a
    # rounding of the largest (a near-zero sum of large terms can differ by that much, relatively inf)
    ulp = 2.0 ** (math.floor(math.log2(float(want[1].abs().max()))) - 7)
    torch.testing.assert_close(got[1], want[1], rtol=2e-2, atol=max(2e-2, 2 * ulp))
    _zero_grads(As, Bs)
    flags = torch.zeros(As[0].shape[0], dtype=torch.int32, device="cuda")
    torch.autograd.backward(group_lora_linear(x, ws, As, Bs, meta, grad_flags=flags), dys)
    for t, w in zip((*As, *Bs), (*want[2], *want[3])):
        torch.testing.assert_close(t.grad, w, rtol=2e-2, atol=2e-2)
    assert not flags.any()


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("n", [2, 3])
def test_group_captured_in_a_cuda_graph_replays_as_eager(n):
    """A step's group call (forward, backward, in-place gradients and flags) captured once and
    replayed on new inputs equals the eager call on them (as the runtime's step graphs use it)."""
    x, ws, As, Bs, meta = _gpu_members(n)
    x = x.detach().requires_grad_(True)
    flags = torch.zeros(As[0].shape[0], dtype=torch.int32, device="cuda")
    dys = [d.clone() for d in upstream(x, ws)]

    def body():
        ys = group_lora_linear(x, ws, As, Bs, meta, grad_flags=flags)
        torch.autograd.backward(ys, dys)
        return [y.detach() for y in ys]

    _zero_grads(As, Bs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile and plan every launch outside the capture
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        out = body()
    g = torch.Generator(device="cuda").manual_seed(5)
    with torch.no_grad():  # new inputs in place; gradients zeroed in place (the captured kernels write there)
        x.copy_(torch.randn(x.shape, device="cuda", generator=g).to(x.dtype))
        for d in dys:
            d.copy_(torch.randn(d.shape, device="cuda", generator=g).to(d.dtype))
        for t in (*As, *Bs):
            t.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    replayed = [o.clone() for o in out], [t.grad.clone() for t in (*As, *Bs)], x.grad.clone()
    _zero_grads(As, Bs)
    x.grad = None
    eager = body(), [t.grad.clone() for t in (*As, *Bs)], x.grad.clone()
    for a, b in zip(replayed[0], eager[0]):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    for a, b in zip(replayed[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(replayed[2], eager[2], rtol=1e-2, atol=1e-2)
    assert not flags.any()
