"""The torch paths against first principles: each adapter alone on its slice (PEFT's oracle)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altokernels import grouped_lora_linear, loop_lora_linear
from tests.altokernels.helpers import TOL, assert_near, make_case, run


def _alone(case, i):
    m = case.meta
    lo, hi = m.offsets[i], m.offsets[i + 1]
    s, r = m.slots[i], m.ranks[i]
    x = case.x[lo:hi]
    base = torch.nn.functional.linear(x, case.weight, case.bias)
    return base + m.scales[i] * (x @ case.A[s, :, :r]) @ case.B[s, :r, :]


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(0, 20), min_size=1, max_size=12),
    r_max=st.integers(1, 24),
    data=st.data(),
)
def test_loop_matches_each_adapter_alone(counts, r_max, data):
    ranks = [data.draw(st.integers(1, r_max)) for _ in counts]
    case = make_case(counts, ranks, 7, 5, torch.float64, r_max=r_max)
    y = loop_lora_linear(case.x, case.weight, case.bias, case.A, case.B, case.meta)
    want = torch.cat([_alone(case, i) for i in range(len(counts))])
    assert_near(y, want, 1e-12, "y")


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(0, 20), min_size=1, max_size=12),
    equal=st.booleans(),
    data=st.data(),
)
def test_grouped_matches_loop(counts, equal, data):
    if equal:
        counts = [max(counts[0], 1)] * len(counts)
    ranks = [data.draw(st.integers(1, 16)) for _ in counts]
    case = make_case(counts, ranks, 9, 11, torch.float32, r_max=16)
    dy = torch.randn(sum(counts), 11)
    want = run(case, loop_lora_linear, dy)
    got = run(case, grouped_lora_linear, dy)
    for name, g, w in zip(("y", "dx", "dA", "dB"), got, want):
        assert_near(g, w, TOL[torch.float32], name)


def test_masked_rank_and_unused_slots_get_zero_grad():
    case = make_case([4, 3], [2, 5], 6, 4, torch.float32, extra_slots=2, r_max=8)
    _, _, ga, gb = run(case, loop_lora_linear, torch.randn(7, 4))
    m = case.meta
    used = set(m.slots)
    for s in range(case.A.shape[0]):
        if s not in used:
            assert ga[s].abs().max() == 0 and gb[s].abs().max() == 0
    for s, r in zip(m.slots, m.ranks):
        assert ga[s, :, r:].abs().max() == 0 and gb[s, r:, :].abs().max() == 0
        assert ga[s, :, :r].abs().max() > 0 and gb[s, :r, :].abs().max() > 0
