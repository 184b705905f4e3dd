"""On CUDA: captured steps equal eager steps (Triton kernels, a real capture), across group changes."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import assert_adapters_close
from tests.altoruntime.test_step_graphs import _script

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_steps_equal_eager_steps_on_cuda():
    base = tiny_llama(seed=0).cuda()
    eager = MultiAdapterTrainer(copy.deepcopy(base), capacity=2, cuda_graphs=False)
    graphed = MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    want, w_want = _script(eager)
    got, w_got = _script(graphed)
    stats = graphed.graphs.stats
    assert graphed.graphs.disabled is None, graphed.graphs.failure_trace
    assert stats["replayed"] > stats["captured"] > 0, dict(stats)
    for a, b in zip(want, got):
        if isinstance(a, dict) and a and isinstance(next(iter(a.values())), float):
            assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
        else:
            for j in a:
                assert b[j].tokens == a[j].tokens and b[j].correct == a[j].correct
                assert b[j].loss_sum == pytest.approx(a[j].loss_sum, rel=1e-4)
    assert_adapters_close(w_want, w_got, rtol=1e-3, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_graph_retargeted_to_other_groups_equals_eager_on_cuda():
    """One captured step and one captured evaluation serve groups of the same shape (Triton
    kernels read the rewritten slot, rank and scale tables)."""
    from tests.altoruntime._batches import make_batch

    base = tiny_llama(seed=0).cuda()
    runs = []
    for graphs in (False, True):
        tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=graphs)
        assert tr.retarget_graphs == graphs or not graphs
        for i, (j, r) in enumerate({"a": 4, "b": 2, "c": 8, "d": 2}.items()):
            tr.admit(j, rank=r, alpha=2 * r + i, lr=1e-2 * (i + 1), seed=i)
        val = make_batch(99, 3, 10)
        out = []
        for x, y in ("ab", "ab", "ab", "cd", "ca", "db"):
            out.append(tr.step({x: make_batch(ord(x), 2, 12), y: make_batch(ord(y), 1, 11)}))
            out.append({j: r.loss_sum for j, r in tr.evaluate_tokens({x: val, y: val}).items()})
        runs.append((out, tr))
    (want, _), (got, graphed) = runs
    assert graphed.graphs.disabled is None, graphed.graphs.failure_trace
    assert graphed.graphs.stats["replayed"] >= 6, dict(graphed.graphs.stats)
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphs_retargeted_to_other_row_splits_and_padded_evaluations_equal_eager_on_cuda():
    """Steps whose adapters split the rows differently replay one graph (the segment bounds and
    the padded schedule rewritten); evaluations of 3 adapters run padded to 4 with repeats."""
    from tests.altoruntime._batches import make_batch

    base = tiny_llama(seed=0).cuda()
    runs = []
    for graphs in (False, True):
        tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=graphs)
        for i, j in enumerate("abcd"):
            tr.admit(j, rank=2 + 2 * i, alpha=4, lr=1e-2 * (i + 1), seed=i)
        val = make_batch(99, 3, 10)
        out = []
        for (x, nx), (y, ny) in ((("a", 2), ("b", 1)), (("c", 1), ("d", 2)), (("b", 2), ("a", 1)),
                                 (("d", 3), ("c", 1)), (("a", 1), ("c", 3))):
            out.append(tr.step({x: make_batch(ord(x), nx, 12), y: make_batch(ord(y), ny, 11)}))
            out.append({j: r.loss_sum for j, r in tr.evaluate_tokens({j: val for j in "abc"}).items()})
        runs.append((out, tr))
    (want, _), (got, graphed) = runs
    assert graphed.graphs.disabled is None, graphed.graphs.failure_trace
    assert graphed.graphs.stats["replayed"] >= 6 and graphed.graphs.stats["cold_capture_failed"] == 0, \
        dict(graphed.graphs.stats)
    for a, b in zip(want, got):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_failed_capture_does_not_spoil_later_captures():
    """A body that cannot be captured (here a host sync; in session 18's diag_host a kernel compiling
    inside a first-use capture) fails its capture; later bodies still capture (a capture whose end
    failed leaves its memory pool recording, so a fresh pool is taken) and the first cause is kept."""
    from altoruntime.step_graphs import StepGraphs

    graphs = StepGraphs(torch.device("cuda"), min_uses=1)
    x = torch.ones(4, device="cuda")

    def syncs(t):  # noqa: ANN001, ANN202
        torch.cuda.synchronize()  # not permitted while the stream captures
        return t * 2

    def doubles(t):  # noqa: ANN001, ANN202
        return t * 2

    for key in ("a", "b"):  # min_uses=1: each captures at its first use; "a"'s capture fails (eager
        out = graphs.run(key, (x,), lambda: (syncs, None))  # instead) and turns graphs off: "b" runs eager
        assert torch.equal(out, x * 2)
    assert graphs.failure_trace and graphs.disabled and graphs.stats["captured"] == 0, dict(graphs.stats)
    first = graphs.failure_trace
    graphs.disabled = None  # turned on again, a capturable body captures into the fresh pool
    for _ in range(3):
        out = graphs.run("c", (x,), lambda: (doubles, None))
    assert torch.equal(out, x * 2)
    assert graphs.stats["captured"] == 1 and graphs.stats["replayed"] >= 2, dict(graphs.stats)
    assert graphs.failure_trace == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_capture_reports_its_body_s_error_and_an_empty_graph():
    """The body's own error comes out of a capture (not the CUDA error ending the broken capture
    raises), so an out-of-memory body is handled as one; a body that launches nothing is refused
    (its replay would write nothing) and runs eagerly."""
    from altoruntime.step_graphs import EmptyCaptureError, StepGraphs, capture_cuda

    x = torch.ones(4, device="cuda")

    def runs_out(t):  # noqa: ANN001, ANN202
        t = t * 2  # a kernel, then the allocator gives up
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    with pytest.raises(torch.OutOfMemoryError):
        capture_cuda(runs_out, (x,), torch.device("cuda"), None)
    with pytest.raises(EmptyCaptureError):
        capture_cuda(lambda t: t, (x,), torch.device("cuda"), None)
    graphs = StepGraphs(torch.device("cuda"), min_uses=1)
    out = graphs.run("a", (x,), lambda: ((lambda t: t), None))
    assert torch.equal(out, x) and graphs.stats["captured"] == 0
    assert "EmptyCaptureError" in graphs.failure_trace
    graphs.disabled = None
    for _ in range(2):
        assert torch.equal(graphs.run("b", (x,), lambda: ((lambda t: t * 3), None)), x * 3)
    assert graphs.stats["captured"] == 1, dict(graphs.stats)


def _temporary_64mib(t):  # noqa: ANN001, ANN202 - a body with a 64-MiB temporary and a small output
    return (t.repeat(16 * 1024) * 2).view(-1, 1024).sum(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_pool_s_unused_blocks_are_counted_and_reused_by_the_next_capture():
    """A capture's temporaries stay in its private pool, unused once it ended: the gate counts them
    as room, and the next capture into that pool, on its stream, takes them rather than new memory
    (with a new stream per capture, session 20, every capture took fresh memory)."""
    from altoruntime.step_graphs import CudaMemory, GraphPool, capture_cuda

    device = torch.device("cuda")
    memory, pool = CudaMemory(device), GraphPool.new(device)
    x = torch.ones(1024, device=device)
    held = torch.empty(64 << 20, dtype=torch.uint8, device=device)  # the default pool's: not counted
    del held
    assert memory.pool_free(pool) == 0
    first = capture_cuda(_temporary_64mib, (x,), device, pool)
    assert torch.equal(first.replay((x.cpu(),)), x * 2 * 16 * 1024)
    assert memory.pool_free(pool) >= 64 << 20
    reserved = torch.cuda.memory_reserved(device)
    second = capture_cuda(_temporary_64mib, (x,), device, pool)
    assert torch.cuda.memory_reserved(device) - reserved < 32 << 20  # the first one's blocks, reused
    assert torch.equal(second.replay((x.cpu(),)), first.replay((x.cpu(),)))
    other = GraphPool(pool.handle, torch.cuda.Stream(device))  # the same pool on another stream: fresh memory
    reserved = torch.cuda.memory_reserved(device)
    capture_cuda(_temporary_64mib, (x,), device, other)
    assert torch.cuda.memory_reserved(device) - reserved >= 64 << 20
