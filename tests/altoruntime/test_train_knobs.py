"""lr schedules with warm-up and per-adapter gradient clipping equal PEFT + torch + transformers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from altoruntime.adapters.lr_schedule import lr_factor
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import PeftReference, assert_runs_match, make_batch

TOTAL, WARMUP, STEPS = 5, 1, 3
# (job, rank, alpha, lr, weight decay, batch size, seq len, seed, schedule, warm-up, max grad norm)
JOBS = [
    ("lin", 4, 8.0, 5e-3, 0.01, 2, 12, 1, "linear", WARMUP, 0.05),
    ("cos", 8, 16.0, 1e-2, 0.0, 1, 9, 2, "cosine", WARMUP, None),
    ("clip", 2, 2.0, 2e-3, 0.1, 3, 12, 3, "constant", 0, 1e-3),
]
HF = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}


class Reference(PeftReference):
    """PEFT + torch AdamW + a transformers schedule + clip_grad_norm_, the standard loop."""

    def __init__(self, base, rank, alpha, lr, wd, seed, schedule, warmup, max_norm):
        super().__init__(base, rank, alpha, lr, wd, seed)
        self.max_norm = max_norm
        self.sched = HF[schedule](self.opt, warmup, TOTAL) if schedule in HF else None
        self.norms: list[float] = []

    def step(self, batch) -> float:
        ids, mask, labels = batch
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        if self.max_norm is not None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.norms.append(float(torch.nn.utils.clip_grad_norm_(params, self.max_norm)))
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.opt.zero_grad()
        return float(loss)


@pytest.fixture(scope="module")
def runs():
    base = tiny_llama(seed=0)
    refs = {j[0]: Reference(base, *j[1:5], j[7], *j[8:]) for j in JOBS}
    trainer = MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    for j, r, a, lr, wd, _, _, seed, sched, warm, clip in JOBS:
        trainer.admit(j, rank=r, alpha=a, lr=lr, weight_decay=wd, seed=seed, lr_schedule=sched,
                      warmup_steps=warm, total_steps=TOTAL, max_grad_norm=clip)
    fused, alone = [], []
    for s in range(STEPS):
        batches = {j[0]: make_batch(100 * s + i, j[5], j[6]) for i, j in enumerate(JOBS)}
        fused.append(trainer.step(batches))
        alone.append({j: refs[j].step(batches[j]) for j in refs})
    return trainer, refs, fused, alone


def test_losses_and_weights_match_each_adapter_alone(runs):
    assert_runs_match(runs, JOBS)


def test_clipping_was_active(runs):
    _, refs, _, _ = runs
    assert all(n > 0.05 for n in refs["lin"].norms) and all(n > 1e-3 for n in refs["clip"].norms)


def test_knobs_change_the_result():
    """Without the schedule and clip the adapters end elsewhere (the test above can fail)."""
    base = tiny_llama(seed=0)
    a, b = MultiAdapterTrainer(copy.deepcopy(base)), MultiAdapterTrainer(copy.deepcopy(base))
    a.admit("x", rank=4, lr=5e-3, seed=1)
    b.admit("x", rank=4, lr=5e-3, seed=1, lr_schedule="linear", warmup_steps=1, total_steps=3, max_grad_norm=0.01)
    for s in range(2):
        a.step({"x": make_batch(s, 2, 8)})
        b.step({"x": make_batch(s, 2, 8)})
    assert not torch.allclose(a.adapter_weights("x")[0][1], b.adapter_weights("x")[0][1])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_factor_equals_transformers(schedule):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = HF[schedule](opt, 3, 10)
    for step in range(12):
        assert lr_factor(schedule, step, 3, 10) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize("kwargs, field", [
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"lr_schedule": "cosine"}, "total_steps"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm"),
])
def test_bad_knob_names_the_field(kwargs, field):
    trainer = MultiAdapterTrainer(tiny_llama(seed=0))
    with pytest.raises(ValueError, match=f"^{field}:"):
        trainer.admit("x", rank=2, **kwargs)


def test_task_knobs_become_admit_arguments():
    from altosim.schemas import TaskRecord
    from altoruntime.task_runner import train_knobs

    base = {"id": "t", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "samples_per_job": 100,
            "search_space": {"lr": [1e-4], "rank": [8], "batch_size": [3]}}
    plain = TaskRecord.model_validate(base).to_task_spec()
    assert train_knobs(plain, plain.jobs[0]) == {}  # trainers without the knobs still admit such jobs
    spec = TaskRecord.model_validate({**base, "lr_schedule": "linear", "warmup_ratio": 0.1,
                                      "max_grad_norm": 0.5}).to_task_spec()
    assert train_knobs(spec, spec.jobs[0]) == {"lr_schedule": "linear", "warmup_steps": 4, "total_steps": 34,
                                               "max_grad_norm": 0.5}
