"""Length-grouped batches: the same rows per epoch, seeded and resumable, with less padding."""

from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st

from altoruntime.data.tokenize import LENGTH_GROUP_BATCHES, TokenizedSplit
from altoruntime.task_data import SplitData
from altosim.policy.types import JobSpec


def split_of(lengths: list[int]) -> TokenizedSplit:
    n, width = len(lengths), max(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = (torch.arange(n)[:, None] + 3) * mask  # row i holds token i + 3 (padding 0)
    labels = ids.masked_fill(mask == 0, -100)
    return TokenizedSplit(ids, mask, labels, torch.tensor(lengths), torch.ones(n, dtype=torch.long), 0)


def padding(batches) -> int:
    return sum(int((b.attention_mask == 0).sum()) for b in batches)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(2, 40), min_size=2, max_size=120), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_grouped_stream_keeps_each_epochs_rows_and_sorts_runs(lengths, batch, seed):
    ts = split_of(lengths)
    n, group = len(lengths), LENGTH_GROUP_BATCHES * batch
    order = ts.order(0, seed, group)
    assert sorted(order) == list(range(n)) and order != [] and ts.order(0, seed, group) == order
    assert sorted(order[:group]) == sorted(ts.order(0, seed)[:group])  # the same rows, reordered in their run
    for s in range(0, n, group):
        run = [lengths[i] for i in order[s:s + group]]
        assert run == sorted(run, reverse=True)
    it = ts.stream(batch, seed, group_by_length=True)
    rows = [i for _ in range(-(-2 * n // batch)) for i in next(it).indices][:2 * n]
    assert rows[:n] == order and rows[n:] == ts.order(1, seed, group)
    # resuming at a batch's position continues the same stream
    again = ts.stream(batch, seed, position=batch, group_by_length=True)
    seq = [i for e in range(2 * batch // n + 2) for i in ts.order(e, seed, group)]
    assert next(again).indices == tuple(seq[batch:2 * batch])


def test_grouping_pads_less_and_leaves_rows_intact():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 60, (400,), generator=g).tolist()
    ts = split_of(lengths)
    plain, grouped = ts.stream(4, seed=1), ts.stream(4, seed=1, group_by_length=True)
    a, b = [next(plain) for _ in range(100)], [next(grouped) for _ in range(100)]
    assert padding(b) < padding(a) / 3
    for batch in b:  # each row keeps its own tokens
        for r, i in enumerate(batch.indices):
            assert torch.equal(batch.input_ids[r, :lengths[i]], torch.full((lengths[i],), i + 3))


def test_split_data_streams_grouped_when_asked():
    ts = split_of([5, 30, 2, 17, 9, 25, 3, 40] * 20)
    job = JobSpec("t/j0", "t", 1e-4, 4, batch_size=4, seed=3)
    grouped, plain = SplitData(ts, ts, group_by_length=True), SplitData(ts, ts)
    pos_g = pos_p = 0
    bg, bp = [], []
    for _ in range(20):
        b, pos_g = grouped.train_batch(job, pos_g)
        bg.append(b)
        b, pos_p = plain.train_batch(job, pos_p)
        bp.append(b)
    assert pos_g == pos_p == 80
    assert sum(int((m == 0).sum()) for _, m, _ in bg) < sum(int((m == 0).sum()) for _, m, _ in bp)
