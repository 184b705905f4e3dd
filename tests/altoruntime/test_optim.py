"""SlotAdamW == torch.optim.AdamW per slot, with per-slot hyperparameters and partial steps."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from altoruntime.optim import SlotAdamW


@settings(max_examples=25, deadline=None)
@given(
    cfgs=st.lists(st.tuples(st.sampled_from([1e-4, 1e-3, 1e-2, 0.3]), st.sampled_from([0.0, 0.01, 0.1]),
                            st.sampled_from([0.9, 0.5]), st.sampled_from([0.999, 0.95])), min_size=1, max_size=4),
    steps=st.lists(st.integers(0, 15), min_size=1, max_size=6),
    seed=st.integers(0, 1000),
)
def test_matches_torch_adamw_per_slot(cfgs, steps, seed):
    g = torch.Generator().manual_seed(seed)
    s = len(cfgs)
    p = nn.Parameter(torch.randn(s, 3, 2, generator=g))
    opt = SlotAdamW([p])
    refs = []
    for i, (lr, wd, b1, b2) in enumerate(cfgs):
        opt.init_slot(i, lr, wd, (b1, b2))
        q = nn.Parameter(p.data[i].clone())
        refs.append((q, torch.optim.AdamW([q], lr=lr, weight_decay=wd, betas=(b1, b2))))
    for mask in steps:  # bit i of mask: slot i takes part in this step
        slots = [i for i in range(s) if mask >> i & 1]
        grad = torch.randn(s, 3, 2, generator=g)
        p.grad = grad.clone()
        opt.step(slots)
        for i in slots:
            refs[i][0].grad = grad[i].clone()
            refs[i][1].step()
    for i, (q, o) in enumerate(refs):
        torch.testing.assert_close(p.data[i], q.data, rtol=1e-6, atol=1e-7)
        assert opt.step_count(i) == int(o.state[q]["step"]) if q in o.state else opt.step_count(i) == 0


def test_resize_and_slot_state_round_trip():
    p = nn.Parameter(torch.ones(1, 2, 2))
    opt = SlotAdamW([p])
    opt.init_slot(0, 1e-2)
    p.grad = torch.ones(1, 2, 2)
    opt.step([0])
    saved = opt.slot_state(0)
    p.data = torch.zeros(2, 2, 3)
    p.grad = None
    opt.resize()
    assert opt.exp_avg[0].shape == (2, 2, 3) and opt.hyper["lr"].shape == (2,)
    opt.load_slot_state(1, saved)
    assert torch.equal(opt.exp_avg[0][1, :, :2], saved["exp_avg"][0]) and opt.step_count(1) == 1
    assert float(opt.exp_avg[0][1, :, 2].abs().sum()) == 0.0
    opt.free_slot(1)
    assert opt.step_count(1) == 0 and float(opt.exp_avg_sq[0][1].abs().sum()) == 0.0
