"""SlotBlocks: a slot's rank blocks of many stacks moved in a few ops, equal to taking them one
by one, following reallocated stacks; suspends and resumes whose op count does not grow with
the number of layers."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from altoruntime.backbone import tiny_llama
from altoruntime.slot_blocks import SlotBlocks
from altoruntime.trainer import MultiAdapterTrainer


def _reference(t: torch.Tensor, slot: int, rank: int, dim: int | None, tr: bool) -> torch.Tensor:
    v = t[slot]
    if dim is not None:
        v = v.narrow(dim, 0, min(rank, v.shape[dim]))
    return v.t() if tr else v


@st.composite
def _stacks(draw):
    cap = draw(st.integers(1, 4))
    r_max = draw(st.integers(1, 6))
    specs = draw(st.lists(st.tuples(st.sampled_from([1, 0, None]), st.integers(1, 5), st.booleans()), min_size=1,
                          max_size=7))
    stacks, dims, trs = [], [], []
    for k, (dim, width, tr) in enumerate(specs):
        shape = (cap, r_max, width) if dim == 0 else (cap, width, r_max)
        stacks.append(torch.randn(shape, generator=torch.Generator().manual_seed(k)))
        dims.append(dim)
        trs.append(tr)
    return stacks, dims, trs, draw(st.integers(0, cap - 1)), draw(st.integers(0, cap - 1)), draw(st.integers(1, r_max))


@settings(max_examples=60, deadline=None)
@given(_stacks())
def test_gather_scatter_equal_the_blocks_one_by_one(case):
    stacks, dims, trs, src, dst, rank = case
    blocks = SlotBlocks(lambda: stacks, dims, trs)
    flat = blocks.gather(src, rank)
    assert flat.numel() == blocks.numel(rank) == sum(_reference(t, src, rank, d, tr).numel()
                                                    for t, d, tr in zip(stacks, dims, trs))
    for got, t, d, tr in zip(blocks.unflatten(flat, rank), stacks, dims, trs):
        assert torch.equal(got, _reference(t, src, rank, d, tr))
    before = [t.clone() for t in stacks]
    blocks.scatter(dst, rank, flat.clone())
    for t, old, d, tr in zip(stacks, before, dims, trs):
        assert torch.equal(_reference(t, dst, rank, d, tr), _reference(old, src, rank, d, tr))
        pad = t[dst].clone()
        (pad if d is None else pad.narrow(d, 0, rank)).zero_()
        assert not pad.any()  # nothing outside the block: the rest of the slot is zeroed
        others = [s for s in range(t.shape[0]) if s != dst]
        assert torch.equal(t[others], old[others])


def test_views_follow_reallocated_stacks():
    """A stack replaced by a new tensor (a resize, a compaction) is read and written there, not
    through views of the old storage."""
    holder = [torch.zeros(2, 3, 4), torch.zeros(2, 4, 5)]
    blocks = SlotBlocks(lambda: holder, [1, 0], [True, True])
    assert not blocks.gather(1, 2).any()  # views of the old stacks now cached
    holder[0] = torch.ones(2, 3, 4)
    holder[1] = torch.full((2, 4, 5), 2.0)
    flat = blocks.gather(1, 2)
    assert flat.numel() == 3 * 2 + 5 * 2 and set(flat.tolist()) == {1.0, 2.0}
    blocks.zero(1)
    assert not holder[0][1].any() and not holder[1][1].any() and holder[0][0].all()


def test_layout_is_known_before_the_stacks_grow():
    """Initial weights of a wider rank are drawn (in other threads) before the stacks widen."""
    holder = [torch.zeros(1, 3, 2), torch.zeros(1, 2, 5)]
    blocks = SlotBlocks(lambda: holder, [1, 0], [True, True])
    assert blocks.numel(8) == 8 * 3 + 5 * 8
    a, b = blocks.unflatten(torch.arange(64.0), 8)
    assert a.shape == (8, 3) and b.shape == (5, 8)


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _cycle_ops(layers: int) -> int:
    """Tensor ops of one warm suspend (parked) + resume of an adapter, stacks moving packed
    (a cycle that reallocates the stacks costs ops per layer: that is rarer)."""
    tr = MultiAdapterTrainer(tiny_llama(layers=layers, seed=0), capacity=4, park=True, cuda_graphs=False)
    tr.store.pack = True
    for i, j in enumerate("abcd"):  # a full stack: no growth or compaction in the cycle
        tr.admit(j, rank=4, lr=1e-3, seed=i)
    for _ in range(2):  # the first cycle makes the views; the second is what a run pays each time
        with _Ops() as ops:
            tr.suspend("b")
            tr.resume("b")
    return sum(ops.n.values())


def test_suspend_and_resume_cost_no_more_ops_with_more_layers():
    """~6,000 ops per suspend at SmolLM2's 210 layers before: a few per layer each; now a few
    per distinct block shape."""
    few, many = _cycle_ops(2), _cycle_ops(6)
    assert many == few and few <= 150


@pytest.mark.parametrize("park", [True, False])
def test_suspended_weights_and_moments_come_back_exactly(park):
    tr = MultiAdapterTrainer(tiny_llama(seed=0), capacity=2, park=park, cuda_graphs=False)
    tr.store.pack = True
    tr.admit("a", rank=3, lr=1e-2, seed=1)
    tr.admit("b", rank=5, lr=1e-2, seed=2)
    opt = tr.store.optim
    slot = tr.store.adapters["b"].slot
    for t in opt.exp_avg + opt.exp_avg_sq:
        t[slot].normal_()
    want_w = tr.store.weights("b")
    want_m = opt.slot_state(slot, 5)
    tr.suspend("b")
    tr.admit("c", rank=2, lr=1e-2, seed=3)  # another adapter takes the freed slot
    tr.resume("b")
    got_m = opt.slot_state(tr.store.adapters["b"].slot, 5)
    for (a1, b1), (a2, b2) in zip(want_w, tr.store.weights("b")):
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
    for k in ("exp_avg", "exp_avg_sq"):
        assert all(torch.equal(x, y) for x, y in zip(want_m[k], got_m[k]))
    assert copy.deepcopy(got_m["hyper"]) == want_m["hyper"]


def test_a_deep_copied_trainer_moves_its_own_slots():
    """The views and the stacks they come from belong to the copy (a closure over the original
    would read and write the original's stacks)."""
    tr = MultiAdapterTrainer(tiny_llama(seed=0), capacity=2, park=True, cuda_graphs=False)
    tr.store.pack = True
    tr.admit("a", rank=4, lr=1e-2, seed=1)
    tr.store.snapshot_best("a")  # views of the original's stacks cached
    twin = copy.deepcopy(tr)
    want = tr.store.weights("a")
    twin.suspend("a")
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(want, tr.store.weights("a")))  # original untouched
    twin.resume("a")
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(want, twin.store.weights("a")))
    assert twin.store.packer.blocks.full(0)[0].data_ptr() != tr.store.packer.blocks.full(0)[0].data_ptr()


def test_a_reallocation_releases_the_cached_views():
    """Views kept after the stacks compact would hold the old stacks and moments in memory."""
    tr = MultiAdapterTrainer(tiny_llama(seed=0), capacity=4, park=True, cuda_graphs=False)
    tr.store.pack = True
    for i, j in enumerate("abcd"):
        tr.admit(j, rank=4, lr=1e-2, seed=i)
    tr.suspend("a")  # views of the 4-slot stacks made and kept
    packer = tr.store.packer.blocks
    assert packer.cached > 0
    tr.drop("b")  # 2 of 4 slots left: the stacks compact to 2
    assert tr.capacity == 2 and packer.cached == 0
    copied = copy.deepcopy(tr)
    assert copied.store.packer.blocks.cached == 0  # a copy carries no view
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(tr.store.weights("c"), copied.store.weights("c")))


def test_a_rank_wider_than_the_blocks_is_an_error():
    holder = [torch.zeros(1, 3, 2), torch.zeros(1, 2, 5)]
    with pytest.raises(ValueError, match="wider"):
        SlotBlocks(lambda: holder, [1, 0]).gather(0, 3)


def test_bench_actions_counts_every_action_twice(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "bench_actions.py"
    spec = importlib.util.spec_from_file_location("bench_actions", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path), "--adapters", "2"]) == 2 and not any(tmp_path.iterdir())
    assert mod.main(["--out", str(tmp_path), "--layers", "2", "--adapters", "4"]) == 0
    rows = [r.split(",") for r in (tmp_path / "bench_actions.csv").read_text().splitlines()]
    assert rows[0][:5] == ["action", "round", "layers", "lora_layers", "ops"] and len(rows) == 11
    warm = {r[0]: int(r[4]) for r in rows[1:] if r[1] == "warm"}
    assert warm["resume_parked"] < 100 and warm["suspend_parked"] < 100  # a few per block shape, not per layer
