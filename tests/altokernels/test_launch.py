"""Host work per layer call: the direct-launch cache (altokernels.launch) and the count of torch ops and
Triton launches in one fused fwd+bwd, which a change adding per-call work makes fail."""

import collections

import pytest
import torch
import triton
from torch.utils._python_dispatch import TorchDispatchMode

from altokernels import build_meta
from altokernels import launch as launch_mod
from altokernels import triton_kernels as tk
from altokernels.function import VARIANTS, fused_lora_linear
from tests.altokernels.helpers import TOL, assert_near, make_case, run

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _count(monkeypatch, counts, slots, n_slots, **kw):
    """aten ops and kernel launches of one layer's fwd+bwd after the first layer of the step (which
    may fill per-step caches on the meta); launches stubbed: only the host side runs."""
    launches: collections.Counter = collections.Counter()
    monkeypatch.setattr(launch_mod, "launch", lambda fn, *a, **k: launches.update([fn.base_fn.__name__]))
    z, t, r = len(counts), sum(counts), 8
    meta = build_meta(counts, slots, [r] * z, [2.0] * z, "cpu")
    bf = torch.bfloat16
    x = torch.randn(t, 40, dtype=bf, requires_grad=True)
    w = torch.randn(24, 40, dtype=bf)
    A = torch.randn(n_slots, 40, r, dtype=bf, requires_grad=True)
    B = torch.randn(n_slots, r, 24, dtype=bf, requires_grad=True)
    dy = torch.randn(t, 24, dtype=bf)
    torch.autograd.grad(fused_lora_linear(x, w, None, A, B, meta, True, **kw), [x, A, B], dy)
    launches.clear()
    with _CountOps() as mode:
        y = fused_lora_linear(x, w, None, A, B, meta, True, **kw)
        torch.autograd.grad(y, [x, A, B], dy)
    return dict(mode.ops), dict(launches)


# Per layer fwd+bwd, bf16, no bias or dropout. Before this budget (addmm default, grads copied in):
# 26 ops + 4 launches (equal counts), 11 ops + 6 launches (unequal counts).
@pytest.mark.parametrize("name, counts, slots, n_slots, kw, n_ops, n_launches", [
    # default (epilogue, grouped Triton weight grads): mm x2 + t, empty x4 (S, dS, dA, dB)
    ("default, equal counts", [16] * 3, [0, 1, 2], 3, {}, 7, 6),
    # unequal counts; a spare slot makes dA/dB zeros
    ("default, unequal counts", [16, 5, 30], [2, 0, 3], 4, {}, 7, 6),
    # bmm weight grads at equal counts (written straight into dA/dB): + bf16 casts of S/dS, bmm x2,
    # one scale multiply, 4 views + 2 transposes
    ("auto wgrad (bmm)", [16] * 3, [0, 1, 2], 3, {"wgrad": "auto"}, 18, 4),
])
def test_ops_and_launches_per_layer(monkeypatch, name, counts, slots, n_slots, kw, n_ops, n_launches):
    ops, launches = _count(monkeypatch, counts, slots, n_slots, **kw)
    assert sum(ops.values()) == n_ops, f"{name}: {ops}"
    assert sum(launches.values()) == n_launches, f"{name}: {launches}"
    assert not {"copy_", "slice", "addmm_", "zeros_like", "clone"} & set(ops), f"{name}: {ops}"


class _FakeCompiled:
    def __init__(self) -> None:
        self.function, self.packed_metadata, self.calls = "fn-handle", "packed", []

    def launch_metadata(self, grid, stream, *args):  # noqa: ANN001, ANN201
        return None

    def run(self, *args):  # noqa: ANN001, ANN201
        self.calls.append(args)


class _FakeAutotuned:
    """Stands in for a @triton.autotune'd kernel: records slow-path calls, returns a compiled kernel."""

    arg_names = ["x_ptr", "n", "FLAG", "BLOCK"]

    def __init__(self, config: triton.Config) -> None:
        self.best_config, self.compiled, self.slow = config, _FakeCompiled(), []

    def __getitem__(self, grid):  # noqa: ANN001, ANN204
        def call(*args, **kw):  # noqa: ANN202
            self.slow.append((grid(self.best_config.kwargs), args, kw))
            return self.compiled

        return call


def test_direct_launch_reuses_compiled_kernel(monkeypatch):
    monkeypatch.setattr(launch_mod, "FAST_LAUNCH", True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(launch_mod, "_get_stream", lambda device: 1234)
    zeroed = []
    fn = _FakeAutotuned(triton.Config({"BLOCK": 32}, num_warps=4, pre_hook=lambda nargs: zeroed.append(nargs["x_ptr"])))
    cache: dict = {}
    x = torch.zeros(64)
    grid = lambda c: (100 // c["BLOCK"] + 1,)  # noqa: E731
    for _ in range(3):
        launch_mod.launch(fn, grid, (x, 7), {"FLAG": True}, cache)
    assert len(fn.slow) == 1 and len(fn.compiled.calls) == 2  # first call through Triton, then direct
    g0, g1, g2, stream, handle, packed, md, *rest = fn.compiled.calls[-1]
    assert (g0, g1, g2, stream, handle, packed) == (4, 1, 1, 1234, "fn-handle", "packed")
    args = rest[2:]  # after the two launch hooks: runtime args, then constexprs in signature order
    assert args[0] is x and tuple(args[1:]) == (7, True, 32)
    assert len(zeroed) == 2 and zeroed[0] is x  # the config's pre-hook (split-K zeroing) still runs
    launch_mod.launch(fn, grid, (x[1:], 7), {"FLAG": True}, cache)  # misaligned view: a new specialization
    launch_mod.launch(fn, grid, (x, 16), {"FLAG": True}, cache)  # another int value: another key
    launch_mod.launch(fn, grid, (x, 7), {"FLAG": False}, cache)  # another constexpr: another key
    assert len(fn.slow) == 4 and len(cache) == 4
    launch_mod.launch(fn, grid, (x, 7), {"FLAG": True}, None)  # no cache: Triton's path
    assert len(fn.slow) == 5


def test_direct_launch_off_takes_tritons_path(monkeypatch):
    monkeypatch.setattr(launch_mod, "FAST_LAUNCH", False)
    fn = _FakeAutotuned(triton.Config({"BLOCK": 32}))
    cache: dict = {}
    for _ in range(2):
        launch_mod.launch(fn, lambda c: (1,), (torch.zeros(4), 3), {"FLAG": True}, cache)
    assert len(fn.slow) == 2 and not fn.compiled.calls and not cache


def test_config_spaces_have_an_untuned_default_first():
    for name in ("shrink", "expand", "seg_reduce"):
        space = tk.config_space(name)
        assert len(space) >= 6, name
        assert len({str(c) for c in space}) == len(space), f"{name}: duplicate configs"
    with pytest.raises(ValueError, match="^kernel"):
        tk.config_space("nope")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("variant", VARIANTS)
def test_direct_launches_match_first_call_gpu(variant):
    """Second and third calls with the same meta take the direct path; results stay identical."""
    case = make_case([300, 0, 77, 512], [16, 3, 64, 32], 1000, 67, torch.bfloat16, device="cuda", r_max=64)
    dy = torch.randn(case.x.shape[0], 67, device="cuda", dtype=torch.bfloat16)
    kw = dict(variant=variant, streams=True, chunks=3)
    first = run(case, fused_lora_linear, dy, **kw)
    plans = [v for k, v in case.meta.launch_cache.items() if isinstance(v, launch_mod.Plan)]
    assert plans and all(p.kernel is not None for p in plans)
    for _ in range(2):
        again = run(case, fused_lora_linear, dy, **kw)
        for name, a, b in zip(("y", "dx", "dA", "dB"), again, first):
            assert_near(a, b, 1e-3, name)
    slow = run(case, fused_lora_linear, dy, fast_launch=False, **kw)
    for name, a, b in zip(("y", "dx", "dA", "dB"), slow, first):
        assert_near(a, b, 1e-3, name)
    m = case.meta  # the next step's meta sharing the plans: its first call is direct already
    n_plans = len(m.launch_cache)
    case.meta = build_meta(m.token_counts, m.slots, m.ranks, m.scales, "cuda", launch_cache=m.launch_cache)
    shared = run(case, fused_lora_linear, dy, **kw)
    for name, a, b in zip(("y", "dx", "dA", "dB"), shared, first):
        assert_near(a, b, 1e-3, name)
    assert len(case.meta.launch_cache) == n_plans  # no new specialization, so no new plan


def _every_config_matches_torch(device, dtype, counts, d_in, d_out):  # noqa: ANN001
    """Each config of the tuning spaces (sub-blocks, split-K, wide N) against plain torch."""
    ranks = [16, 3, 64, 32, 1]
    meta = build_meta(counts, [4, 0, 2, 1, 3], ranks, [0.5, 1, 2, 3, 4], device)
    t, r = sum(counts), 64
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(t, d_in, device=device, dtype=dtype, generator=g)
    A = torch.randn(5, d_in, r, device=device, dtype=dtype, generator=g) * d_in**-0.5
    B = torch.randn(5, r, d_out, device=device, dtype=dtype, generator=g) * r**-0.5
    dy = torch.randn(t, d_out, device=device, dtype=dtype, generator=g)
    mask = torch.cat([(torch.arange(r, device=device) < rk).expand(c, r) for c, rk in zip(counts, ranks)]).float()
    sl = torch.cat([torch.full((c,), s, device=device) for c, s in zip(counts, meta.slots)]).long()
    sc = torch.cat([torch.full((c,), s, device=device) for c, s in zip(counts, meta.scales)])
    want_s = torch.einsum("tk,tkr->tr", x.float(), A[sl].float()) * mask
    want_y = torch.einsum("tr,trn->tn", want_s.to(dtype).float(), B[sl].float()) * sc[:, None]
    tol = TOL[dtype] * 4
    ran = collections.Counter()

    def fits(fn) -> bool:  # noqa: ANN001  a config may need more shared memory than the GPU has (fp32)
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ != "OutOfResources":
                raise
            return False
        return True

    for cfg in tk.config_space("shrink"):
        s = torch.full((t, r), 7.0, device=device)
        if fits(lambda: tk.shrink(x, A, meta, r, False, A.stride(), out=s, config=cfg)):  # noqa: B023
            ran["shrink"] += 1
            assert_near(s, want_s, tol, f"shrink {cfg}")
    s = want_s.clone()
    for cfg in tk.config_space("expand"):
        y = torch.full((t, d_out), 7.0, device=device, dtype=dtype)
        if fits(lambda: tk.expand(s, B, meta, d_out, True, B.stride(), base=None, out=y, config=cfg)):  # noqa: B023
            ran["expand"] += 1
            assert_near(y, want_y, tol, f"expand {cfg}")
    for cfg in tk.config_space("seg_reduce"):
        da = torch.full_like(A, 3.0)
        if not fits(lambda: tk.seg_reduce(x, s, da, meta, rank_on_m=False, apply_scale=False, config=cfg)):  # noqa: B023
            continue
        ran["seg_reduce"] += 1
        for i, (lo, c) in enumerate(zip(meta.offsets, counts)):
            want = (x[lo:lo + c].float().t() @ s[lo:lo + c]).to(dtype)
            assert_near(da[meta.slots[i]], want, tol, f"seg_reduce dA {cfg} segment {i}")
        dbb = torch.zeros_like(B)
        if not fits(lambda: tk.seg_reduce(s, dy, dbb, meta, rank_on_m=True, apply_scale=True, config=cfg)):  # noqa: B023
            continue
        for i, (lo, c) in enumerate(zip(meta.offsets, counts)):
            want = (meta.scales[i] * s[lo:lo + c].t() @ dy[lo:lo + c].float()).to(dtype)
            assert_near(dbb[meta.slots[i]], want, tol, f"seg_reduce dB {cfg} segment {i}")
    # bf16 (what training uses) fits every config; fp32 may drop a few of the widest
    for name in ("shrink", "expand", "seg_reduce"):
        n_all = len(tk.config_space(name))
        assert ran[name] >= (n_all if dtype == torch.bfloat16 else n_all // 2), f"{name}: only {ran[name]} of {n_all} ran"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_config_matches_torch_cpu(dtype):
    _every_config_matches_torch("cpu", dtype, [30, 0, 7, 65, 5], 70, 40)


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_config_matches_torch_gpu(dtype):
    _every_config_matches_torch("cuda", dtype, [300, 0, 77, 512, 5], 1000, 515)


def test_autotune_pruning_keeps_tuning_small_and_valid():
    shrink, expand, reduce = (tk.config_space(k) for k in ("shrink", "expand", "seg_reduce"))
    many = tk._prune_shrink(shrink, {"ROW_BLOCKS_HINT": 1024, "K": 8192}, SCHED_M=64)
    few = tk._prune_shrink(shrink, {"ROW_BLOCKS_HINT": 32, "K": 8192}, SCHED_M=64)
    assert many and all(c.kwargs["SPLIT_K"] == 1 for c in many)  # enough row blocks: no split-K
    assert any(c.kwargs["SPLIT_K"] > 1 for c in few) and len(few) > len(many)
    assert all(c.kwargs["BLOCK_M"] <= 16 for c in tk._prune_shrink(shrink, {"ROW_BLOCKS_HINT": 8, "K": 2048}, SCHED_M=16))
    assert all(c.kwargs["BLOCK_N"] <= 64 for c in tk._prune_expand(expand, {"N": 40}, SCHED_M=64))
    assert len(tk._prune_expand(expand, {"N": 8192}, SCHED_M=64)) == len(expand)
    # dA: N is the rank (one FULL block): configs that differ only in BLOCK_N collapse
    da = tk._prune_reduce(reduce, {"M": 2048, "N": 64}, FULL_M=0, FULL_N=64)
    sigs = [(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_M"], c.num_warps, c.num_stages) for c in da]
    assert da and len(set(sigs)) == len(sigs) < len(reduce)
    assert all(c.kwargs["BLOCK_N"] <= 32 for c in tk._prune_reduce(reduce, {"M": 64, "N": 20}, FULL_M=64, FULL_N=0))
    assert tk._prune_reduce(reduce[:1], {"M": 8, "N": 8}, FULL_M=0, FULL_N=16)  # never empty


def test_row_counts_and_offsets_do_not_multiply_tunings_or_compiles():
    """A group's schedule-entry count changes with every padded length and every exit: it may only
    move the shrink between a few autotune buckets, and neither it nor the chunk offsets may be
    specialized by Triton (a value of 1 or a multiple of 16 would compile another kernel)."""
    buckets = {tk.row_blocks_hint(n) for n in range(0, 20000)}
    assert buckets == {4, 16, 64, 256, 1024, 4096}
    for n in range(0, 5000):
        b = tk.row_blocks_hint(n)
        assert b >= min(n, 4096) and b < max(4 * n, 16)  # covers n, and is the smallest bucket that does
        # the split-K pruning's question (>= 512 full 64-row blocks) gets the same answer as from n
        assert (b * 64 >= 512 * 64) == (n > 256)

    def unspecialized(kernel) -> set:  # noqa: ANN001  the interpreter keeps the decorator's kwargs aside
        fn = kernel.fn
        return set(getattr(fn, "do_not_specialize", None) or fn.kwargs["do_not_specialize"])

    assert unspecialized(tk._shrink_kernel) == {"ROW_BLOCKS_HINT", "entry0", "out_row0"}
    assert unspecialized(tk._expand_kernel) == {"entry0"}
