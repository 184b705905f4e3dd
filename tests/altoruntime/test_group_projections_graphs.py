"""Grouped projections (ALTO_GROUP_PROJECTIONS=1) through retargeted step graphs: one graph serves
every group of its shape by rewriting the step metadata's device tables, which the member kernels
read as the single ones do; phantom segments (a group padded to a power of two) get zero weight
gradients. Runs the Triton path under the CPU interpreter with a fake capture (a replay reruns the
body on the retargeted metadata), group off and on, in a subprocess."""

from __future__ import annotations

from tests.altoruntime._runtime_helpers import assert_step_results_close, assert_sums_close, run_interpreted

GRAPHED = """
import copy, json, torch
import tests.altoruntime._liger_interpret  # noqa: F401 (Liger's kernels under the interpreter)
from altokernels import launch
from altoruntime.backbone import tiny_llama
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.step_graphs import StepGraphs
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime.test_step_graphs import fake_capture

names = []
real = launch.launch
def counting(fn, *args, **kw):
    names.append(fn.fn.__name__)
    return real(fn, *args, **kw)
launch.launch = counting

base = tiny_llama(hidden=32, intermediate=48, layers=1, heads=4, kv_heads=2)
out = {}
for group in (False, True):
    model = copy.deepcopy(base)
    fuse_backbone(model, allow_cpu=True)
    tr = MultiAdapterTrainer(model, capacity=8, impl="triton", group_projections=group)
    tr.graphs = StepGraphs(tr.device, min_uses=2, capture=fake_capture)  # as on CUDA: retargeted graphs
    tr.retarget_graphs = True
    for i, (j, r) in enumerate((("a", 4), ("b", 2), ("c", 8), ("d", 2))):
        tr.admit(j, rank=r, lr=1e-2, seed=i)
    val = make_batch(99, 2, 7)
    res = []
    names.clear()
    for s, grp in enumerate(({"a": 2, "b": 1, "c": 1}, {"c": 1, "d": 2, "a": 1}, {"d": 1, "b": 3})):
        res.append(tr.step({j: make_batch(10 * s + ord(j), n, 8) for j, n in grp.items()}))
        res.append({j: r.loss_sum for j, r in tr.evaluate_tokens({j: val for j in grp}).items()})
    layers = tr.store.layers
    out[str(group)] = {"res": res, "stats": dict(tr.graphs.stats), "members": sum(n.startswith("_member") for n in names),
                       "w": {j: [float(b.abs().sum()) for _, _, b in tr.adapter_weights(j)] for j in "abcd"},
                       "unused_grad": sum(float(l.B.grad[4:].abs().sum()) + float(l.A.grad[4:].abs().sum())
                                          for l in layers)}
print(json.dumps(out))
"""


def test_grouped_projections_through_retargeted_graphs_with_phantom_segments():
    out = run_interpreted(GRAPHED)
    off, on = out["False"], out["True"]
    assert on["stats"].get("replayed", 0) >= 2, on["stats"]
    assert off["members"] == 0 and on["members"] > 0
    assert on["unused_grad"] == 0.0  # the phantom segments' slots (4 of the 8 unused) got zero gradients
    assert_step_results_close(off["res"], on["res"], rel=1e-5)
    for j in "abcd":
        assert_sums_close(off["w"][j], on["w"][j], rel=1e-5)
        assert sum(on["w"][j]) > 0
