"""The captured-step cache: when it captures, replays, evicts, invalidates and falls back; and the
trainer driven through it (a fake capture that replays the captured body, so a wrong key or a
stale input would change the numbers)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from altoruntime.backbone import tiny_llama
import warnings

from altoruntime.step_graphs import RESERVE_RUNS, Captured, EmptyCaptureError, StepGraphs, end_capture
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import assert_adapters_close, weight_sums

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


class _WarningGraph:
    """A stand-in for torch.cuda.CUDAGraph whose capture_end warns as torch does."""

    def __init__(self, message):
        self.message = message

    def capture_end(self):
        if self.message:
            warnings.warn(self.message, UserWarning)


def test_end_capture_reports_an_empty_graph_and_passes_other_warnings_on():
    assert end_capture(_WarningGraph("The CUDA Graph is empty. This usually means that the graph was attempted "
                                     "to be captured on wrong device or stream."))
    assert not end_capture(_WarningGraph(None))
    with pytest.warns(UserWarning, match="something else"):
        assert not end_capture(_WarningGraph("something else"))


def test_an_empty_capture_is_a_failed_capture_and_the_step_runs_eagerly():
    g = StepGraphs(CPU, min_uses=1, capture=failing_capture(EmptyCaptureError("no kernels")))
    x = torch.ones(2)
    assert torch.equal(g.run("k", [x], _prepare(4)), x + 4)  # eager, never the unwritten output
    assert not g.enabled and "EmptyCaptureError" in g.disabled and "no kernels" in g.failure_trace


class FakeMemory:
    """The capture gate's view of a device: bytes allocated, the allocator's peak, free and cached
    (`pooled` of which the graphs' pool holds unused)."""

    def __init__(self, free, cached=0):
        self.now = self.top = self.pooled = 0
        self.on_device, self.cached, self.released = free, cached, 0

    def allocated(self):
        return self.now

    def peak(self):
        return self.top

    def free(self):
        return self.on_device, self.cached

    def pool_free(self, pool):
        return self.pooled

    def release(self, collect=True):
        self.released += 1
        self.on_device, self.cached = self.on_device + self.cached - self.pooled, self.pooled


def _allocating(mem, per_element, offset):
    """A body that peaks at `per_element` bytes per input element above what is allocated."""
    def body(x):
        mem.top = max(mem.top, mem.now + per_element * x.numel())
        return x + offset
    return lambda: (body, None)


def test_a_capture_is_tried_only_where_its_eager_peak_fits_beside_the_largest_eager_step():
    mem = FakeMemory(free=200)
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture, memory=mem)
    x = torch.zeros(3)
    assert torch.equal(g.run("k", [x], _allocating(mem, 30, 1)), x + 1)  # eager: peaks at 90 bytes
    # 1.25 x 90 for the capture + 90 left for an eager step = 202.5 > 200 free: eager
    assert torch.equal(g.run("k", [x], _allocating(mem, 30, 1)), x + 1)
    assert g.last == "eager" and g.stats["capture_skipped_memory"] == 1 and len(g) == 0
    mem.cached = 10  # the allocator's unused cache makes room: it goes back, then the capture
    assert torch.equal(g.run("k", [x], _allocating(mem, 30, 1)), x + 1)
    assert g.last == "captured" and len(g) == 1 and mem.released == 1


def test_the_room_kept_for_eager_steps_is_the_largest_of_the_recent_runs():
    mem = FakeMemory(free=10**6)
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture, memory=mem)
    g.run("huge", [torch.zeros(100)], _allocating(mem, 10, 0))  # eager: 1000 bytes
    mem.now = mem.top = 0  # (the allocator's peak, as if measured afresh)
    mem.on_device = 1100
    g.run("k", [torch.zeros(2)], _allocating(mem, 10, 0))  # eager: 20 bytes
    g.run("k", [torch.zeros(2)], _allocating(mem, 10, 0))  # 25 + 1000 kept for "huge" <= 1100: captured
    assert g.last == "captured"
    mem.on_device = 1000
    g.run("j", [torch.zeros(2)], _allocating(mem, 10, 0))
    g.run("j", [torch.zeros(2)], _allocating(mem, 10, 0))  # 25 + 1000 > 1000: eager
    assert g.last == "eager" and g.stats["capture_skipped_memory"] == 1
    for _ in range(RESERVE_RUNS):  # the group shrank: "huge" no longer runs, its peak stops counting
        g.run("k", [torch.zeros(2)], _prepare(0))
    g.run("j", [torch.zeros(2)], _allocating(mem, 10, 0))
    assert g.last == "captured" and len(g) == 2
    g.invalidate()  # the stacks moved: every peak is forgotten with the graphs
    g.run("huge", [torch.zeros(100)], _allocating(mem, 10, 0))
    g.run("huge", [torch.zeros(100)], _allocating(mem, 10, 0))  # 1250 + 1000 > 1000: eager
    assert g.last == "eager"


def test_a_capture_counts_the_blocks_its_pool_holds_unused():
    """Graphs of a larger group leave their pool's blocks free once it shrank: a new capture reuses
    them (session 20, H100: uncounted, they kept every capture out after the first minute)."""
    mem = FakeMemory(free=100)
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture, memory=mem)
    g.run("big", [torch.zeros(4)], _allocating(mem, 10, 0))
    mem.on_device = 10**6
    g.run("big", [torch.zeros(4)], _allocating(mem, 10, 0))  # captured: the pool holds it
    assert g.last == "captured"
    mem.on_device, mem.cached, mem.pooled = 60, 70, 70  # 70 bytes of the pool unused, none elsewhere
    g.run("j", [torch.zeros(4)], _allocating(mem, 10, 0))  # eager: 40 bytes
    g.run("j", [torch.zeros(4)], _allocating(mem, 10, 0))  # 50 - 70 pooled: nothing new, + 40 kept <= 60
    assert g.last == "captured" and mem.released == 0
    mem.on_device, mem.cached, mem.pooled = 30, 0, 0  # no room in the pool, and 30 free < 40 kept: eager
    g.run("i", [torch.zeros(4)], _allocating(mem, 10, 0))
    g.run("i", [torch.zeros(4)], _allocating(mem, 10, 0))
    assert g.last == "eager" and g.stats["capture_skipped_memory"] == 1


def test_a_new_shape_of_a_warm_class_is_gated_by_its_class_s_bytes_per_element():
    mem = FakeMemory(free=330)
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture, memory=mem)
    g.run("small", [torch.zeros(2)], _allocating(mem, 40, 0), warm="w")  # eager: 80 bytes, 40 per element
    g.run("big", [torch.zeros(5)], _allocating(mem, 40, 0), warm="w")  # 1.25 x 200 + 80 = 330: captured
    assert g.last == "captured" and len(g) == 1
    g.run("bigger", [torch.zeros(6)], _allocating(mem, 40, 0), warm="w")  # 300 + 80 > 330: eager
    assert g.last == "eager" and g.stats["capture_skipped_memory"] == 1


def test_a_new_key_of_a_class_with_no_exact_peak_is_gated_by_the_largest_peak():
    """An evaluation's eager run may peak below the training peak already set: no exact figure for
    its class, so its new keys are gated by the largest peak known."""
    mem = FakeMemory(free=10**6)
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture, memory=mem)
    g.run("train", [torch.zeros(10)], _allocating(mem, 50, 0), warm="t")  # sets the peak: 500 bytes
    g.run("eval", [torch.zeros(2)], _allocating(mem, 50, 0), warm="e")  # 100 bytes, under the peak: bounded
    mem.on_device = 1000
    g.run("eval2", [torch.zeros(2)], _allocating(mem, 50, 0), warm="e")  # 1.25 x 500 + 500 > 1000: eager
    assert g.last == "eager" and g.stats["capture_skipped_memory"] == 1


def test_without_a_memory_reader_nothing_is_gated():
    g = StepGraphs(CPU, min_uses=1, capture=fake_capture)
    g.run("k", [torch.zeros(9)], _prepare(0))
    assert g.memory is None and g.last == "captured"


def test_a_capture_s_end_out_of_memory_counts_as_out_of_memory_not_as_a_broken_capture():
    """torch raises a plain CUDA error ("out of memory") from a capture's end: that shape runs
    eagerly from then on, and graphs stay on."""
    g = StepGraphs(CPU, min_uses=1, capture=failing_capture(RuntimeError("CUDA error: out of memory")))
    x = torch.ones(2)
    assert torch.equal(g.run("k", [x], _prepare(1)), x + 1)
    assert g.enabled and g.stats["capture_oom"] == 1 and not g.failure_trace


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


def test_a_warm_class_captures_new_keys_at_their_first_use():
    """Once a body of a class ran eagerly, a new key of that class is captured at once (min_uses
    applies to the class's first key only); keys of another class still run eagerly first."""
    g = StepGraphs(CPU, min_uses=2, capture=fake_capture)
    x = torch.arange(2.0)
    g.run("a", [x], _prepare(1), warm="train")
    assert len(g) == 0 and g.last == "eager"
    assert torch.equal(g.run("b", [x], _prepare(2), warm="train"), x + 2) and g.last == "captured"
    g.run("c", [x], _prepare(3), warm="eval")
    assert g.last == "eager"
    g.run("d", [x], _prepare(4))  # no class: its own min_uses
    assert g.last == "eager"
    g.invalidate()  # the class stays warm: its kernels are compiled
    g.run("a", [x], _prepare(1), warm="train")
    assert g.last == "captured" and g.stats["eager"] == 3


def test_a_failed_first_use_capture_runs_eagerly_and_twice_makes_the_class_cold():
    fails = {"n": 0}

    def flaky(body, host, device, pool):
        fails["n"] += 1
        raise RuntimeError("operation not permitted when stream is capturing")

    g = StepGraphs(CPU, min_uses=2, capture=flaky)
    x = torch.zeros(1)
    g.run("a", [x], _prepare(0), warm="w")
    for k in ("b", "c"):
        assert torch.equal(g.run(k, [x], _prepare(5), warm="w"), x + 5) and g.last == "eager"
    assert g.enabled and g.stats["cold_capture_failed"] == 2 and fails["n"] == 2
    g.run("d", [x], _prepare(0), warm="w")  # cold again: eager first, no capture tried
    assert fails["n"] == 2 and g.enabled


def test_groups_that_split_their_rows_differently_share_one_graph(base):
    """Retargeted graphs key on the total rows (padded to a coarse bucket), not on each adapter's
    share: after a larger first step (fine buckets, eager), groups of 2+1, 1+2 and 3+1 rows (padded
    to 4) replay one captured step with exactly the eager numbers."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False), _retargeting(base)):
        for i, j in enumerate("abcd"):
            tr.admit(j, rank=2 + 2 * i, alpha=4, lr=1e-2 * (i + 1), seed=i)
        out = []
        for (x, nx), (y, ny) in ((("a", 4), ("b", 4)), (("a", 2), ("b", 1)), (("c", 1), ("d", 2)), (("b", 2), ("a", 1)),
                                 (("d", 3), ("c", 1))):
            out.append(tr.step({x: make_batch(ord(x), nx, 12), y: make_batch(ord(y), ny, 11)}))
        runs.append((out, tr))
    (want, _), (got, graphed) = runs
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-7)  # padded rows change the sums' order only
    assert dict(graphed.graphs.stats) == {"eager": 1, "captured": 1, "replayed": 4}, dict(graphed.graphs.stats)


def test_coarse_buckets_only_under_retargeted_graphs(base):
    from altoruntime.step_inputs import pack_step

    b = {"a": make_batch(0, 3, 90), "b": make_batch(1, 2, 90)}
    fine, coarse = pack_step(b, 0, mean=True), pack_step(b, 0, mean=True, steps=2)
    assert (fine.rows, fine.length) == ((3, 2), 96) and (coarse.rows, coarse.length) == ((3, 5), 128)
    assert coarse.counts == fine.counts and coarse.labels >= fine.labels  # the padding rows have no labels
    assert MultiAdapterTrainer(copy.deepcopy(base), capacity=1)._bucket_steps() is None  # CPU: no graphs
    assert _retargeting(base)._bucket_steps() == 2


def test_evaluations_pad_their_group_to_a_power_of_two_and_share_graphs(base):
    """Under retargeted graphs a 3-adapter evaluation runs as 4 (the last repeated, its numbers
    dropped): groups of 3 and 4 share one graph, with the eager numbers for every adapter (after a
    larger first evaluation, which bounds the padding)."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=False), _retargeting(base)):
        for i, j in enumerate("abcd"):
            tr.admit(j, rank=2 + 2 * i, alpha=4, lr=1e-2, seed=i)
        first = tr.evaluate_tokens({j: make_batch(98, 8, 20) for j in "abcd"})
        val = make_batch(99, 3, 10)
        runs.append(([first] + [tr.evaluate_tokens({j: val for j in g}) for g in ("abc", "abcd", "dcb", "bd")], tr))
    (want, _), (got, graphed) = runs
    for a, b in zip(want, got):
        assert list(b) == list(a)
        for j in a:
            assert (b[j].tokens, b[j].correct) == (a[j].tokens, a[j].correct)
            assert b[j].loss_sum == pytest.approx(a[j].loss_sum, rel=1e-6)
    # the first (eager), then 4 adapters (abc padded: captured at its first use, the class being warm;
    # replayed for abcd and dcb), then 2; a capture's own run counts as a replay
    assert dict(graphed.graphs.stats) == {"eager": 1, "captured": 2, "replayed": 4}, dict(graphed.graphs.stats)


def test_training_groups_pad_to_a_power_of_two_with_phantom_segments(base):
    """A 3-adapter step runs as 4 segments (the 4th: no rows, on an unused slot, so its weight
    gradient is zero): 3- and 4-adapter groups of the same rows share one graph, and every adapter
    trains as eagerly."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=False), _retargeting(base)):
        for i, j in enumerate("abcd"):
            tr.admit(j, rank=2 + 2 * i, alpha=4, lr=1e-2 * (i + 1), seed=i)
        out = []
        for group in ({"a": 2, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1, "d": 1}, {"d": 2, "c": 1, "b": 1},
                      {"b": 2, "d": 2}):
            out.append(tr.step({j: make_batch(ord(j) + len(out), r, 12) for j, r in group.items()}))
        runs.append((out, {j: tr.adapter_weights(j) for j in "abcd"}, tr))
    (want, w_want, _), (got, w_got, graphed) = runs
    for a, b in zip(want, got):
        assert list(b) == list(a) and b == pytest.approx(a, rel=1e-6, abs=1e-7)
    assert_adapters_close(w_want, w_got, rtol=1e-5, atol=1e-7)
    # 4 rows in 4 segments: eager (first), captured, replayed; then 2 adapters: a new shape
    assert dict(graphed.graphs.stats) == {"eager": 1, "captured": 2, "replayed": 3}, dict(graphed.graphs.stats)


def test_shorter_steps_pad_to_their_family_s_widest_shape(base):
    """After a step of 60 tokens, 20- and 33-token steps of the same group size and row bucket pad
    up to it and replay its graph (numbers as eager)."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False), _retargeting(base)):
        tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
        tr.admit("b", rank=2, alpha=4, lr=1e-2, seed=2)
        out = [tr.step({"a": make_batch(i, 2 + (i == 0), n), "b": make_batch(i + 9, 1, n)})
               for i, n in enumerate((60, 60, 60, 20, 33))]
        runs.append((out, tr))
    (want, _), (got, graphed) = runs
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-7)
    assert dict(graphed.graphs.stats) == {"eager": 1, "captured": 1, "replayed": 4}, dict(graphed.graphs.stats)


def test_one_invalidation_per_stack_reallocation(base):
    """New stacks come with zero gradients: the next backward accumulates into them instead of
    allocating them (inside a capture, then moving again), so captured graphs are dropped once
    per reallocation, not twice (6 drops for this script's 3 reallocations before)."""
    tr = _retargeting(base)
    _script(tr)
    assert dict(tr.graphs.stats)["invalidated"] == 3, dict(tr.graphs.stats)
    for layer in tr.store.layers:
        assert layer.A.grad is not None and layer.A.grad.shape == layer.A.shape


def test_accumulated_micro_batches_through_retargeted_graphs_equal_eager(base):
    """Gradient accumulation (lists of micro-batches) under phantom segments, coarse buckets and
    widest shapes: the same losses and adapters as eager steps."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=False), _retargeting(base)):
        for i, j in enumerate("abc"):
            tr.admit(j, rank=2 + 2 * i, alpha=4, lr=1e-2, seed=i)
        out = [tr.step({"a": [make_batch(s, 2, 12), make_batch(s + 1, 1, 30)], "b": make_batch(s + 2, 1, 9),
                        "c": [make_batch(s + 3, 1, 14)] * 3}) for s in range(3)]
        runs.append((out, {j: tr.adapter_weights(j) for j in "abc"}))
    (want, w_want), (got, w_got) = runs
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-7)
    assert_adapters_close(w_want, w_got, rtol=1e-5, atol=1e-7)


def test_padding_never_makes_a_step_larger_than_the_largest_that_ran(base):
    """Coarse buckets bound their memory: a step padded beyond the largest step of its kind that ran
    (tokens or labels) takes the fine buckets instead, so the first, largest steps are not inflated."""
    tr = _retargeting(base)
    tr.calls = []
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    tr.admit("b", rank=2, alpha=4, lr=1e-2, seed=2)
    # a + b rows: 3 (fine: nothing ran yet), 3 (4 padded > 3 that ran), 2 (2 padded), 5 (8 padded > 3)
    for rows in (3, 3, 2, 5):
        tr.step({"a": make_batch(rows, rows - 1, 12), "b": make_batch(rows + 9, 1, 12)})
    assert [c["rows"] for c in tr.calls] == [3, 3, 2, 5], tr.calls
    most = max(c["rows"] * c["length"] for c in tr.calls[:3])
    assert all(c["rows"] * c["length"] <= most for c in tr.calls[1:3])


def test_a_capture_out_of_memory_is_not_retried_for_that_shape():
    """A shape whose capture ran out of memory runs eagerly from then on (until the graphs are
    dropped), also in a warm class, where new shapes are captured at their first use."""
    g = StepGraphs(CPU, min_uses=2, capture=failing_capture(torch.OutOfMemoryError("no room")))
    x = torch.zeros(1)
    g.run("warm-up", [x], _prepare(0), warm="w")
    for _ in range(3):
        assert torch.equal(g.run("k", [x], _prepare(2), warm="w"), x + 2) and g.last == "eager"
    assert g.stats["capture_oom"] == 1 and g.enabled, dict(g.stats)


def _oom_once(tr, times=1):
    """Make the trainer's next step bodies raise out-of-memory `times` times (as a CUDA step might)."""
    real, state = tr._body, {"left": times}

    def body(*a, **k):  # noqa: ANN002, ANN003, ANN202
        if state["left"]:
            state["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(*a, **k)
    tr._body = body


def _left_padded(seed, rows, length):
    from altoruntime.batching import IGNORE

    ids, mask, labels = make_batch(seed, rows, length)
    mask, labels = mask.clone(), labels.clone()
    mask[0, :3], labels[0, :3] = 0, IGNORE  # a hole at the start: not right padding, the masked eager path
    return ids, mask, labels


def test_out_of_memory_halves_give_each_adapter_its_own_loss_with_phantoms(base):
    """An out-of-memory step is retried in halves; under phantom segments each half's losses are its
    real adapters' only (a half of 3 runs as 4 segments), also on the masked eager path."""
    runs = []
    for tr in (MultiAdapterTrainer(copy.deepcopy(base), capacity=8, cuda_graphs=False), _retargeting(base)):
        for i in range(6):
            tr.admit(f"j{i}", rank=2 + i, alpha=4, lr=1e-2, seed=i)
        _oom_once(tr)
        runs.append(tr.step({f"j{i}": _left_padded(i, 2, 10) for i in range(6)}))
    want, got = runs
    assert list(got) == list(want) and got == pytest.approx(want, rel=1e-6), (want, got)


def test_an_out_of_memory_step_first_takes_the_graphs_memory_back_then_runs_whole(base):
    """Graphs hold memory an eager step may need: an out-of-memory step releases them (and the
    allocator's cache) and runs once more with every adapter, with the numbers of a step that
    never ran out of memory, before any split in halves."""
    runs = []
    for oom in (False, True):
        tr = _retargeting(base)
        tr.graphs.memory = FakeMemory(free=10**12)
        tr.calls = []
        for i in range(3):
            tr.admit(f"j{i}", rank=2 + i, alpha=4, lr=1e-2, seed=i)
        for s in range(2):  # the same shape twice: captured
            tr.step({f"j{i}": make_batch(10 * s + i, 2, 10) for i in range(3)})
        assert len(tr.graphs) == 1
        if oom:
            _oom_once(tr)  # the new shape's step
        out = tr.step({f"j{i}": make_batch(50 + i, 1, 14) for i in range(3)})
        runs.append((out, [c["adapters"] for c in tr.calls], dict(tr.graphs.stats)))
    (want, calls_want, _), (got, calls_got, stats) = runs
    assert got == pytest.approx(want, rel=1e-6) and all(tr.status(j) == "active" for j in got)
    assert calls_got == calls_want  # whole: no step split in halves
    assert stats["released"] == 1 and tr.graphs.memory.released == 1


def test_an_out_of_memory_evaluation_takes_the_graphs_memory_back_and_runs_once_more(base):
    runs = []
    for oom in (False, True):
        tr = _retargeting(base)
        tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
        for s in range(2):
            tr.step({"a": make_batch(s, 2, 10)})
        if oom:
            _oom_once(tr)
        runs.append((tr.evaluate({"a": make_batch(7, 3, 12)}), tr.graphs.stats["released"]))
    (want, _), (got, released) = runs
    assert got == pytest.approx(want, rel=1e-6) and released == 1
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, cuda_graphs=False)  # no graphs: nothing to give back
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    _oom_once(tr)
    with pytest.raises(torch.OutOfMemoryError):
        tr.evaluate({"a": make_batch(7, 3, 12)})


def _slot_state_oom_once(tr):
    real, state = tr.store.optim.slot_state, {"left": 1}

    def slot_state(*a, **k):  # noqa: ANN002, ANN003, ANN202
        if state["left"]:
            state["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(*a, **k)
    tr.store.optim.slot_state = slot_state


def test_a_suspend_out_of_memory_takes_the_graphs_memory_back_and_suspends(base):
    tr = _retargeting(base)
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    for s in range(2):
        tr.step({"a": make_batch(s, 2, 10)})
    assert len(tr.graphs) == 1
    want = weight_sums(tr, ["a"])
    _slot_state_oom_once(tr)
    tr.suspend("a")
    assert tr.status("a") == "suspended" and tr.graphs.stats["released"] == 1 and len(tr.graphs) == 0
    tr.resume("a")
    assert weight_sums(tr, ["a"])["a"] == pytest.approx(want["a"])
    plain = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, cuda_graphs=False)  # no graphs: the error stands,
    plain.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)  # and the adapter is as it was
    _slot_state_oom_once(plain)
    with pytest.raises(torch.OutOfMemoryError):
        plain.suspend("a")
    assert plain.status("a") == "active"
    plain.suspend("a")
    assert plain.status("a") == "suspended"


def test_a_suspend_whose_compaction_runs_out_of_memory_compacts_after_the_graphs_give_memory_back(base):
    tr = _retargeting(base)
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    tr.admit("b", rank=4, alpha=8, lr=1e-2, seed=2)
    for s in range(2):
        tr.step({"a": make_batch(s, 2, 10), "b": make_batch(s + 5, 1, 10)})
    assert len(tr.graphs) == 1
    real, calls = tr.store.maybe_compact, []

    def maybe_compact():  # noqa: ANN202
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        real()
    tr.store.maybe_compact = maybe_compact
    tr.suspend("a")
    assert tr.status("a") == "suspended" and calls == [1, 1] and tr.graphs.stats["released"] == 1


def test_one_adapter_out_of_memory_at_a_padded_shape_retries_at_its_exact_size(base):
    tr = _retargeting(base)
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    tr.step({"a": make_batch(0, 4, 30)})  # a larger first step: later steps may pad up to it
    _oom_once(tr)
    loss = tr.step({"a": make_batch(1, 1, 9)})["a"]
    assert math.isfinite(loss) and tr.status("a") == "active"


def test_padding_new_families_to_their_kinds_widest_saves_captures_and_changes_no_number(base):
    """pad_new_families (ALTO_GRAPH_PAD_FAMILIES=1): a family's first step pads up to the longest
    length and most labels per row its kind has run, so the family is not captured again when a
    later step of it is longer; the losses and weights are those of the default packing."""
    runs = {}
    for pad in (False, True):
        tr = _retargeting(base)
        tr.pad_new_families = pad
        tr.calls = []
        for i, (j, r) in enumerate({"a": 4, "b": 2}.items()):
            tr.admit(j, rank=r, lr=1e-2, seed=i)
        out = [tr.step({"a": make_batch(1, 4, 30), "b": make_batch(2, 4, 28)})]  # the long, wide first step
        for k in range(3):  # a smaller family (one adapter, one row), short then long, each shape used twice
            for length in (6, 6, 20, 20):
                out.append(tr.step({"a": make_batch(10 * k + length, 1, length)}))
        runs[pad] = (out, weight_sums(tr, "ab"), tr.graphs.stats["captured"], [c["length"] for c in tr.calls])
    (want, w_want, caps_plain, lens_plain), (got, w_got, caps_pad, lens_pad) = runs[False], runs[True]
    flat = [[v for o in out for v in o.values()] for out in (want, got)]
    assert flat[1] == pytest.approx(flat[0], rel=1e-5)
    for j in w_want:
        assert w_got[j] == pytest.approx(w_want[j], rel=1e-5)
    assert caps_pad < caps_plain, (caps_pad, caps_plain)
    assert len(set(lens_pad[1:])) == 1 < len(set(lens_plain[1:])), (lens_pad, lens_plain)  # one length: the kind's widest


def test_the_pad_families_switch_is_checked_and_named_in_the_paths():
    from altoruntime.trainer import env_paths, trainer_from_env

    model = tiny_llama(hidden=32, intermediate=64, layers=1)
    with pytest.raises(ValueError, match="ALTO_GRAPH_PAD_FAMILIES"):
        trainer_from_env(copy.deepcopy(model), 2, env={"ALTO_GRAPH_PAD_FAMILIES": "yes"})
    assert trainer_from_env(copy.deepcopy(model), 2, env={"ALTO_GRAPH_PAD_FAMILIES": "1"}).pad_new_families
    assert not trainer_from_env(model, 2, env={}).pad_new_families  # off until a GPU measures it
    assert env_paths({"ALTO_GRAPH_PAD_FAMILIES": "1"}) == "lora=auto optim=fused pad_families=1"
