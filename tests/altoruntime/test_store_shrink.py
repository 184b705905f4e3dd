"""Per-step work follows the training adapters, not those waiting: a group that shrinks from
many slots to one trains its survivor as if it had trained alone, on stacks of one slot."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import assert_adapters_close

LR = 1e-2
JOBS = [f"j{i}" for i in range(5)]


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _trainer(base, pack):
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, park=True, cuda_graphs=False)
    tr.store.pack = pack  # the CUDA default: slots and parked adapters move as one packed tensor
    return tr


def _batches(step, jobs):
    return {j: make_batch(100 * step + int(j[1:]), 2, 9) for j in jobs}


def test_a_group_shrinking_to_one_trains_the_survivor_as_alone(base):
    """(The CUDA path: slots move packed; tests/altoruntime/test_store_park.py runs the other.)"""
    group = _trainer(base, pack=True)
    for i, j in enumerate(JOBS):
        group.admit(j, rank=4, lr=LR * (1 + i), seed=i)
    assert group.capacity == 8
    survivor = JOBS[3]
    got = [group.step(_batches(s, JOBS))[survivor] for s in range(2)]
    held = {j: group.adapter_weights(j) for j in JOBS[:2]}
    for j in JOBS[:2]:
        group.suspend(j)  # parked: off the stacks, on the device
    group.suspend(JOBS[2], keep_optimizer=False)  # stopped: to the host
    group.drop(JOBS[4])
    assert group.active == [survivor] and group.capacity == 1
    for s in range(2, 4):
        got.append(group.step(_batches(s, [survivor]))[survivor])
    assert all(p.grad.shape[0] == 1 for p in group.store.optim.params)  # the per-step passes cover one slot

    alone = _trainer(base, pack=True)
    alone.admit(survivor, rank=4, lr=LR * 4, seed=3)
    want = [alone.step(_batches(s, [survivor]))[survivor] for s in range(4)]
    assert got == pytest.approx(want, rel=1e-6)
    for (n1, a1, b1), (n2, a2, b2) in zip(group.adapter_weights(survivor), alone.adapter_weights(survivor)):
        assert n1 == n2
        torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b1, b2, rtol=1e-5, atol=1e-6)
    assert group.step_count(survivor) == alone.step_count(survivor) == 4

    # a parked adapter comes back exactly as it was (weights, moments, step count) and grows the stacks
    group.resume(JOBS[1])
    assert group.capacity == 2 and group.step_count(JOBS[1]) == 2
    for (_, a1, b1), (_, a2, b2) in zip(held[JOBS[1]], group.adapter_weights(JOBS[1])):
        assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_parking_moves_only_the_rank_block_and_keeps_moments(base):
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, park=True, cuda_graphs=False, shrink_rank=False)
    tr.store.pack = True
    tr.admit("a", rank=2, lr=LR, seed=1)
    tr.admit("b", rank=8, lr=LR, seed=2)
    tr.step({"a": make_batch(1, 2, 9), "b": make_batch(2, 2, 9)})
    slot = tr.store.adapters["a"].slot
    moments = [t[slot].clone() for t in tr.store.optim.exp_avg + tr.store.optim.exp_avg_sq]
    tr.suspend("a")
    parked = tr.store.adapters["a"].parked
    n_weights = sum(2 * (l.in_features + l.out_features) for l in tr.store.layers)  # rank 2
    assert parked["weights"].numel() == n_weights and tr.r_max == 8
    tr.suspend("b")
    tr.resume("a")
    slot = tr.store.adapters["a"].slot
    for before, t in zip(moments, tr.store.optim.exp_avg + tr.store.optim.exp_avg_sq):
        assert torch.equal(before, t[slot])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shrinking_group_with_captured_steps_equals_eager_on_cuda(base):
    """On CUDA (parking and packed moves by default): captured steps across the shrinks and a
    resume equal eager ones."""
    runs = []
    for graphs in (False, True):
        tr = MultiAdapterTrainer(copy.deepcopy(base).cuda(), capacity=1, cuda_graphs=graphs)
        for i, j in enumerate(JOBS):
            tr.admit(j, rank=4, lr=LR, seed=i)
        losses = [tr.step(_batches(s, JOBS)) for s in range(3)]
        for j in JOBS[:3]:
            tr.suspend(j)
        tr.drop(JOBS[4])
        assert tr.capacity == 1 and tr.store.parked == JOBS[:3]
        losses += [tr.step(_batches(s, [JOBS[3]])) for s in range(3, 6)]
        tr.resume(JOBS[1])
        losses += [tr.step(_batches(s, [JOBS[1], JOBS[3]])) for s in range(6, 9)]
        if graphs:
            assert tr.graphs.disabled is None and tr.graphs.stats["replayed"] > 0, dict(tr.graphs.stats)
        runs.append((losses, {j: tr.adapter_weights(j) for j in (JOBS[1], JOBS[3])}))
    (want, w_want), (got, w_got) = runs
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    assert_adapters_close(w_want, w_got, rtol=1e-3, atol=1e-5)
