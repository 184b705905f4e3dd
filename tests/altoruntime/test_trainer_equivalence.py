"""The fused multi-adapter step equals each adapter trained alone with PEFT + torch AdamW."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import PeftReference, assert_matches, make_batch

# (job, rank, alpha, lr, weight decay, batch size, seq len, seed)
JOBS = [
    ("a", 4, 8.0, 5e-3, 0.01, 2, 12, 1),
    ("b", 8, 16.0, 1e-2, 0.0, 1, 9, 2),
    ("c", 2, 2.0, 2e-3, 0.1, 3, 12, 3),
]
STEPS = 3


def _batches(step: int):
    return {j: make_batch(100 * step + i, b, L) for i, (j, _, _, _, _, b, L, _) in enumerate(JOBS)}


@pytest.fixture(scope="module")
def runs():
    base = tiny_llama(seed=0)
    refs = {j: PeftReference(base, r, a, lr, wd, seed) for j, r, a, lr, wd, _, _, seed in JOBS}
    trainer = MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    for j, r, a, lr, wd, _, _, seed in JOBS:
        trainer.admit(j, rank=r, alpha=a, lr=lr, weight_decay=wd, seed=seed)
    fused, alone = [], []
    for s in range(STEPS):
        batches = _batches(s)
        fused.append(trainer.step(batches))
        alone.append({j: refs[j].step(batches[j]) for j in refs})
    return trainer, refs, fused, alone


def test_initial_adapter_equals_peft_init_of_same_seed():
    base = tiny_llama(seed=0)
    ref = PeftReference(base, 4, 8.0, 1e-3, seed=11)
    trainer = MultiAdapterTrainer(copy.deepcopy(base))
    trainer.admit("x", rank=4, seed=11)
    w = ref.weights()
    for name, a, b in trainer.adapter_weights("x"):
        assert torch.equal(a, w[name][0]) and torch.equal(b, w[name][1])


def test_losses_match_peft_alone(runs):
    _, _, fused, alone = runs
    for s in range(STEPS):
        for j in alone[s]:
            assert fused[s][j] == pytest.approx(alone[s][j], rel=1e-5, abs=1e-6), (s, j)
    assert fused[-1]["a"] != pytest.approx(fused[0]["a"], rel=1e-7)  # training moved the loss


def test_updated_weights_match_peft_alone(runs):
    trainer, refs, _, _ = runs
    lrs = {j: lr for j, _, _, lr, *_ in JOBS}
    for j, ref in refs.items():
        w = ref.weights()
        moved = 0.0
        assert_matches(trainer, j, ref, lrs[j])
        for name, a, b in trainer.adapter_weights(j):
            moved += float(b.abs().sum())
        assert moved > 0  # B left its zero init, so the comparison is not vacuous


def test_capacity_grew_by_doubling(runs):
    trainer, _, _, _ = runs
    assert trainer.capacity == 4 and trainer.r_max == 8
    assert all(trainer.step_count(j) == STEPS for j, *_ in JOBS)
