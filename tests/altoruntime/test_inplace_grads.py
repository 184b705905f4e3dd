"""Weight gradients written in place (the Triton path): per-step zeroing of the step's slots only,
non-finite slots read from the kernels' flags, and training equal to the torch path's autograd
accumulation over micro-batches, suspends and resumes."""

from __future__ import annotations

import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import assert_step_results_close, assert_sums_close, run_interpreted


def _store():
    tr = MultiAdapterTrainer(tiny_llama(hidden=32, intermediate=64, layers=1), capacity=4, cuda_graphs=False)
    for i, j in enumerate("abc"):
        tr.admit(j, rank=2 + i, lr=1e-2, seed=i)
    return tr.store


def test_a_flagged_slot_fails_its_adapter_only():
    store = _store()
    store.zero_step(list("abc"))
    for p in store.optim.params:
        p.grad.fill_(0.5)
    before = {j: store.weights(j) for j in "abc"}
    store.grad_flags[store.adapters["b"].slot] = 1
    store.update(list("abc"), [1.0, 1.0, 1.0], flagged=True)
    assert [store.status(j) for j in "abc"] == ["active", "failed", "active"]
    assert store.failure("b") == "non-finite gradient"
    for j in "ac":  # stepped
        assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(before[j], store.weights(j)))
    assert store.step_count("a") == 1 and store.step_count("b") == 0


def test_zero_step_zeroes_the_steps_slots_and_every_flag():
    store = _store()
    store.ensure_grads()
    for p in store.optim.params:
        p.grad.fill_(1.0)
    store.grad_flags.fill_(1)
    store.zero_step(["b"])
    slot = store.adapters["b"].slot
    for p in store.optim.params:
        assert not p.grad[slot].any()
        assert all(p.grad[s].eq(1).all() for s in range(store.capacity) if s != slot)  # not read, not touched
    assert not store.grad_flags.any()


def test_only_the_triton_path_writes_in_place_and_only_cuda_graphs_keep_the_capacity():
    tr = MultiAdapterTrainer(tiny_llama(hidden=32, intermediate=64, layers=1), capacity=2)
    assert not tr.in_place_grads and tr.store.shrink_at == tr.store.SHRINK_AT  # the CPU default: autograd
    tri = MultiAdapterTrainer(tiny_llama(hidden=32, intermediate=64, layers=1), capacity=2, impl="triton")
    assert tri.in_place_grads and tri.store.shrink_at == tri.store.SHRINK_AT  # no CUDA graphs: stacks still shrink


SCRIPT = """
import copy, json, torch
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import weight_sums
base = tiny_llama(hidden=32, intermediate=64, layers=1)
out = {}
for impl in ("torch_grouped", "triton"):
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "down_proj"], capacity=8, impl=impl,
                             park=True)
    tr.store.pack = True
    tr.store.shrink_at = 0  # as under CUDA graphs: 8 slots for at most 3 adapters, each step zeroes its own
    for i, (j, r) in enumerate((("a", 4), ("b", 2), ("c", 8))):
        tr.admit(j, rank=r, lr=1e-2, seed=i)
    res = [tr.step({"a": [make_batch(1, 2, 8), make_batch(2, 1, 8)], "b": make_batch(3, 1, 5), "c": make_batch(4, 2, 8)})]
    tr.suspend("b")
    res.append(tr.step({"a": make_batch(5, 1, 8), "c": [make_batch(6, 1, 8), make_batch(7, 2, 6)]}))
    tr.resume("b")
    res.append(tr.step({"b": make_batch(8, 2, 8), "a": make_batch(9, 1, 8)}))
    out[impl] = {"res": res, "in_place": tr.in_place_grads,
                 "w": weight_sums(tr, "abc")}
print(json.dumps(out))
"""


def test_in_place_training_equals_autograd_over_micro_batches_and_suspends():
    out = run_interpreted(SCRIPT)
    ref, tri = out["torch_grouped"], out["triton"]
    assert tri["in_place"] and not ref["in_place"]
    assert_step_results_close(ref["res"], tri["res"])
    for j in "abc":
        assert_sums_close(ref["w"][j], tri["w"][j])


STALE = """
import copy, json, torch
from altoruntime.backbone import tiny_llama
from altoruntime.step_graphs import StepGraphs
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import weight_sums
from tests.altoruntime.test_step_graphs import fake_capture
base = tiny_llama(hidden=32, intermediate=64, layers=1)
out = {}
for impl in ("torch_grouped", "triton"):
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "down_proj"], capacity=8, impl=impl,
                             gradient_checkpointing=True)
    tr.store.shrink_at = 0
    if impl == "triton":  # as on CUDA: retargeted graphs (a fake capture), phantom segments on unused slots
        tr.graphs = StepGraphs(tr.device, capture=fake_capture)
        tr.retarget_graphs = True
    for i, (j, r) in enumerate((("a", 4), ("b", 2), ("c", 8), ("d", 3))):
        tr.admit(j, rank=r, lr=1e-2, seed=i, max_grad_norm=0.05)
    res = []
    for k in range(3):
        if impl == "triton" and k:  # stale non-finite gradients where this step does not train
            for p in tr.store.optim.params:
                p.grad[4:] = float("nan")
                p.grad[tr.store.adapters["d"].slot] = float("inf")
        res.append(tr.step({"a": make_batch(10 + k, 2, 8), "b": make_batch(20 + k, 1, 5), "c": make_batch(30 + k, 2, 8)}))
    out[impl] = {"res": res, "status": [tr.status(j) for j in "abcd"], "replayed": tr.graphs.stats.get("replayed", 0),
                 "w": weight_sums(tr, "abc")}
print(json.dumps(out))
"""


def test_stale_non_finite_slots_are_never_read_with_phantoms_clipping_and_checkpointing():
    """Slots outside a step keep whatever gradient they had (NaN, inf): phantom segments accumulate
    zeros into them, clipping and the update read only the step's slots, so training equals the
    torch path's and no adapter fails (gradient checkpointing re-runs each forward in the backward)."""
    out = run_interpreted(STALE)
    ref, tri = out["torch_grouped"], out["triton"]
    assert tri["replayed"] >= 1 and ref["status"] == tri["status"] == ["active"] * 4
    assert_step_results_close(ref["res"], tri["res"])
    for j in "abc":
        assert_sums_close(ref["w"][j], tri["w"][j])
