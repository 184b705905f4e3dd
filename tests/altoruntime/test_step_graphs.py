"""The captured-step cache: when it captures, replays, evicts, invalidates and falls back; and the
trainer driven through it (a fake capture that replays the captured body, so a wrong key or a
stale input would change the numbers)."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.step_graphs import Captured, StepGraphs
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch

CPU = torch.device("cpu")


class FakeCaptured(Captured):
    """Replays the body it was captured with on the static inputs, as a CUDA graph would."""

    def replay(self, host):
        for dst, src in zip(self.inputs, host):
            dst.copy_(src)
        self.output = self.graph(*self.inputs)
        return self.output


def fake_capture(body, host, device, pool):
    return FakeCaptured(body, tuple(t.clone() for t in host), None)


def failing_capture(exc):
    def capture(body, host, device, pool):
        raise exc
    return capture


def _prepare(offset):
    return lambda: ((lambda x: x + offset), f"meta{offset}")


def test_eager_until_min_uses_then_captured_and_replayed():
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture)
    x = torch.arange(3.0)
    assert torch.equal(g.run("k", [x], _prepare(1)), x + 1) and len(g) == 0
    assert torch.equal(g.run("k", [x], _prepare(1)), x + 1) and len(g) == 1
    calls = []
    out = g.run("k", [x * 2], lambda: calls.append(1))  # a replay never prepares
    assert torch.equal(out, x * 2 + 1) and not calls
    assert g.stats == {"eager": 1, "captured": 1, "replayed": 2}


def test_least_recently_used_graph_is_evicted():
    g = StepGraphs(CPU, min_uses=1, max_graphs=2, capture=fake_capture)
    x = torch.zeros(1)
    for k in ("a", "b", "a", "c"):
        g.run(k, [x], _prepare(0))
    assert len(g) == 2 and g.stats["evicted"] == 1
    calls = []
    g.run("a", [x], lambda: calls.append(1) or _prepare(0)())
    assert not calls  # a was used after b: b went
    g.run("b", [x], lambda: calls.append(1) or _prepare(0)())
    assert calls == [1]


def test_invalidate_forgets_graphs_and_counts():
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture)
    x = torch.zeros(1)
    g.run("k", [x], _prepare(0))
    g.run("k", [x], _prepare(0))
    g.invalidate()
    assert len(g) == 0
    g.run("k", [x], _prepare(0))
    assert len(g) == 0 and g.stats["eager"] == 2  # counted from zero again


def test_a_failed_capture_turns_graphs_off_and_runs_eagerly():
    g = StepGraphs(CPU, min_uses=1, capture=failing_capture(RuntimeError("operation not permitted when stream is capturing")))
    x = torch.ones(2)
    assert torch.equal(g.run("k", [x], _prepare(2)), x + 2)
    assert not g.enabled and "operation not permitted" in g.disabled
    assert torch.equal(g.run("j", [x], _prepare(3)), x + 3) and g.stats["eager"] == 2


def test_an_out_of_memory_capture_skips_only_that_shape():
    g = StepGraphs(CPU, min_uses=1, capture=failing_capture(torch.OutOfMemoryError("no room")))
    x = torch.ones(2)
    for _ in range(3):
        assert torch.equal(g.run("k", [x], _prepare(1)), x + 1)
    assert g.enabled and g.stats["capture_oom"] == 1 and g.stats["eager"] == 3


def test_off_without_cuda_unless_a_capture_is_given():
    assert not StepGraphs(CPU).enabled
    assert not StepGraphs(CPU, enabled=False, capture=fake_capture).enabled
    with pytest.raises(ValueError, match="min_uses"):
        StepGraphs(CPU, min_uses=0)


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _script(tr):
    """Steps and evaluations across admits, a suspend, a drop, a capacity doubling and a compaction."""
    out = []
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    tr.admit("b", rank=2, alpha=4, lr=2e-2, seed=2)
    shapes = {"a": (2, 12), "b": (1, 9), "c": (3, 7), "d": (1, 16)}
    val = make_batch(99, 3, 10)

    def steps(ids, n):
        for i in range(n):
            # lengths cross a bucket every other step: two shapes per group
            out.append(tr.step({j: make_batch(100 * i + ord(j), shapes[j][0], shapes[j][1] + 9 * (i % 2)) for j in ids}))
        out.append(tr.evaluate_tokens({j: val for j in ids}))

    steps("ab", 6)
    tr.admit("c", rank=8, alpha=8, lr=1e-2, seed=3)  # capacity 2 -> 4: the stacks move
    steps("abc", 3)
    tr.suspend("b")
    steps("ac", 3)
    tr.drop("c")  # one slot used: the stacks compact (b's suspend halved them already)
    tr.admit("d", rank=2, alpha=2, lr=1e-2, seed=4)
    tr.resume("b")
    steps("bda", 6)
    return out, {j: tr.adapter_weights(j) for j in "abd"}


def test_trainer_through_captured_steps_equals_eager(base):
    eager = MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False)
    graphed = MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    graphed.graphs = StepGraphs(graphed.device, min_uses=2, capture=fake_capture)
    want, w_want = _script(eager)
    got, w_got = _script(graphed)
    assert got == want
    for j in w_want:
        for (n1, a1, b1), (n2, a2, b2) in zip(w_want[j], w_got[j]):
            assert n1 == n2 and torch.equal(a1, a2) and torch.equal(b1, b2)
    stats = graphed.graphs.stats
    assert stats["replayed"] > stats["captured"] > 0 and stats["invalidated"] >= 1


def _retargeting(base):
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    tr.graphs = StepGraphs(tr.device, min_uses=2, capture=fake_capture)
    tr.retarget_graphs = True  # as on CUDA with the Triton path (the fake replays read the host fields)
    return tr


def test_one_graph_serves_every_group_of_its_shape(base):
    """With retargeting, a graph captured for one group replays for another of the same shape
    (slots, ranks, scales rewritten into its metadata), with exactly the eager numbers."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False), _retargeting(base)):
        for i, (j, r) in enumerate({"a": 4, "b": 2, "c": 8, "d": 2}.items()):
            tr.admit(j, rank=r, alpha=2 * r + i, lr=1e-2 * (i + 1), seed=i)
        val = make_batch(99, 3, 10)
        out = []
        for group in ("ab", "ab", "cd", "ca", "db"):
            x, y = group
            out.append(tr.step({x: make_batch(ord(x), 2, 12), y: make_batch(ord(y), 1, 11)}))
            out.append(tr.evaluate_tokens({x: val, y: val}))
        runs.append((out, tr))
    (want, _), (got, graphed) = runs
    assert got == want
    # per group, only ab would be captured (twice used) and replayed (2); here cd, ca, db replay it too
    assert graphed.graphs.stats["captured"] == 2 and graphed.graphs.stats["replayed"] >= 2 * 3


def test_trainer_through_retargeted_graphs_equals_eager(base):
    want, w_want = _script(MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False))
    got, w_got = _script(_retargeting(base))
    assert got == want
    for j in w_want:
        for (_, a1, b1), (_, a2, b2) in zip(w_want[j], w_got[j]):
            assert torch.equal(a1, a2) and torch.equal(b1, b2)
