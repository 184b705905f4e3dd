"""The fast paths equal the slow ones: fused SlotAdamW step == loop step, one-copy snapshots and
suspend/resume round-trip exactly, the batched finite check flags exactly the bad slot."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from altoruntime.backbone import tiny_llama
from altoruntime.lora_layer import peft_init
from altoruntime.optim import SlotAdamW
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch

D_IN, D_OUT = 5, 7


def _stacks(cap: int, r_max: int, ranks: dict[int, int], g: torch.Generator) -> list[nn.Parameter]:
    """LoRA-like stacks A [S, d_in, r_max], B [S, r_max, d_out], zero beyond each slot's rank."""
    a, b = torch.zeros(cap, D_IN, r_max), torch.zeros(cap, r_max, D_OUT)
    for s, r in ranks.items():
        a[s, :, :r] = torch.randn(D_IN, r, generator=g)
        b[s, :r, :] = torch.randn(r, D_OUT, generator=g)
    return [nn.Parameter(a), nn.Parameter(b)]


def _grads(params, ranks: dict[int, int], g: torch.Generator) -> list[torch.Tensor]:
    out = []
    for p, rank_dim in zip(params, (2, 1)):
        grad = torch.randn(p.shape, generator=g)
        for s in range(p.shape[0]):
            grad[s].narrow(rank_dim - 1, ranks.get(s, 0), p.shape[rank_dim] - ranks.get(s, 0)).zero_()
        out.append(grad)
    return out


def _grow(params, cap: int, r_max: int) -> None:
    for p, shape in zip(params, ((cap, D_IN, r_max), (cap, r_max, D_OUT))):
        new = torch.zeros(shape)
        new[tuple(slice(0, n) for n in p.shape)] = p.data
        p.data, p.grad = new, None


def _shrink(params, order: list[int], cap: int, r_max: int) -> None:
    for p, shape in zip(params, ((cap, D_IN, r_max), (cap, r_max, D_OUT))):
        new = torch.zeros(shape)
        kept = p.data[order]
        new[: len(order)] = kept[tuple(slice(0, n) for n in (len(order), *shape[1:]))]
        p.data, p.grad = new, None


@pytest.mark.parametrize("inplace_grads", [False, True])
def test_fused_step_equals_loop_step_with_ranks_lrs_skips_resize_and_compact(inplace_grads):
    g = torch.Generator().manual_seed(0)
    ranks = {0: 2, 1: 4, 2: 1}
    hypers = {0: (1e-2, 0.01, (0.9, 0.999)), 1: (3e-3, 0.0, (0.9, 0.999)), 2: (1e-2, 0.01, (0.5, 0.95))}
    fused = _stacks(3, 4, ranks, g)
    loop = [nn.Parameter(p.data.clone()) for p in fused]
    opts = {"fused": SlotAdamW(fused), "loop": SlotAdamW(loop, impl="loop")}
    for opt in opts.values():
        for s, (lr, wd, betas) in hypers.items():
            opt.init_slot(s, lr, wd, betas)

    def step(slots, ranks):
        grads = _grads(fused, ranks, g)
        for ps, opt in ((fused, opts["fused"]), (loop, opts["loop"])):
            opt.zero_grad()
            for p, gr in zip(ps, grads):
                if inplace_grads and p.grad is not None:  # the trainer's way: cached grad views stay valid
                    p.grad.add_(gr)
                else:
                    p.grad = gr.clone()
            opt.step(slots)

    def check(ranks):
        for pf, pl, rank_dim in zip(fused, loop, (2, 1)):
            torch.testing.assert_close(pf.data, pl.data, rtol=1e-6, atol=1e-7)
            for s in range(pf.shape[0]):
                r = ranks.get(s, 0)
                assert float(pf.data[s].narrow(rank_dim - 1, r, pf.shape[rank_dim] - r).abs().sum()) == 0.0
        for key in ("exp_avg", "exp_avg_sq"):
            for tf, tl in zip(getattr(opts["fused"], key), getattr(opts["loop"], key)):
                torch.testing.assert_close(tf, tl, rtol=1e-6, atol=1e-9)
        assert torch.equal(opts["fused"].hyper["step"], opts["loop"].hyper["step"])

    step([0, 1, 2], ranks)
    step([0, 2], ranks)  # slot 1 failed this step: untouched
    step([0, 1, 2], ranks)
    check(ranks)
    assert opts["fused"].step_count(1) == 2 and opts["fused"].step_count(0) == 3
    # grow: capacity 3 -> 6, r_max 4 -> 8, and a new slot 4 of rank 8
    for ps, opt in ((fused, opts["fused"]), (loop, opts["loop"])):
        _grow(ps, 6, 8)
        opt.resize()
        opt.init_slot(4, 5e-3, 0.1)
    ranks[4] = 8
    step([0, 1, 2, 4], ranks)
    step([1, 4], ranks)
    check(ranks)
    # compact: keep slots 4, 1 as 0, 1 of capacity 2
    for ps, opt in ((fused, opts["fused"]), (loop, opts["loop"])):
        _shrink(ps, [4, 1], 2, 8)
        opt.compact([4, 1])
    ranks = {0: 8, 1: 4}
    step([0, 1], ranks)
    step([1], ranks)
    check(ranks)
    assert opts["fused"].step_count(0) == 3 and opts["fused"].step_count(1) == 6


def test_fused_step_matches_torch_adamw_on_one_adapter():
    g = torch.Generator().manual_seed(1)
    p = nn.Parameter(torch.randn(2, 3, 4, generator=g))
    q = nn.Parameter(p.data[1].clone())
    opt, ref = SlotAdamW([p]), torch.optim.AdamW([q], lr=2e-2, weight_decay=0.05, fused=False)
    opt.init_slot(1, 2e-2, 0.05)
    for _ in range(5):
        grad = torch.randn(2, 3, 4, generator=g)
        p.grad, q.grad = grad.clone(), grad[1].clone()
        opt.step([1])
        ref.step()
    torch.testing.assert_close(p.data[1], q.data, rtol=1e-6, atol=1e-7)
    assert opt.step_count(1) == 5 and opt.step_count(0) == 0


@pytest.mark.parametrize("pack", [False, True])
def test_slot_state_rank_trimmed_round_trip(pack):
    p = nn.Parameter(torch.zeros(2, 3, 4))
    opt = SlotAdamW([p], rank_dims=[1])
    opt.pack = pack  # the packed one-copy path runs off the CPU; force it here
    opt.init_slot(0, 1e-2)
    grad = torch.zeros(2, 3, 4)
    grad[0, :, :2] = torch.arange(6.0).view(3, 2) + 1
    p.grad = grad
    opt.step([0])
    full, trimmed = opt.slot_state(0), opt.slot_state(0, rank=2)
    assert full["exp_avg"][0].shape == (3, 4) and trimmed["exp_avg"][0].shape == (3, 2)
    for state in (full, trimmed):
        opt.load_slot_state(1, state)
        assert torch.equal(opt.exp_avg[0][1], opt.exp_avg[0][0])
        assert torch.equal(opt.exp_avg_sq[0][1], opt.exp_avg_sq[0][0])
        assert opt.step_count(1) == 1
    with pytest.raises(ValueError, match="impl"):
        SlotAdamW([p], impl="nope")


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "packed"])
def trained(request):
    tr = MultiAdapterTrainer(copy.deepcopy(tiny_llama(seed=0)), capacity=2)
    tr.store.pack = request.param  # the packed one-copy path runs off the CPU; force it here
    tr.admit("a", rank=4, lr=1e-2, seed=1)
    tr.admit("b", rank=2, lr=5e-3, seed=2)
    tr.admit("c", rank=8, lr=1e-2, seed=3)
    for s in range(2):
        tr.step({j: make_batch(10 * s + i, 2, 9) for i, j in enumerate("abc")})
    return tr


def _slow_read(tr, job_id):
    job = tr.store.adapters[job_id]
    return [l.get_slot(job.slot, job.cfg.rank) for l in tr.store.layers]


def test_read_equals_per_layer_copies_and_owns_its_memory(trained):
    for j in "abc":
        fast, slow = trained.store.weights(j), _slow_read(trained, j)
        assert len(fast) == len(slow) == len(trained.store.layers)
        for (a, b), (a0, b0) in zip(fast, slow):
            assert torch.equal(a, a0) and torch.equal(b, b0)
            assert a.is_contiguous() and b.is_contiguous()
            assert a.untyped_storage().nbytes() == a.numel() * a.element_size()  # not a view of a shared buffer


def test_snapshot_suspend_resume_round_trip_exact(trained):
    tr = copy.deepcopy(trained)
    before = {j: _slow_read(tr, j) for j in "abc"}
    slot_a = tr.store.adapters["a"].slot
    opt_before = [(m[slot_a].clone(), v[slot_a].clone()) for m, v in zip(tr.store.optim.exp_avg, tr.store.optim.exp_avg_sq)]
    tr.snapshot_best("a")
    tr.suspend("a")
    tr.suspend("b")
    tr.resume("b")
    tr.resume("a")
    for j in "abc":
        for (a, b), (a0, b0) in zip(_slow_read(tr, j), before[j]):
            assert torch.equal(a, a0) and torch.equal(b, b0)
    slot = tr.store.adapters["a"].slot
    for (m, v), (m0, v0) in zip(zip(tr.store.optim.exp_avg, tr.store.optim.exp_avg_sq), opt_before):
        k = tuple(slice(0, n) for n in m0.shape)
        assert torch.equal(m[slot][k], m0[k]) and torch.equal(v[slot][k], v0[k])
    assert tr.step_count("a") == 2
    tr.step({"a": make_batch(99, 2, 9)})
    assert not all(torch.equal(a, a0) for (a, _), (a0, _) in zip(_slow_read(tr, "a"), before["a"]))
    tr.restore_best("a")
    for (a, b), (a0, b0) in zip(_slow_read(tr, "a"), before["a"]):
        assert torch.equal(a, a0) and torch.equal(b, b0)
    # padding beyond each rank stays exactly zero after the writes
    for l in tr.store.layers:
        for j in "abc":
            s, r = tr.store.adapters[j].slot, tr.store.adapters[j].cfg.rank
            assert float(l.A.detach()[s, :, r:].abs().sum()) == 0.0 and float(l.B.detach()[s, r:, :].abs().sum()) == 0.0


@pytest.mark.parametrize("chunk", [1 << 22, 100])  # one chunk; many (a chunk per stack or two)
def test_grad_finite_flags_exactly_the_bad_slot(trained, monkeypatch, chunk):
    import altoruntime.adapters.grad_check as grad_check_mod

    monkeypatch.setattr(grad_check_mod, "GRAD_CHECK_CHUNK", chunk)
    tr = copy.deepcopy(trained)
    g = torch.Generator().manual_seed(5)
    for p in tr.store.optim.params:
        p.grad = torch.randn(p.shape, generator=g) * 1e30  # large but finite: no overflow
    slots = [tr.store.adapters[j].slot for j in "abc"]
    assert tr.store.grad_check.finite(slots) == [True, True, True]
    tr.store.optim.params[7].grad[slots[1], 0, 0] = float("inf")  # in place: the cached views see it
    assert tr.store.grad_check.finite(slots) == [True, False, True]
    tr.store.optim.params[-1].grad[slots[2], 1, 0] = float("nan")
    assert tr.store.grad_check.finite(slots) == [True, False, False]
    assert tr.store.grad_check.finite([slots[0]]) == [True]
    tr.store.optim.params[7].grad = torch.zeros_like(tr.store.optim.params[7].grad)  # a new tensor: views rebuilt
    assert tr.store.grad_check.finite(slots) == [True, True, False]
    n_chunks = tr.store.grad_check.chunk_count
    assert (n_chunks == 1) == (chunk > 1000) and n_chunks <= len(tr.store.optim.params)


@pytest.mark.parametrize("pack", [False, True])
def test_admit_shares_init_per_rank_and_seed_and_equals_peft_init(pack):
    tr = MultiAdapterTrainer(copy.deepcopy(tiny_llama(seed=0)), capacity=2)
    tr.store.pack = pack
    tr.admit("x", rank=4, seed=7)
    tr.admit("y", rank=4, seed=7, lr=1e-3)
    ref = peft_init(tr.store.layers, 4, 7)
    for (_, a, b), (_, a2, b2), (a0, b0) in zip(tr.adapter_weights("x"), tr.adapter_weights("y"), ref):
        assert torch.equal(a, a0) and torch.equal(b, b0) and torch.equal(a2, a0) and torch.equal(b2, b0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fused_trainer_equals_loop_and_round_trips():
    def make(impl):
        tr = MultiAdapterTrainer(tiny_llama(seed=0).cuda(), capacity=2)
        tr.store.optim.impl = impl
        for j, r, lr, seed in (("a", 4, 1e-2, 1), ("b", 2, 5e-3, 2), ("c", 8, 1e-2, 3)):
            tr.admit(j, rank=r, lr=lr, seed=seed)
        return tr

    fused, loop = make("fused"), make("loop")
    for s in range(3):
        batches = {j: make_batch(10 * s + i, 2, 9) for i, j in enumerate("abc")}
        lf, ll = fused.step(batches), loop.step(batches)
        for j in "abc":
            assert lf[j] == pytest.approx(ll[j], rel=1e-4)
    for j in "abc":
        for (_, a, b), (_, a0, b0) in zip(fused.adapter_weights(j), loop.adapter_weights(j)):
            torch.testing.assert_close(a, a0, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b, b0, rtol=1e-4, atol=1e-6)
    before = fused.adapter_weights("a")
    fused.snapshot_best("a")
    fused.suspend("a")
    fused.resume("a")
    for (_, a, b), (_, a0, b0) in zip(fused.adapter_weights("a"), before):
        assert torch.equal(a, a0) and torch.equal(b, b0)
    slots = [fused.store.adapters[j].slot for j in "abc"]
    for p in fused.store.optim.params:
        p.grad = torch.zeros_like(p)
    fused.store.optim.params[3].grad[slots[2], 0, 0] = float("inf")
    assert fused.store.grad_check.finite(slots) == [True, True, False]


def test_best_snapshot_stays_packed_on_device_and_reads_back_exact(trained):
    tr = copy.deepcopy(trained)
    before = _slow_read(tr, "b")
    tr.snapshot_best("b")
    snap = tr.store.adapters["b"].best
    if tr.store.pack:  # the GPU path: one packed tensor on the device, no host copy
        assert isinstance(snap, torch.Tensor) and snap.device == tr.device and snap.dim() == 1
    else:
        assert isinstance(snap, list)
    tr.step({"b": make_batch(7, 2, 9)})  # the snapshot does not alias the live slot
    for (a, b), (a0, b0) in zip(tr.best_weights("b"), before):
        assert torch.equal(a, a0) and torch.equal(b, b0)
    state = tr.state_dict()["jobs"]["b"]["best"]  # checkpoints hold PEFT-layout CPU pairs
    assert isinstance(state, list) and all(a.device.type == "cpu" for a, _ in state)
    assert tr.best_weights("a") is None
