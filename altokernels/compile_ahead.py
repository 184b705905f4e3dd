"""Compile a step's Triton kernels in parallel, ahead of its first real run.

A cold process compiles every kernel specialization its first step meets, one after another, on
the thread that issues the step (the H200 e2e run of session 11: the first step took 11 s). Here
the caller runs the step once more before it, inside `deferred()`: a Triton kernel that is not
compiled yet is then neither compiled nor launched, and its specialization is recorded (Triton's
`jit_cache_hook`); `compile_all` compiles what was recorded on a thread pool (Triton's
`AsyncCompileMode` and `JITFunction.preload`), and the real step finds every kernel compiled.
Compiling releases the GIL for most of its time (MLIR, LLVM, ptxas): 6 of the shrink kernel's
specializations cross-compiled for sm_90 on this project's 2-core CPU took 2.97 s one after
another and 1.67 s on 2 threads.

The deferred run's outputs are garbage (a skipped kernel writes nothing): its caller discards
them and puts back what the run touched (gradients, the RNG). Only the thread that entered
`deferred()` defers. `unavailable()` says why it cannot be used: under the interpreter, while
autotuning is on (a deferred kernel would be timed as free and its config chosen on that), while
another `jit_cache_hook` is set, or on a Triton without these hooks.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


@dataclass
class Deferred:
    """The specializations a deferred run met, once each: (JITFunction, Triton's serialized
    specialization data)."""

    specs: list[tuple[Any, str]] = field(default_factory=list)
    seen: set = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.specs)


def unavailable() -> str | None:
    """Why compiling ahead cannot be used in this process (None: it can)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "the Triton interpreter compiles nothing"
    if os.environ.get("ALTO_KERNELS_AUTOTUNE", "0") == "1":
        return "autotuning is on (a deferred kernel would be timed as free)"
    try:
        from triton import knobs
        from triton.runtime import _async_compile  # noqa: F401
        from triton.runtime.jit import JITFunction
    except ImportError as e:
        return f"this Triton lacks the hooks it needs ({e})"
    if not hasattr(JITFunction, "preload") or not hasattr(knobs.runtime, "jit_cache_hook"):
        return "this Triton lacks JITFunction.preload or knobs.runtime.jit_cache_hook"
    if knobs.runtime.jit_cache_hook is not None:
        return "another jit_cache_hook is set"
    return None


def autograd_threads(device: Any) -> set[int]:
    """The idents of the threads autograd runs `device`'s backward on, learnt from a one-element
    backward (CUDA: the engine's worker thread for the device, the same for every backward; CPU:
    the calling thread)."""
    import torch

    seen: set[int] = set()
    with torch.enable_grad():  # (an evaluation's deferred run comes under no_grad)
        x = torch.zeros(1, device=device, requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: seen.add(threading.get_ident()))
        y.sum().backward()
    return seen


@contextmanager
def deferred(threads: Iterable[int] = ()) -> Iterator[Deferred]:
    """Inside: on this thread and on `threads` (idents), a Triton kernel not yet compiled is
    skipped (not compiled, not launched; its launch returns None) and its specialization recorded
    in the yielded `Deferred`."""
    from triton import knobs

    out = Deferred()
    mine = {threading.get_ident(), *threads}

    def hook(*, key: Any, fn: Any, compile: dict, **_: Any) -> bool | None:  # noqa: A002
        data = compile.get("specialization_data")
        if threading.get_ident() not in mine or data is None:
            return None  # another thread, or a Triton that does not serialize: compile as usual
        tag = (id(fn.jit_function), str(key))
        if tag not in out.seen:
            out.seen.add(tag)
            out.specs.append((fn.jit_function, data))
        return True

    before = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        yield out
    finally:
        knobs.runtime.jit_cache_hook = before


def compile_all(found: Deferred, workers: int | None = None) -> dict:
    """Compile the recorded specializations on `workers` threads (default: one per CPU, at most
    one per kernel) into each kernel's in-memory cache (and Triton's disk cache), then build their
    launchers there too (`warm_launcher`). A kernel that fails to compile here is left to compile
    when it is first launched. Returns {"kernels", "failed", "workers", "seconds"}."""
    from triton.runtime._async_compile import AsyncCompileMode

    n = len(found.specs)
    if n == 0:
        return {"kernels": 0, "failed": 0, "workers": 0, "seconds": 0.0}
    workers = max(1, min(n, workers or os.cpu_count() or 1))
    t0 = time.perf_counter()
    failed = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="alto-compile") as pool:
        try:
            mode = AsyncCompileMode(pool, ignore_errors=True)  # a failed compile raises nothing at exit
        except TypeError:  # Tritons before the argument
            mode = AsyncCompileMode(pool)
        compiled = []
        try:
            with mode:
                for fn, data in found.specs:
                    try:
                        compiled.append(fn.preload(data))
                    except Exception:  # noqa: BLE001 - compiled at its first launch instead
                        failed += 1
        except Exception:  # noqa: BLE001 - a compile failed at exit (older Triton): the rest finished
            failed += 1
        list(pool.map(warm_launcher, compiled))
    return {"kernels": n, "failed": failed, "workers": workers, "seconds": round(time.perf_counter() - t0, 3)}


def warm_launcher(kernel: Any) -> None:
    """Build the launcher of a compiled kernel (a future of one is waited for) and drop it: where
    Triton compiles a C launcher per kernel signature with the system's C compiler (Triton 3.6
    does; 3.9 has one generic launcher, and this costs nothing), the build lands in Triton's disk
    cache, and the kernel's first launch loads it from there. Anything that fails is left to that
    first launch."""
    try:
        from triton.runtime import driver

        if hasattr(kernel, "result"):  # AsyncCompileMode's future
            kernel = kernel.result()
        if kernel is not None and hasattr(kernel, "src") and hasattr(kernel, "metadata"):
            driver.active.launcher_cls(kernel.src, kernel.metadata)
    except Exception:  # noqa: BLE001 - the first launch builds it as usual
        pass


class CompileAhead:
    """What a trainer calls to compile a step kind's kernels ahead of its first run (`deferred`,
    then `compile_all`); `runs` keeps each compile's figures. Tests pass a subclass."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers
        self.runs: list[dict] = []

    def deferred(self, device: Any = None):  # noqa: ANN201 - a context manager yielding a Deferred
        """`deferred` on this thread and on the threads autograd runs `device`'s backward on."""
        return deferred(autograd_threads(device) if device is not None else ())

    def compile_all(self, found: Deferred) -> dict:
        out = compile_all(found, self.workers)
        self.runs.append(out)
        return out
