"""Packing a fused step into fixed shapes: buckets, the gather index and the loss weights."""

from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st

from altoruntime.batching import IGNORE
from altoruntime.step_inputs import BUCKET_STEPS, bucket, pack_step
from tests.altoruntime._batches import make_batch


@given(st.integers(1, 1 << 20), st.sampled_from([1, 16, 64]))
def test_bucket_pads_little_and_never_shrinks(n, floor):
    b = bucket(n, floor)
    assert n <= b
    assert b - n < max(floor, (1 << (n - 1).bit_length()) // BUCKET_STEPS)
    assert b <= max(n + floor, n * (1 + 2 / BUCKET_STEPS))


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_bucket_is_monotone_and_capped(a, cap):
    lo, hi = sorted((a, a + 7))
    assert bucket(lo, 16) <= bucket(hi, 16)
    assert bucket(a, 16, cap) == (max(a, min(bucket(a, 16), cap)))


def test_few_buckets_cover_a_range():
    assert len({bucket(n, 16) for n in range(2, 513)}) <= 24


def _batches(seed, shapes):
    return {f"j{i}": make_batch(seed + i, b, length) for i, (b, length) in enumerate(shapes)}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(2, 30)), min_size=1, max_size=4), st.integers(0, 99),
       st.booleans())
def test_gather_names_exactly_the_labelled_positions(shapes, seed, mean):
    batches = _batches(seed, shapes)
    inp = pack_step(batches, pad_token_id=0, mean=mean)
    assert inp.rows == tuple(b for b, _ in shapes)
    assert inp.length >= max(length for _, length in shapes) and inp.labels >= sum(inp.counts)
    live = inp.weight > 0
    assert int(live.sum()) == sum(inp.counts)
    # rebuild (row, position, target) from the gather index and compare with the labels
    got = sorted(zip((inp.gather[live] // inp.length).tolist(), (inp.gather[live] % inp.length).tolist(),
                     inp.target[live].tolist()))
    want, r0 = [], 0
    for ids, mask, labels in batches.values():
        for r in range(ids.shape[0]):
            for c in range(ids.shape[1] - 1):
                if labels[r, c + 1] != IGNORE:
                    want.append((r0 + r, c, int(labels[r, c + 1])))
        r0 += ids.shape[0]
    assert got == sorted(want)
    per_job = torch.zeros(len(shapes), dtype=torch.float64).index_add_(0, inp.segment[live], inp.weight[live].double())
    expect = torch.ones(len(shapes)) if mean else torch.tensor(inp.counts, dtype=torch.float64)
    torch.testing.assert_close(per_job, expect.double())
    assert inp.causal_only  # make_batch right-pads


def test_a_mask_with_a_hole_is_not_causal_only():
    ids, mask, labels = make_batch(1, 2, 12)
    mask = mask.clone()
    mask[0, 3] = 0
    assert not pack_step({"a": (ids, mask, labels)}, 0, mean=True).causal_only


def test_exact_sizes_when_not_bucketed():
    batches = _batches(3, [(2, 13), (1, 9)])
    inp = pack_step(batches, 0, mean=True, bucketed=False)
    assert inp.length == 13 and inp.labels == sum(inp.counts)
