"""Pure parts of altoruntime.parallel: adapter placement, batch splitting/padding, backbone specs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from altoruntime.batching import IGNORE
from altoruntime.parallel import assign, rebalance, rows_per_rank, split_rows
from altoruntime.parallel.fused import block
from altoruntime.parallel.shapes import backbone_factory, parse_spec
from tests.altoruntime._batches import make_batch

sizes = st.dictionaries(st.from_regex(r"j[0-9]{1,3}", fullmatch=True), st.sampled_from([1, 2, 4, 8]),
                        min_size=0, max_size=24)


@settings(max_examples=60, deadline=None)
@given(jobs=sizes, world=st.integers(1, 8))
def test_assign_places_every_job_once_and_evens_rows(jobs, world):
    plan = assign(jobs, world)
    assert sorted(plan) == list(range(world))
    placed = [j for js in plan.values() for j in js]
    assert sorted(placed) == sorted(jobs)
    rows = rows_per_rank(plan, jobs).values()
    assert max(rows) - min(rows) <= max(jobs.values(), default=0)
    assert assign(jobs, world) == plan  # deterministic


@settings(max_examples=60, deadline=None)
@given(b=st.sampled_from([1, 2, 4]), n=st.integers(0, 20), world=st.integers(1, 8))
def test_assign_same_batch_size_is_round_robin(b, n, world):
    counts = [len(js) for js in assign({f"j{i}": b for i in range(n)}, world).values()]
    assert max(counts) - min(counts) <= 1


@settings(max_examples=60, deadline=None)
@given(jobs=sizes, world=st.integers(2, 6), data=st.data())
def test_rebalance_empties_released_ranks_and_evens_the_rest(jobs, world, data):
    ranks = list(range(world))
    start = {r: [] for r in ranks}
    for j in jobs:  # an arbitrary, unbalanced placement
        start[data.draw(st.sampled_from(ranks))].append(j)
    keep = data.draw(st.lists(st.sampled_from(ranks), min_size=1, unique=True))
    plan = {r: list(js) for r, js in start.items()}
    for j, src, dst in rebalance(start, jobs, keep):
        assert j in plan[src] and dst in keep and src != dst
        plan[src].remove(j)
        plan[dst].append(j)
    assert all(not plan[r] for r in ranks if r not in keep)
    rows = [sum(jobs[j] for j in plan[r]) for r in keep]
    assert max(rows) - min(rows) <= max(jobs.values(), default=0)
    assert sorted(j for js in plan.values() for j in js) == sorted(jobs)


def test_assign_and_rebalance_reject_bad_input():
    with pytest.raises(ValueError, match="world"):
        assign({"a": 1}, 0)
    with pytest.raises(ValueError, match="batch size"):
        assign({"a": 0}, 2)
    with pytest.raises(ValueError, match="ranks"):
        rebalance({0: ["a"]}, {"a": 1}, [3])


@pytest.mark.parametrize("n,world,pad", [(2, 2, 0), (1, 2, 1), (3, 2, 1), (3, 4, 1), (5, 4, 3)])
def test_split_rows_covers_the_batch_and_pads_with_unlabelled_rows(n, world, pad):
    batch = make_batch(0, n, 6)
    chunks = [split_rows(batch, world, r, 0) for r in range(world)]
    assert {p for _, p in chunks} == {pad}
    assert len({c[0].shape[0] for c, _ in chunks}) == 1  # every rank gets the same rows
    ids = torch.cat([c[0] for c, _ in chunks])
    labels = torch.cat([c[2] for c, _ in chunks])
    assert torch.equal(ids[:n], batch[0]) and torch.equal(labels[:n], batch[2])
    assert (labels[n:] == IGNORE).all()


def test_block_pads_to_agreed_shape_with_rows_predicting_nothing():
    b = {"a": make_batch(1, 2, 5), "b": make_batch(2, 1, 7)}
    blk = block(b, rows=5, length=9, pad_token_id=0)
    assert blk.ids.shape == (5, 9) and blk.rows == (2, 3) and blk.dummy_rows == 2
    assert (blk.labels[3:] == IGNORE).all() and (blk.mask[3:] == 1).all()
    assert torch.equal(blk.labels[:2, :5], b["a"][2]) and (blk.labels[:2, 5:] == IGNORE).all()
    empty = block({}, rows=3, length=4, pad_token_id=0)
    assert empty.job_ids == () and empty.ids.shape == (3, 4) and empty.dummy_rows == 3
    with pytest.raises(ValueError, match="exceed"):
        block(b, rows=2, length=9, pad_token_id=0)


def test_parse_spec():
    assert parse_spec("llama-3.1-70b:layers=2") == ("llama-3.1-70b", {"layers": 2})
    assert parse_spec("tiny") == ("tiny", {})
    with pytest.raises(ValueError, match="unknown"):
        parse_spec("gpt-5")
    with pytest.raises(ValueError, match="bad option"):
        parse_spec("llama-3.1-8b:depth=2")


def test_backbone_factory_builds_llama_shape_with_few_layers_the_same_each_call():
    build = backbone_factory("smollm2-135m:layers=1", dtype=torch.float32)
    m1, m2 = build(), build()
    cfg = m1.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (576, 1536, 1)
    assert not any(p.requires_grad for p in m1.parameters())
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))  # same on every rank
