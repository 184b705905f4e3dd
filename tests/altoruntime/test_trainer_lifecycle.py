"""Live changes between steps: admit, drop, suspend/resume, best snapshots; per-adapter failure."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import PeftReference, assert_matches, close_to, make_batch

LR = 1e-2


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _trainer(base, capacity=2):
    return MultiAdapterTrainer(copy.deepcopy(base), capacity=capacity)


def test_admit_drop_suspend_resume_between_steps(base):
    tr = _trainer(base)
    refs = {"a": PeftReference(base, 4, 8, LR, seed=1), "b": PeftReference(base, 2, 4, LR, seed=2)}
    tr.admit("a", rank=4, alpha=8, lr=LR, seed=1)
    tr.admit("b", rank=2, alpha=4, lr=LR, seed=2)
    batch = {j: make_batch(10 + i, 2, 10) for i, j in enumerate("abcd")}

    def both(ids):
        out = tr.step({j: batch[j] for j in ids})
        for j in ids:
            assert out[j] == pytest.approx(refs[j].step(batch[j]), rel=1e-5)

    both("ab")
    slot_b = tr.store.adapters["b"].slot
    tr.drop("b")
    assert "b" not in tr.store.adapters
    tr.admit("c", rank=8, alpha=16, lr=LR, seed=3)  # reuses b's slot, fresh state
    assert tr.store.adapters["c"].slot == slot_b and tr.step_count("c") == 0
    refs["c"] = PeftReference(base, 8, 16, LR, seed=3)
    both("ac")
    tr.suspend("a")
    assert tr.status("a") == "suspended" and tr.store.adapters["a"].slot is None
    tr.admit("d", rank=2, lr=LR, seed=4)  # takes a's freed slot
    refs["d"] = PeftReference(base, 2, 4, LR, seed=4)
    both("cd")
    tr.resume("a")  # capacity full -> doubles, a comes back in a new slot
    assert tr.capacity == 4 and tr.step_count("a") == 2
    both("acd")
    for j in "acd":
        assert_matches(tr, j, refs[j], LR)


def test_snapshot_and_restore_best(base):
    tr = _trainer(base)
    tr.admit("a", rank=4, lr=LR)
    tr.step({"a": make_batch(1, 2, 8)})
    tr.snapshot_best("a")
    best = tr.adapter_weights("a")
    for s in range(3):
        tr.step({"a": make_batch(2 + s, 2, 8)})
    assert not torch.equal(tr.adapter_weights("a")[0][2], best[0][2])
    tr.suspend("a")
    tr.restore_best("a")  # works on a suspended adapter too
    tr.resume("a")
    for (_, a0, b0), (_, a1, b1) in zip(best, tr.adapter_weights("a")):
        assert torch.equal(a0, a1) and torch.equal(b0, b1)
    tr.admit("fresh", rank=2, lr=LR)
    with pytest.raises(ValueError, match="no best snapshot"):
        tr.restore_best("fresh")


def test_nan_fails_one_adapter_and_spares_the_others(base):
    clean, poisoned = _trainer(base), _trainer(base)
    for tr in (clean, poisoned):
        tr.admit("a", rank=4, lr=LR, seed=1)
        tr.admit("b", rank=4, lr=LR, seed=2)
        tr.step({"a": make_batch(1, 2, 8), "b": make_batch(2, 2, 8)})
    poisoned.admit("bad", rank=2, lr=LR, seed=3)
    with torch.no_grad():
        poisoned.store.layers[0].B[poisoned.store.adapters["bad"].slot, 0, 0] = math.nan
    batches = {"a": make_batch(3, 2, 8), "b": make_batch(4, 1, 6)}
    ref = clean.step(batches)
    out = poisoned.step({**batches, "bad": make_batch(5, 3, 8)})
    assert math.isnan(out["bad"]) and poisoned.status("bad") == "failed"
    assert poisoned.failure("bad") == "non-finite loss"
    for j in "ab":
        assert out[j] == ref[j] and poisoned.status(j) == "active"
        for (_, a0, b0), (_, a1, b1) in zip(clean.adapter_weights(j), poisoned.adapter_weights(j)):
            assert torch.equal(a0, a1) and torch.equal(b0, b1)
    with pytest.raises(ValueError, match="failed"):
        poisoned.step({"bad": make_batch(6, 1, 8)})
    poisoned.drop("bad")
    assert poisoned.step(batches).keys() == {"a", "b"}


def test_out_of_memory_splits_the_group_and_fails_only_the_job_too_big_alone(base, monkeypatch):
    tr, ref = _trainer(base), _trainer(base)
    for t in (tr, ref):
        t.admit("a", rank=4, lr=LR, seed=1)
        t.admit("b", rank=4, lr=LR, seed=2)
        t.admit("huge", rank=4, lr=LR, seed=3)
    batches = {"a": make_batch(1, 2, 8), "b": make_batch(2, 1, 8), "huge": make_batch(3, 6, 8)}
    decoder = tr.model.get_decoder()
    forward = decoder.forward

    def limited(*args, input_ids, **kw):  # pretend the device holds at most 4 sequences
        if input_ids.shape[0] > 4:
            raise torch.OutOfMemoryError("simulated")
        return forward(*args, input_ids=input_ids, **kw)

    monkeypatch.setattr(decoder, "forward", limited)
    out = tr.step(batches)
    expected = ref.step({"a": batches["a"], "b": batches["b"]})
    assert math.isnan(out["huge"]) and tr.failure("huge") == "out of memory even alone"
    for j in "ab":
        assert out[j] == pytest.approx(expected[j], rel=1e-6)
        for (_, a0, b0), (_, a1, b1) in zip(ref.adapter_weights(j), tr.adapter_weights(j)):
            close_to(a1, a0, LR)
            close_to(b1, b0, LR)


def test_evaluate_matches_peft_and_does_not_update(base):
    tr = _trainer(base)
    tr.admit("a", rank=4, lr=LR, seed=1)
    ref = PeftReference(base, 4, 8, LR, seed=1)
    train, val = make_batch(1, 2, 8), make_batch(9, 3, 12)
    tr.step({"a": train})
    ref.step(train)
    before = tr.adapter_weights("a")
    got = tr.evaluate({"a": val})["a"]
    ref.model.eval()
    with torch.no_grad():
        want = float(ref.model(input_ids=val[0], attention_mask=val[1], labels=val[2]).loss)
    assert got == pytest.approx(want, rel=1e-5)
    assert all(torch.equal(x[2], y[2]) for x, y in zip(before, tr.adapter_weights("a")))
    assert tr.step_count("a") == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda tr: tr.admit("a", rank=4), "already exists"),
        (lambda tr: tr.admit("z", rank=65), "rank: 65 exceeds"),
        (lambda tr: tr.admit("z", rank=0), "rank"),
        (lambda tr: tr.admit("z", rank=2, lr=0.0), "lr"),
        (lambda tr: tr.admit("z", rank=2, lr=float("nan")), "lr"),
        (lambda tr: tr.admit("z", rank=2, weight_decay=-1.0), "weight_decay"),
        (lambda tr: tr.admit("z", rank=2, dropout=1.0), "dropout"),
        (lambda tr: tr.drop("nope"), "unknown adapter 'nope'"),
        (lambda tr: tr.resume("a"), "is active, expected suspended"),
        (lambda tr: tr.step({}), "at least one"),
        (lambda tr: tr.step({"a": make_batch(1, 2, 8)[:2]}), "expected \\(input_ids"),
        (lambda tr: tr.step({"a": (torch.zeros(2, 8, dtype=torch.long),) * 2 + (torch.full((2, 8), -100),)}),
         "no token to predict"),
        (lambda tr: tr.step({"a": (torch.zeros(8, dtype=torch.long),) * 3}), "input_ids must be"),
    ],
)
def test_bad_input_raises_clear_value_error(base, call, match):
    tr = _trainer(base)
    tr.admit("a", rank=4)
    with pytest.raises(ValueError, match=match):
        call(tr)


def test_unknown_target_module_is_named(base):
    with pytest.raises(ValueError, match="'qkv_proj'"):
        MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "qkv_proj"])


def test_gradient_checkpointing_gives_the_same_training(base):
    runs = []
    for ckpt in (False, True):
        tr = MultiAdapterTrainer(copy.deepcopy(base), gradient_checkpointing=ckpt)
        tr.admit("a", rank=4, lr=LR, dropout=0.3, seed=1)  # dropout: recompute must redraw the same mask
        tr.admit("b", rank=2, lr=LR, seed=2)
        torch.manual_seed(0)
        losses = [tr.step({"a": make_batch(s, 2, 8), "b": make_batch(40 + s, 1, 6)}) for s in range(3)]
        assert tr.model.model.gradient_checkpointing == ckpt
        runs.append((losses, tr.adapter_weights("a")))
    (l0, w0), (l1, w1) = runs
    for s0, s1 in zip(l0, l1):
        assert s1 == pytest.approx(s0, rel=1e-6)
    for (_, a0, b0), (_, a1, b1) in zip(w0, w1):
        torch.testing.assert_close(a1, a0, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(b1, b0, rtol=1e-5, atol=1e-7)


def test_labelled_positions_head_equals_full_logits_path(base):
    fast, full = _trainer(base), _trainer(base)
    full.head = None  # what a backbone with a non-plain head (softcapping, logit scale) uses
    for tr in (fast, full):
        tr.admit("a", rank=4, lr=LR, seed=1)
        tr.admit("b", rank=2, lr=LR, seed=2)
    batches = {"a": make_batch(1, 2, 9), "b": make_batch(2, 3, 6)}
    for _ in range(2):
        got, want = fast.step(batches), full.step(batches)
        assert got == pytest.approx(want, rel=1e-6)


def test_drops_compact_the_stacks_and_survivors_train_on(base):
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=1)
    ranks = {"a": 8, "b": 2, "c": 4, "d": 2, "e": 2, "f": 3}
    for i, (j, r) in enumerate(ranks.items()):
        tr.admit(j, rank=r, lr=LR, seed=i)
    assert tr.capacity == 8 and tr.r_max == 8
    refs = {j: PeftReference(base, ranks[j], 2 * ranks[j], LR, seed=i) for i, j in enumerate(ranks) if j in "ce"}
    first = {j: make_batch(i, 2, 8) for i, j in enumerate(ranks)}
    tr.step(first)
    for j in "abdf":
        tr.drop(j)
    assert tr.capacity == 2 and tr.r_max == 4  # 2 live of 8 -> compacted; largest live rank 4
    assert tuple(tr.store.layers[0].A.shape) == (2, 64, 4) and tr.store.optim.exp_avg[0].shape == (2, 64, 4)
    assert sorted(tr.store.adapters[j].slot for j in "ce") == [0, 1] and tr.step_count("c") == 1
    second = {j: make_batch(50 + i, 1, 7) for i, j in enumerate("ce")}
    tr.step(second)
    for j, ref in refs.items():
        ref.step(first[j])
        ref.step(second[j])
        assert_matches(tr, j, ref, LR)
    tr.admit("g", rank=8, lr=LR)  # grows again as needed
    assert tr.capacity == 4 and tr.r_max == 8


def test_compact_keeps_the_rank_width_when_told(base):
    """On CUDA (the default there) a compaction keeps r_max: a narrower rank block would make
    every Triton kernel re-tune and recompile mid-run."""
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, shrink_rank=False)
    for i, (j, r) in enumerate({"a": 8, "b": 2, "c": 4, "d": 2, "e": 2}.items()):
        tr.admit(j, rank=r, lr=LR, seed=i)
    for j in "abd":
        tr.drop(j)
    assert tr.capacity == 2 and tr.r_max == 8
    tr.step({j: make_batch(i, 2, 8) for i, j in enumerate("ce")})
    assert all(tr.status(j) == "active" for j in "ce") and tr.step_count("c") == 1


def test_resume_after_the_stacks_shrank_below_the_rank_padding_at_suspend(base):
    """A rank-2 adapter suspended while r_max was 8 resumes after a compaction to r_max 2.

    Its saved optimizer state is padded to the old r_max; resuming must copy only the live
    block (this crashed on the GPU in the first e2e run with early exit).
    """
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=4)
    tr.admit("big", rank=8, lr=LR, seed=0)
    tr.admit("small", rank=2, lr=LR, seed=1)
    tr.admit("other", rank=2, lr=LR, seed=2)
    ref = PeftReference(base, 2, 4, LR, seed=1)
    b1 = {j: make_batch(i, 2, 8) for i, j in enumerate(["big", "small", "other"])}
    tr.step(b1)
    tr.suspend("small")
    tr.drop("big")
    assert tr.r_max == 2
    tr.resume("small")
    b2 = {"small": make_batch(9, 1, 6), "other": make_batch(10, 1, 6)}
    tr.step(b2)
    ref.step(b1["small"])
    ref.step(b2["small"])
    assert_matches(tr, "small", ref, LR)


def test_suspend_without_the_optimizer_keeps_weights_and_step_count_only(base):
    """A stopped job never trains again: suspending it keeps its weights (the task's result may
    be it) and its step count, not its AdamW moments; resuming it to evaluate gives the same
    weights and starts the moments at zero."""
    tr = _trainer(base)
    tr.admit("a", rank=4, alpha=8, lr=LR, seed=1)
    tr.admit("b", rank=4, alpha=8, lr=LR, seed=2)
    batch = {j: make_batch(20 + i, 2, 10) for i, j in enumerate("ab")}
    tr.step(batch)
    tr.step(batch)
    before = tr.adapter_weights("a")
    tr.suspend("a", keep_optimizer=False)
    tr.suspend("b")  # the default keeps them
    off_a, off_b = tr.store.adapters["a"].offloaded["optim"], tr.store.adapters["b"].offloaded["optim"]
    assert off_a["exp_avg"] == [] and off_a["exp_avg_sq"] == []
    assert len(off_b["exp_avg"]) > 0 and any(float(t.abs().sum()) > 0 for t in off_b["exp_avg"])
    assert tr.step_count("a") == 2 == tr.step_count("b")
    tr.resume("a")
    for (n0, a0, b0), (n1, a1, b1) in zip(before, tr.adapter_weights("a")):
        assert n0 == n1 and torch.equal(a0, a1) and torch.equal(b0, b1)
    slot = tr.store.adapters["a"].slot
    assert all(float(t[slot].abs().sum()) == 0 for t in tr.store.optim.exp_avg + tr.store.optim.exp_avg_sq)
    assert tr.step_count("a") == 2
