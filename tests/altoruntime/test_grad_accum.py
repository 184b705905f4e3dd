"""Gradient accumulation: the fused trainer equals PEFT + torch accumulating the same micro-batches,
and a config's `grad_accum_steps` reaches the policy (effective batch, steps) and memory (micro-batch)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import get_linear_schedule_with_warmup

from altoruntime.backbone import tiny_llama
from altoruntime.task_runner import split_micro
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import PeftReference, assert_runs_match, make_batch

TOTAL, STEPS = 4, 2
# (job, rank, alpha, lr, weight decay, micro batch, accumulation, seq len, seed, max grad norm)
JOBS = [
    ("acc2", 4, 8.0, 5e-3, 0.01, 2, 2, 12, 1, None),
    ("acc3", 2, 4.0, 1e-2, 0.0, 1, 3, 10, 2, 0.02),
    ("plain", 8, 16.0, 2e-3, 0.1, 3, 1, 12, 3, None),
]


class Reference(PeftReference):
    """PEFT + AdamW + a linear schedule + clip_grad_norm_, accumulating k micro-batches per step."""

    def __init__(self, base, rank, alpha, lr, wd, seed, max_norm):
        super().__init__(base, rank, alpha, lr, wd, seed)
        self.max_norm = max_norm
        self.sched = get_linear_schedule_with_warmup(self.opt, 1, TOTAL)

    def accumulate(self, micro) -> float:
        self.model.train()
        total = 0.0
        for ids, mask, labels in micro:
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(micro)
            loss.backward()
            total += float(loss.detach())
        if self.max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.max_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        return total


@pytest.fixture(scope="module")
def runs():
    base = tiny_llama(seed=0)
    refs = {j[0]: Reference(base, *j[1:5], j[8], j[9]) for j in JOBS}
    trainer = MultiAdapterTrainer(copy.deepcopy(base), capacity=3)
    for j, r, a, lr, wd, _, _, _, seed, clip in JOBS:
        trainer.admit(j, rank=r, alpha=a, lr=lr, weight_decay=wd, seed=seed, lr_schedule="linear",
                      warmup_steps=1, total_steps=TOTAL, max_grad_norm=clip)
    fused, alone = [], []
    for s in range(STEPS):
        whole = {j[0]: make_batch(100 * s + i, j[5] * j[6], j[7]) for i, j in enumerate(JOBS)}
        feed = {j[0]: split_micro(whole[j[0]], j[6]) for j in JOBS}
        fused.append(trainer.step(feed))
        alone.append({j: refs[j].accumulate(feed[j] if isinstance(feed[j], list) else [feed[j]]) for j in refs})
    return trainer, refs, fused, alone


def test_accumulated_steps_match_peft_accumulating(runs):
    assert_runs_match(runs, JOBS)


def test_accumulation_is_not_one_big_batch():
    """Accumulating 2 micro-batches differs from a step on their rows at once when the micro-batches
    hold different numbers of labelled tokens (mean of means vs one mean): the test above can fail."""
    base = tiny_llama(seed=0)
    a, b = MultiAdapterTrainer(copy.deepcopy(base)), MultiAdapterTrainer(copy.deepcopy(base))
    for t in (a, b):
        t.admit("x", rank=4, lr=5e-3, seed=1)
    for s in range(2):  # (Adam's first update is about lr * sign(grad): the second one tells)
        batch = make_batch(7 + s, 4, 12)
        la = a.step({"x": batch})["x"]
        lb = b.step({"x": split_micro(batch, 2)})["x"]
        assert la != pytest.approx(lb, rel=1e-6)
    assert not torch.allclose(a.adapter_weights("x")[0][1], b.adapter_weights("x")[0][1])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(2, 9))
def test_split_micro_keeps_rows_in_order(k, m, length):
    batch = make_batch(k * 10 + m, k * m, length)
    parts = split_micro(batch, k)
    parts = parts if isinstance(parts, list) else [parts]
    assert len(parts) == k and all(p[0].shape[0] == m for p in parts)
    for i in range(3):
        assert torch.equal(torch.cat([p[i] for p in parts]), batch[i])


def test_split_micro_refuses_uneven_rows():
    with pytest.raises(ValueError, match="^grad_accum_steps:"):
        split_micro(make_batch(0, 5, 4), 2)


def test_config_accumulation_reaches_the_policy():
    from altosim.policy.intra import pick_admissions
    from altosim.policy.memory import MemoryModel
    from altosim.results import label
    from altosim.schemas import TaskRecord

    rec = TaskRecord.model_validate({
        "id": "t", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "samples_per_job": 64,
        "search_space": {"lr": [1e-4], "rank": [8], "batch_size": [2], "grad_accum_steps": [1, 4]}})
    one, four = rec.to_task_spec().jobs
    assert (one.batch_size, one.micro_batch, four.batch_size, four.micro_batch) == (2, 2, 8, 2)
    spec = rec.to_task_spec()
    assert spec.total_steps(one) == 32 and spec.total_steps(four) == 8  # optimizer steps of the effective batch
    assert label(four).endswith("b=2x4") and label(one).endswith("b=2")
    # memory holds micro-batches: room for 4 rows admits both (2 + 2), not 2 + 8
    mem = MemoryModel(k0=0.0, k1=1.0, capacity=4 * 10 / 0.9, margin=0.1)
    assert pick_admissions([], [one, four], mem, seq_len=10) == [four, one]


def test_simulated_step_of_accumulating_jobs_is_their_passes():
    """The cost model charges an accumulating job's step as its micro-batch passes (the runtime's
    schedule), so a 2x4 config costs four passes of 2 rows, not one of 8."""
    from dataclasses import replace

    from altosim.cost.model import CostModel
    from altosim.cost.specs import GPUS
    from altosim.policy.types import JobSpec, TaskSpec

    cost = CostModel(GPUS["H100"])
    acc = JobSpec("t/a", "t", 1e-4, 8, batch_size=8, grad_accum_steps=4)
    one = JobSpec("t/b", "t", 1e-4, 8, batch_size=2)
    task = TaskSpec("t", 0.0, "Llama-3.2-1B", "d", 1, (acc, one), samples_per_job=64)
    alone = replace(acc, batch_size=2, grad_accum_steps=1)
    assert cost.step_time(task, [acc]) == pytest.approx(4 * cost.step_time(task, [alone]))
    assert cost.step_time(task, [acc, one]) == pytest.approx(cost.step_time(task, [alone, one])
                                                             + 3 * cost.step_time(task, [alone]))
    assert cost.step_time(task, [acc]) > cost.step_time(task, [replace(acc, grad_accum_steps=1)])
