"""Cached Triton launches: after the first call for a specialization, call the compiled kernel.

`Autotuner.run` + `JITFunction.run` spend tens of microseconds of host time per launch (argument
dicts, the autotune key, specializing every argument, the kernel-cache key); with ~6 launches per
LoRA layer and 200+ layers per step that was a large part of a training step. The first call for
a key goes through Triton (autotuning and compiling as usual); we keep the `CompiledKernel` it
returned and the `Config` the autotuner chose, and later calls with the same key call
`CompiledKernel.run` with the argument list `JITFunction.run` would have built (triton 3.6-3.9).

The key holds everything Triton's own keys depend on: the kernel, the current device, each
tensor's dtype and 16-byte alignment, every int argument's value, and the constexprs. Plans live
in a caller-owned dict (the per-step `LoraBatchMeta.launch_cache`), so nothing here is global.
Under TRITON_INTERPRET=1, with ALTO_KERNELS_FAST_LAUNCH=0, or while a Triton launch hook is
registered (profilers), every call takes Triton's own path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from triton import knobs

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FAST_LAUNCH = os.environ.get("ALTO_KERNELS_FAST_LAUNCH", "1") != "0" and not INTERPRET

Grid = Callable[[dict], tuple]


@dataclass(frozen=True)
class Plan:
    """What a direct launch needs: the compiled kernel, the chosen config, and the constexpr values
    (the call's and the config's) that follow the runtime arguments in the signature."""

    kernel: Any  # triton CompiledKernel; None: this key always takes Triton's path
    config: Any  # triton.Config
    tail: tuple


_SLOW = Plan(None, None, ())


def _key(fn: object, device: int, args: tuple, consts: dict) -> tuple:
    parts: list = [fn, device]
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(a.dtype)
            parts.append(a.data_ptr() % 16 == 0)
        else:
            parts.append(a)
    parts.extend(consts.values())
    return tuple(parts)


def _make_plan(fn: Any, kernel: Any, n_args: int, consts: dict) -> Plan:
    """Plan from the kernel Triton's path just launched (`_SLOW` if it does not look as expected)."""
    if hasattr(kernel, "result"):  # async compile future
        kernel = kernel.result()
    config = getattr(fn, "best_config", None)
    names = getattr(fn, "arg_names", None)
    if config is None or names is None or not all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
        return _SLOW
    values = {**consts, **config.kwargs}
    if not all(n in values for n in names[n_args:]):
        return _SLOW
    return Plan(kernel, config, tuple(values[n] for n in names[n_args:]))


def _hooks_active() -> bool:
    rt = knobs.runtime
    return any(getattr(h, "calls", h) for h in (rt.launch_enter_hook, rt.launch_exit_hook))


def _raw_stream(device: int) -> int:
    return torch.cuda.current_stream(device).cuda_stream


_get_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or _raw_stream


def launch(fn: Any, grid: Grid, args: tuple, consts: dict, cache: dict | None, config: Any = None) -> None:
    """Launch the autotuned kernel `fn` on `grid` (a function of the config's kwargs).

    args: the runtime (non-constexpr) arguments in signature order; consts: the call's constexprs
    as keywords; cache: the dict plans live in (None: Triton's path every time); config: a
    `triton.Config` to run instead of the autotuner's choice (tests of every config)."""
    if config is not None:
        if config.pre_hook is not None:
            config.pre_hook(dict(zip(fn.arg_names, args)))
        fn.fn[grid](*args, **consts, **config.all_kwargs())
        return
    if cache is None or not FAST_LAUNCH or _hooks_active():
        fn[grid](*args, **consts)
        return
    device = torch.cuda.current_device()
    key = _key(fn, device, args, consts)
    plan = cache.get(key)
    if plan is None or plan.kernel is None:
        kernel = fn[grid](*args, **consts)
        if plan is None and kernel is not None:  # None: deferred, not compiled (compile_ahead.py)
            cache[key] = _make_plan(fn, kernel, len(args), consts)
        return
    config, k = plan.config, plan.kernel
    if config.pre_hook is not None:
        config.pre_hook(dict(zip(fn.arg_names, args)))
    g = grid(config.kwargs)
    g = (g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1)
    stream = _get_stream(device)
    full = (*args, *plan.tail)
    k.run(g[0], g[1], g[2], stream, k.function, k.packed_metadata, k.launch_metadata(g, stream, *full),
          knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *full)
