"""The trainer on the Triton kernel path (the one CUDA uses) equals the torch path.

Runs in a subprocess under TRITON_INTERPRET=1, which must be set before triton is imported.
"""

from __future__ import annotations

from tests.altoruntime._runtime_helpers import assert_step_results_close, assert_sums_close, run_interpreted

SCRIPT = """
import copy, json, torch
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
base = tiny_llama(hidden=32, intermediate=64, layers=1)
out = {}
for impl in ("torch_grouped", "triton"):
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "down_proj"], capacity=2, impl=impl)
    tr.admit("a", rank=4, lr=1e-2, seed=1)
    tr.admit("b", rank=2, lr=1e-2, dropout=0.0, seed=2)
    tr.admit("c", rank=8, lr=1e-2, seed=3)  # capacity doubles under the kernel
    losses = [tr.step({"a": make_batch(s, 2, 8), "b": make_batch(9 + s, 1, 5), "c": make_batch(20 + s, 3, 8)})
              for s in range(2)]
    out[impl] = {"losses": losses, "a": [float(b.abs().sum()) for _, _, b in tr.adapter_weights("a")]}
print(json.dumps(out))
"""


def test_triton_path_matches_torch_path():
    out = run_interpreted(SCRIPT)
    ref, tri = out["torch_grouped"], out["triton"]
    assert_step_results_close(ref["losses"], tri["losses"])
    assert_sums_close(ref["a"], tri["a"])
    assert sum(ref["a"]) > 0


GRAPHED = """
import copy, json, torch
from altoruntime.backbone import tiny_llama
from altoruntime.step_graphs import StepGraphs
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime.test_step_graphs import fake_capture
base = tiny_llama(hidden=32, intermediate=64, layers=1)
out = {}
for impl in ("torch_grouped", "triton"):
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "down_proj"], capacity=8, impl=impl)
    if impl == "triton":  # as on CUDA: retargeted graphs (a fake capture), phantom segments, coarse buckets
        tr.graphs = StepGraphs(tr.device, min_uses=2, capture=fake_capture)
        tr.retarget_graphs = True
    for i, (j, r) in enumerate((("a", 4), ("b", 2), ("c", 8), ("d", 2))):
        tr.admit(j, rank=r, lr=1e-2, seed=i)
    val = make_batch(99, 2, 7)
    res = []
    for s, group in enumerate(({"a": 2, "b": 1, "c": 1}, {"c": 1, "d": 2, "a": 1}, {"d": 1, "b": 3})):
        res.append(tr.step({j: make_batch(10 * s + ord(j), n, 8) for j, n in group.items()}))
        res.append({j: r.loss_sum for j, r in tr.evaluate_tokens({j: val for j in group}).items()})
    out[impl] = {"res": res, "w": {j: [float(b.abs().sum()) for _, _, b in tr.adapter_weights(j)] for j in "abcd"},
                 "stats": dict(tr.graphs.stats), "unused_grad": float(tr.store.layers[0].B.grad[4:].abs().sum())}
print(json.dumps(out))
"""


def test_triton_path_through_retargeted_graphs_with_phantom_segments_matches_torch_path():
    """3-adapter steps run as 4 segments (a phantom on an unused slot: the Triton weight-gradient
    kernel writes zeros there), evaluations padded with repeats, graphs replayed across groups."""
    out = run_interpreted(GRAPHED)
    ref, tri = out["torch_grouped"], out["triton"]
    assert tri["stats"].get("replayed", 0) >= 2, tri["stats"]
    assert tri["unused_grad"] == 0.0  # the phantom segments' slots (4 of the 8 unused) got zero gradients
    assert_step_results_close(ref["res"], tri["res"])
    for j in "abcd":
        assert_sums_close(ref["w"][j], tri["w"][j])
