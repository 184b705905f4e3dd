import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altokernels import build_meta


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=64))
def test_schedule_covers_each_row_once(counts):
    z = len(counts)
    meta = build_meta(counts, list(range(z)), [1] * z, [1.0] * z, "cpu")
    covered = torch.zeros(meta.total_tokens, dtype=torch.int64)
    for seg, r0 in zip(meta.sched_seg.tolist(), meta.sched_row.tolist()):
        lo, hi = meta.offsets[seg], meta.offsets[seg + 1]
        assert lo <= r0 < hi
        covered[r0 : min(r0 + meta.block_m, hi)] += 1
    assert bool((covered == 1).all())
    assert meta.seg_start.tolist() == list(meta.offsets[:-1])
    assert meta.seg_end.tolist() == list(meta.offsets[1:])
    assert meta.equal_counts == (len(set(counts)) == 1 and counts[0] > 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=20), st.integers(1, 8))
def test_chunks_partition_entries_and_rows(counts, n):
    z = len(counts)
    meta = build_meta(counts, list(range(z)), [1] * z, [1.0] * z, "cpu")
    chunks = meta.chunks(n)
    assert len(chunks) <= n
    if meta.num_blocks == 0:
        assert chunks == []
        return
    assert chunks[0][0] == 0 and chunks[0][2] == 0
    assert chunks[-1][1] == meta.num_blocks and chunks[-1][3] == meta.total_tokens
    for (a0, a1, r0, r1), (b0, _, s0, _) in zip(chunks, chunks[1:]):
        assert a1 == b0 and r1 == s0 and a1 > a0 and r1 > r0
    for e0, _, r0, _ in chunks:
        assert meta.sched_row[e0].item() == r0


def test_row_dropout_per_segment():
    meta = build_meta([2, 0, 3], [0, 1, 2], [1, 1, 1], [1.0] * 3, "cpu", dropout=[0.1, 0.2, 0.0])
    assert meta.row_dropout.tolist() == pytest.approx([0.1, 0.1, 0.0, 0.0, 0.0])
    assert build_meta([2], [0], [1], [1.0], "cpu", dropout=[0.0]).row_dropout is None


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(token_counts=[]), "token_counts"),
        (dict(token_counts=[1, -1]), "token_counts"),
        (dict(slots=[0]), "slots"),
        (dict(slots=[1, 1]), "slots"),
        (dict(slots=[-1, 0]), "slots"),
        (dict(ranks=[0, 2]), "ranks"),
        (dict(scales=[1.0, float("nan")]), "scales"),
        (dict(dropout=[0.0, 1.0]), "dropout"),
        (dict(dropout=[0.0]), "dropout"),
    ],
)
def test_bad_meta_names_argument(kwargs, name):
    args = dict(token_counts=[1, 2], slots=[0, 1], ranks=[1, 2], scales=[1.0, 1.0], device="cpu")
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name}"):
        build_meta(**args)


def test_launch_cache_shared_across_steps_but_step_data_not():
    shared: dict = {}
    m1 = build_meta([100, 30], [0, 1], [4, 8], [1.0, 2.0], "cpu", launch_cache=shared)
    m2 = build_meta([10, 200, 7], [2, 0, 1], [4, 8, 2], [1.0, 2.0, 3.0], "cpu", launch_cache=shared)
    assert m1.launch_cache is shared and m2.launch_cache is shared
    assert m1.step_cache is not m2.step_cache
    assert m1.chunks(2) != m2.chunks(2)  # chunk tables stay per meta
    assert m2.chunks(2)[-1][3] == 217 and m1.chunks(2)[-1][3] == 130
    assert build_meta([5], [0], [1], [1.0], "cpu").launch_cache is not build_meta([5], [0], [1], [1.0], "cpu").launch_cache


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=64))
def test_every_table_starts_16_byte_aligned_whatever_the_counts(counts):
    """Triton specializes a pointer on its 16-byte alignment: the tables (views into one buffer)
    must not move off it with the segment or schedule-entry count, or each new group size and
    each entry count mod 4 compiles every kernel again."""
    z = len(counts)
    meta = build_meta(counts, list(range(z)), [(1, 8, 16)[i % 3] for i in range(z)], [1.0] * z, "cpu")
    tables = (meta.seg_start, meta.seg_end, meta.seg_slot, meta.seg_rank, meta.sched_seg, meta.sched_row)
    assert all(t.storage_offset() * t.element_size() % 16 == 0 for t in tables)
    assert len(meta.sched_seg) == len(meta.sched_row) == meta.num_blocks
    assert meta.seg_slot.tolist() == list(range(z)) and meta.seg_rank.tolist() == [(1, 8, 16)[i % 3] for i in range(z)]
