"""CUDA graphs of fused steps, one per shape bucket, in a bounded cache.

A fused multi-adapter step launches thousands of small kernels (per LoRA layer: shrink, expand,
their backward and weight-gradient reductions), so without graphs the GPU waits on the Python
host. A step body whose device work is fixed by its key (the adapters' slots, ranks and scales,
rows per adapter, the length and label buckets: altoruntime/step_inputs.py) is captured once and
replayed: its inputs are copied into static buffers, one `replay` launches the whole step.

Policy: a key runs eagerly the first `min_uses - 1` times (that eager run also compiles and
autotunes the Triton kernels, which must not happen inside a capture) and is captured at its
`min_uses`-th use. A key of a *warm* class (callers name it: e.g. training or evaluation bodies,
which launch the same kernels at every shape) is captured at its first use once any key of that
class ran eagerly: a run meets dozens of shapes, and an eager run before each capture cost as much
as the capture (H200, python_docs e2e, session 11: 154 eager runs and 99 captures took 47 of the 52
s of fused calls; replays ~20 ms each). A first-use capture that fails runs eagerly instead (the
class goes cold after two such failures); at most `max_graphs` graphs are kept (least recently used
dropped). All graphs share one memory pool, captured on one stream (`GraphPool`: a capture reuses
what earlier captures freed): replays never overlap and each graph's outputs are read before the
next replay. A capture that fails (an op that syncs with the host, an out-of-memory) turns graphs
off for this cache, with the reason kept in `disabled`, and the step runs eagerly: graphs are an
optimization, never a new way to fail. `invalidate()` drops every graph: callers do it whenever a
tensor a graph points into is reallocated (the adapter stacks grow or compact); `release()` also
gives their memory back (a caller's answer to an out-of-memory step).

Memory: a capture allocates its tensors in the graphs' private pool, beside the allocator's cache
for eager steps, and a capture that runs out of memory strands what it took (torch releases a
pool only for a capture that ended; H100, session 19: a 60-adapter SmolLM2 group's failed captures
held 58 GiB, after which every eager step ran out of memory and every adapter failed). So each
class's eager peak is measured, and a capture is tried only where that much (with a margin) fits,
in the pool's unused blocks (a capture reuses them: the graphs' replays never overlap) and on the
device, beside the largest eager peak of the last `RESERVE_RUNS` runs (eager steps and the
adapters' state cannot use the pool); otherwise the step runs eagerly. Room for the peaks of the
whole run instead kept an 80-GB H100 from capturing once its group had shrunk from 60 adapters
(`results/device_h100/session20/`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import traceback
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from altosim.interrupts import deferred_interrupts

Body = Callable[..., Any]


@dataclass
class Captured:
    """One captured body: its static inputs, its graph and its (static) output."""

    graph: Any
    inputs: tuple[torch.Tensor, ...]
    output: Any
    keep: Any = None  # objects the graph's kernels point into (e.g. the step's metadata)

    def replay(self, host: Sequence[torch.Tensor]) -> Any:
        for dst, src in zip(self.inputs, host):
            dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.output


@dataclass(frozen=True)
class GraphPool:
    """A private memory pool and the one side stream its captures run on. The allocator reuses a
    free block only for an allocation on the stream that freed it, so graphs share their pool's
    memory only when captured on one stream, as `torch.cuda.graph` captures on one default stream
    (session 20: with a new stream per capture each capture took fresh memory)."""

    handle: Any
    stream: Any

    @classmethod
    def new(cls, device: torch.device) -> "GraphPool":
        return cls(torch.cuda.graph_pool_handle(), torch.cuda.Stream(device))

    def capturing(self) -> bool:
        """Whether its stream is still capturing (a capture whose end failed)."""
        with torch.cuda.stream(self.stream):
            return torch.cuda.is_current_stream_capturing()


def capture_cuda(body: Body, inputs: Sequence[torch.Tensor], device: torch.device, pool: GraphPool | None) -> Captured:
    """Capture `body(*static_inputs)` as a CUDA graph (inputs copied to fresh device buffers), into
    `pool` on its stream (None: the default pool, on a new side stream).

    `torch.cuda.graph` empties the allocator's cache at every capture (cudaMalloc again after);
    this captures on a side stream as it does, without that."""
    static = tuple(torch.empty(t.shape, dtype=t.dtype, device=device) for t in inputs)
    for dst, src in zip(static, inputs):
        dst.copy_(src)
    graph = torch.cuda.CUDAGraph()
    side = pool.stream if pool is not None else torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), deferred_interrupts():  # a capture cut short would leave the stream capturing
        graph.capture_begin(*(() if pool is None else (pool.handle,)))
        try:
            out = body(*static)
        except BaseException:  # the body's error is the cause: ending the broken capture may raise its own
            with contextlib.suppress(Exception):
                end_capture(graph)
            raise
        empty = end_capture(graph)
    if empty:
        raise EmptyCaptureError("the capture recorded no kernels: a replay would leave the outputs unwritten")
    torch.cuda.current_stream(device).wait_stream(side)
    return Captured(graph, static, out)


def end_capture(graph: Any) -> bool:
    """End `graph`'s capture; True where it recorded no work. torch only warns about that (and a
    replay then does nothing); other warnings pass on as they are."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.capture_end()
    empty = False
    for w in caught:
        if "graph is empty" in str(w.message).lower():
            empty = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return empty


class EmptyCaptureError(RuntimeError):
    """A capture ended without recording any work: replayed, it would leave the step's outputs
    unwritten (H100, session 19: a 60-adapter step's capture ended empty among captures that ran
    out of memory)."""


def _out_of_memory(e: BaseException) -> bool:
    """torch's OutOfMemoryError, or the CUDA error a capture's end raises for the same cause."""
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _elements(host: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() for t in host)


class CudaMemory:
    """The device's memory as the capture gate reads it (tests pass a stand-in)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        """The allocator's peak so far (never reset here: `alto profile` reads it)."""
        return torch.cuda.max_memory_allocated(self.device)

    def free(self) -> tuple[int, int]:
        """(free on the device, cached by the allocator but unallocated)."""
        return torch.cuda.mem_get_info(self.device)[0], torch.cuda.memory_reserved(self.device) - self.allocated()

    def pool_free(self, pool: GraphPool) -> int:
        """Bytes that the private `pool` holds unused: a capture into it (on its stream) allocates there first."""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            segments = torch.cuda.memory_snapshot()
        except (RuntimeError, TypeError):  # an allocator without snapshots: count none
            return 0
        return sum(s["total_size"] - s["active_size"] for s in segments
                   if s.get("device", index) == index and tuple(s.get("segment_pool_id", ())) == tuple(pool.handle))

    def release(self, collect: bool = True) -> None:
        """Give the allocator's unused cache back to the device; `collect`: first free what only
        reference cycles still hold (a failed capture's traceback keeps its frames' tensors; a
        collection can take tens of ms, so the capture gate skips it)."""
        if collect:
            gc.collect()
        torch.cuda.empty_cache()


CAPTURE_MARGIN = 1.25  # a capture is tried where this many times its class's eager peak is available
RESERVE_RUNS = 16  # the eager peaks of this many latest runs are kept free beside the graphs


class StepGraphs:
    """Captured step bodies by key (see the module docstring)."""

    def __init__(self, device: torch.device, enabled: bool = True, min_uses: int = 2, max_graphs: int = 32,
                 capture: Callable[[Body, Sequence[torch.Tensor], torch.device, Any], Captured] | None = None,
                 memory: Any = None) -> None:
        """capture: how a body is captured (default: a CUDA graph; tests pass a fake one).
        memory: what the capture gate reads (default: the CUDA device's; None off CUDA: no gate)."""
        if min_uses < 1:
            raise ValueError(f"min_uses: must be >= 1, got {min_uses}")
        if max_graphs < 1:
            raise ValueError(f"max_graphs: must be >= 1, got {max_graphs}")
        self.device = device
        self.min_uses, self.max_graphs = min_uses, max_graphs
        self.capture = capture or capture_cuda
        on_cuda = device.type == "cuda" and torch.cuda.is_available()
        self.disabled: str | None = None if (enabled and (on_cuda or capture is not None)) else "off"
        self._pool = GraphPool.new(device) if on_cuda and self.disabled is None and capture is None else None
        self._graphs: OrderedDict[Hashable, Captured] = OrderedDict()
        self._seen: Counter = Counter()
        self._warm: set = set()  # classes whose bodies ran eagerly (their kernels are compiled)
        self._never: set = set()  # keys whose capture ran out of memory (until the next invalidate)
        self._cold_failures = 0  # first-use captures that failed (2: no more first-use captures)
        self.stats = Counter()  # eager / captured / replayed / evicted / invalidated / capture_oom / cold_capture_failed
        self.failure_trace = ""  # the first failed capture's traceback (for a bug report)
        self.memory = memory if memory is not None else (CudaMemory(device) if self._pool is not None else None)
        self._need: dict = {}  # key -> bytes its eager run allocated at its peak, since the last invalidate
        self._eager_at: dict = {}  # key -> the run (a count of `run` calls) of its latest eager run
        self._runs = 0
        self._rate: dict = {}  # class -> the most such bytes per input element of its eager runs
        self.last = ""  # how the last `run` went: "eager", "captured" or "replayed"

    @property
    def enabled(self) -> bool:
        return self.disabled is None

    def __len__(self) -> int:
        return len(self._graphs)

    def invalidate(self) -> None:
        """Drop every graph (a tensor they point into is about to move) and the use counts."""
        if self._graphs:
            self.stats["invalidated"] += 1
        self._graphs.clear()
        self._seen.clear()
        self._never.clear()
        self._need.clear()  # (the classes' rates stay: a new key is gated by them)
        self._eager_at.clear()

    def run(self, key: Hashable, host: Sequence[torch.Tensor], prepare: Callable[[], tuple[Body, Any]],
            on_replay: Callable[[Any], None] | None = None, warm: Hashable | None = None) -> Any:
        """body(*device copies of `host`), replayed from a graph when one is captured for `key`.

        prepare: called only when the body must run or be captured (not on a replay); returns the
        body and what its kernels point into besides the inputs (kept with the graph).
        on_replay: called with that kept object before each replay (to write this use's values
        into it, when the key leaves them out).
        warm: the key's class (see the module docstring); None: the key is its own class."""
        self._runs += 1
        if self.disabled is not None:
            return self._eager(host, prepare()[0])
        hit = self._graphs.get(key)
        if hit is not None:
            self._graphs.move_to_end(key)
            self.stats["replayed"] += 1
            self.last = "replayed"
            if on_replay is not None:
                on_replay(hit.keep)
            return hit.replay(host)
        if key in self._never:
            return self._eager(host, prepare()[0], warm if warm is not None else key, key)
        self._seen[key] += 1
        body, keep = prepare()
        cls = warm if warm is not None else key
        first_use = self._seen[key] < self.min_uses
        if first_use and not (warm is not None and warm in self._warm and self._cold_failures < 2):
            if warm is not None:
                self._warm.add(warm)
            return self._eager(host, body, cls, key)
        if not self._fits(cls, key, host):  # a capture would likely run out of memory (and strand what it took)
            self.stats["capture_skipped_memory"] += 1
            return self._eager(host, body, cls, key)
        cap = None
        try:
            cap = self._capture(body, host)
        except Exception as e:  # noqa: BLE001 - a failed capture: eager this time (below, once its frames are gone)
            oom = _out_of_memory(e)
            if oom:  # this shape does not fit twice (eager + pool): never capture it
                self._never.add(key)
                self.stats["capture_oom"] += 1
            else:
                self._note_failure(e, first_use)
        if cap is None:
            self._after_failure()
            return self._eager(host, body, cls, key)
        cap.keep = keep
        self._graphs[key] = cap
        self.stats["captured"] += 1
        self.last = "captured"
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
            self.stats["evicted"] += 1
        self.stats["replayed"] += 1
        return cap.replay(host)

    def _note_failure(self, e: Exception, first_use: bool) -> None:
        """A capture failed for another reason than memory: a first-use capture (e.g. a kernel
        compiling inside it) costs only this step; any other turns graphs off for this process."""
        self.failure_trace = self.failure_trace or "".join(traceback.format_exception(e))  # the first: the cause
        if self._pool is not None:  # a capture whose end failed leaves its pool "recording": every later
            self._pool = GraphPool.new(self.device)  # capture into it would fail (H200, session 18)
        if first_use:
            self._cold_failures += 1
            self.stats["cold_capture_failed"] += 1
        else:
            self.disabled = f"capture failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            self._graphs.clear()

    def release(self) -> None:
        """Drop every graph and give their memory, and the allocator's unused cache, back to the
        device (an out-of-memory step's first answer: graphs must never be why a step fails).
        With no graph held, only the cache goes back (what the graphs learnt stays)."""
        if self._graphs:
            self.stats["released"] += 1
            self.invalidate()
        if self.memory is not None:
            self.memory.release()

    def _fits(self, cls: Hashable, key: Hashable, host: Sequence[torch.Tensor]) -> bool:
        """Whether a capture of `key` fits and leaves room for eager work: CAPTURE_MARGIN x its
        eager peak (a key never run eagerly: its class's most bytes per input element times its
        inputs' elements, or the largest peak where its class has no exact one), less what the
        graphs' pool holds unused, plus the largest eager peak of the last RESERVE_RUNS runs must
        be free on the device, after the allocator's unused cache goes back if need be. (The pool
        serves only captures: the e2e run on an 80-GB H100, session 19, crashed when graphs held
        51 GiB and parking an adapter's state found no room.)"""
        need = self._need.get(key)
        if need is None:  # a new key: its class's rate, else (no exact peak of its class yet) the largest need
            need = self._rate[cls] * _elements(host) if cls in self._rate else max(self._need.values(), default=None)
        if self.memory is None or need is None:
            return True
        take = need * CAPTURE_MARGIN
        recent = [k for k, at in self._eager_at.items() if self._runs - at < RESERVE_RUNS and k in self._need]
        keep = max((self._need[k] for k in recent), default=0)
        free, cached = self.memory.free()
        if take + keep <= free:
            return True
        pooled = self.memory.pool_free(self._pool) if self._graphs else 0  # (a pool with no graph is replaced)
        grow = max(0.0, take - pooled)
        if grow + keep <= free:
            return True
        if grow + keep > free + cached - pooled:
            return False
        self.memory.release(collect=False)
        return grow + keep <= self.memory.free()[0]

    def _after_failure(self) -> None:
        """After a failed capture: its tensors (held by the exception's frames) and the eager cache
        go, and a pool whose stream was left capturing is replaced (its next capture would fail)."""
        if self._pool is not None and self._pool.capturing():
            self._pool = GraphPool.new(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.memory is not None:
            self.memory.release()

    def _capture(self, body: Body, host: Sequence[torch.Tensor]) -> Captured:
        """Capture into the shared pool; a pool whose graphs are all gone is released by the
        allocator, so a new one is taken then."""
        if not self._graphs and self._pool is not None:
            self._pool = GraphPool.new(self.device)
        return self.capture(body, host, self.device, self._pool)

    def _eager(self, host: Sequence[torch.Tensor], body: Body, cls: Hashable = None, key: Hashable = None) -> Any:
        """Run the body eagerly; where a memory reader is set, record the key's peak allocation and,
        where the run set a new peak (only then is it exact), its class's bytes per input element."""
        self.stats["eager"] += 1
        self.last = "eager"
        if self.memory is None or self.disabled is not None:
            return body(*(t.to(self.device, non_blocking=True) for t in host))
        self._eager_at[key] = self._runs
        base, before = self.memory.allocated(), self.memory.peak()
        out = body(*(t.to(self.device, non_blocking=True) for t in host))
        after, elements = self.memory.peak(), max(1, _elements(host))
        if after > before:  # exact: this run set the peak
            self._need[key] = after - base
            self._rate[cls] = max(self._rate.get(cls, 0.0), self._need[key] / elements)
        elif key not in self._need:  # bounded by the old peak; the class's rate may say less
            self._need[key] = min(before - base, self._rate.get(cls, math.inf) * elements)
        return out
