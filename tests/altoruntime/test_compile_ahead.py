"""Compiling a step kind's Triton kernels ahead of its first run (altokernels/compile_ahead.py):
the deferred run leaves no trace in training (RNG, gradients, the call log), the hook defers only
its own thread's kernels, and a failed compile is left to the kernel's first launch."""

from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from triton import knobs

from altokernels.compile_ahead import (CompileAhead, Deferred, autograd_threads, compile_all, deferred, unavailable,
                                       warm_launcher)
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer, trainer_from_env
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import assert_step_results_close, run_interpreted


class RunsEverything(CompileAhead):
    """Defers nothing: the 'deferred' run is a full real run, so any state it leaves behind (dropout
    RNG drawn, gradients accumulated) shows in the training that follows."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = 0

    @contextmanager
    def deferred(self, device=None):  # noqa: ANN001, ANN201
        self.entered += 1
        yield Deferred()

    def compile_all(self, found: Deferred) -> dict:
        out = {"kernels": len(found), "failed": 0, "workers": 0, "seconds": 0.0}
        self.runs.append(out)
        return out


def _train(ahead: CompileAhead | None, base: torch.nn.Module) -> tuple[list, dict, list]:
    tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=4, cuda_graphs=False)
    tr.compile_ahead = ahead
    tr.calls = []
    for i, (j, r, p) in enumerate((("a", 4, 0.1), ("b", 2, 0.0), ("c", 8, 0.3))):
        tr.admit(j, rank=r, lr=1e-2, seed=i, dropout=p)
    torch.manual_seed(5)  # the dropout masks come from torch's generator
    res = [tr.step({j: make_batch(10 * k + i, 2, 8) for i, j in enumerate("abc")}) for k in range(3)]
    res.append(tr.evaluate({j: make_batch(90 + i, 2, 8) for i, j in enumerate("abc")}))
    res.append(tr.step({"a": [make_batch(40, 1, 8), make_batch(41, 2, 8)], "c": make_batch(42, 1, 8)}))
    weights = {j: [(a.clone(), b.clone()) for _, a, b in tr.adapter_weights(j)] for j in "abc"}
    return res, weights, tr.calls


def test_the_deferred_run_leaves_training_as_it_was():
    base = tiny_llama(hidden=32, intermediate=64, layers=2)
    ahead = RunsEverything()
    ref, ref_w, ref_calls = _train(None, base)
    got, got_w, calls = _train(ahead, base)
    assert ahead.entered == 2 and len(ahead.runs) == 2  # once per kind: training, evaluation
    assert got == ref  # exactly: the same RNG draws, gradients zeroed after the extra run
    for j in "abc":
        for (a0, b0), (a1, b1) in zip(ref_w[j], got_w[j], strict=True):
            assert torch.equal(a0, a1) and torch.equal(b0, b1)
    assert [c["kind"] for c in calls if c["kind"].endswith("_ahead")] == ["train_ahead", "eval_ahead"]
    assert _untimed(calls) == _untimed(ref_calls)  # the real calls' rows as without it, but for their times


def _untimed(calls: list[dict]) -> list[dict]:
    return [{k: v for k, v in c.items() if k != "ms"} for c in calls if not c["kind"].endswith("_ahead")]


SCRIPT = """
import copy, json, torch
from altoruntime.backbone import tiny_llama
from altoruntime.step_graphs import StepGraphs
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import weight_sums
from tests.altoruntime.test_compile_ahead import RunsEverything
from tests.altoruntime.test_step_graphs import fake_capture
base = tiny_llama(hidden=32, intermediate=64, layers=1)
out = {}
for name, ahead in (("plain", None), ("ahead", RunsEverything())):
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "down_proj"], capacity=8, impl="triton")
    tr.store.shrink_at = 0  # as on CUDA: retargeted graphs (a fake capture), in-place gradients, phantoms
    tr.graphs = StepGraphs(tr.device, capture=fake_capture)
    tr.retarget_graphs = True
    tr.compile_ahead = ahead
    for i, (j, r, p) in enumerate((("a", 4, 0.2), ("b", 2, 0.0), ("c", 8, 0.1))):
        tr.admit(j, rank=r, lr=1e-2, seed=i, dropout=p)
    torch.manual_seed(3)
    res = [tr.step({j: make_batch(10 * k + i, 2, 8) for i, j in enumerate("abc")}) for k in range(3)]
    out[name] = {"res": res, "in_place": tr.in_place_grads,
                 "w": weight_sums(tr, "abc")}
print(json.dumps(out))
"""


def test_the_deferred_run_leaves_in_place_gradients_as_they_were():
    """The Triton path (interpreted): the extra run's in-place gradients are zeroed with the flags."""
    out = run_interpreted(SCRIPT)
    assert out["ahead"]["in_place"]
    assert_step_results_close(out["plain"]["res"], out["ahead"]["res"], rel=0.0)
    assert out["plain"]["w"] == out["ahead"]["w"]


class _Info:
    def __init__(self, fn: object) -> None:
        self.jit_function = fn


def test_the_hook_defers_its_own_threads_kernels_once_each_and_is_removed_after():
    before = knobs.runtime.jit_cache_hook
    fn = object()
    with deferred() as found:
        hook = knobs.runtime.jit_cache_hook
        assert hook is not before
        spec = {"specialization_data": "{}", "key": "k1"}
        assert hook(key="k1", repr="", fn=_Info(fn), compile=spec, is_manual_warmup=False, already_compiled=False)
        assert hook(key="k1", repr="", fn=_Info(fn), compile=spec, is_manual_warmup=False, already_compiled=False)
        assert hook(key="k2", repr="", fn=_Info(fn), compile={**spec, "key": "k2"}, is_manual_warmup=False,
                    already_compiled=False)
        other: list = []
        t = threading.Thread(target=lambda: other.append(hook(key="k3", repr="", fn=_Info(fn), compile=spec,
                                                              is_manual_warmup=False, already_compiled=False)))
        t.start()
        t.join()
        assert other == [None]  # another thread compiles as usual
        assert hook(key="k4", repr="", fn=_Info(fn), compile={"key": "k4"}, is_manual_warmup=False,
                    already_compiled=False) is None  # nothing to preload it from: compiled as usual
    assert knobs.runtime.jit_cache_hook is before
    assert [(f, d) for f, d in found.specs] == [(fn, "{}"), (fn, "{}")] and len(found) == 2


def test_the_hook_defers_the_threads_it_is_given_too():
    """Autograd's CUDA backward runs on the engine's device thread: its kernels must defer too."""
    fn = object()
    spec = {"specialization_data": "{}", "key": "k1"}
    got: dict = {}

    def launch(name: str, hook) -> None:  # noqa: ANN001
        got[name] = hook(key=name, repr="", fn=_Info(fn), compile={**spec, "key": name}, is_manual_warmup=False,
                         already_compiled=False)

    # a thread's ident is known once it runs (and may be reused once it ends): `named` waits to
    # launch until the hook is set and stays alive until `other` has launched
    gate, done = threading.Event(), threading.Event()
    named = threading.Thread(target=lambda: (gate.wait(), launch("named", knobs.runtime.jit_cache_hook), done.wait()))
    other = threading.Thread(target=lambda: launch("other", knobs.runtime.jit_cache_hook))
    named.start()
    with deferred(threads={named.ident}) as found:
        gate.set()
        while "named" not in got:
            time.sleep(0.001)
        other.start()
        other.join()
        done.set()
        named.join()
    assert got == {"named": True, "other": None}
    assert len(found) == 1


def test_autograd_threads_on_the_cpu_is_the_calling_thread():
    assert autograd_threads("cpu") == {threading.get_ident()}
    with torch.no_grad():  # as an evaluation's deferred run calls it
        assert autograd_threads("cpu") == {threading.get_ident()}


class _Compiled:
    def __init__(self, name: str) -> None:
        self.src, self.metadata = name, {"name": name}


class _Future:
    def __init__(self, kernel: _Compiled) -> None:
        self.kernel = kernel

    def result(self) -> _Compiled:
        return self.kernel


class _Kernel:
    def __init__(self, fail: bool) -> None:
        self.fail, self.threads = fail, []

    def preload(self, data: str) -> _Future:
        if self.fail:
            raise RuntimeError("no such target")
        self.threads.append(data)
        return _Future(_Compiled(data))


class _Driver:
    """What `warm_launcher` reads of Triton's active driver: a launcher class (here one that records)."""

    def __init__(self, fail_on: str = "") -> None:
        self.built: list[str] = []
        self.fail_on = fail_on
        driver = self

        class Launcher:
            def __init__(self, src: str, metadata: dict) -> None:
                if src == driver.fail_on:
                    raise OSError("no C compiler")
                driver.built.append(src)

        self.launcher_cls = Launcher


@pytest.fixture
def fake_driver():  # noqa: ANN201
    from triton.runtime import driver

    fake = _Driver(fail_on="z")
    driver.set_active(fake)
    try:
        yield fake
    finally:
        driver.set_active(None)  # back to lazily the default (reset_active builds it: none on a CPU machine)


def test_compile_all_counts_failures_and_leaves_them_to_the_first_launch(fake_driver: _Driver):
    good, bad = _Kernel(False), _Kernel(True)
    found = Deferred(specs=[(good, "x"), (bad, "y"), (good, "z")])
    out = compile_all(found, workers=8)
    assert out["kernels"] == 3 and out["failed"] == 1 and out["workers"] == 3  # at most one per kernel
    assert good.threads == ["x", "z"]
    assert fake_driver.built == ["x"]  # each compiled kernel's launcher built; z's failure left to its launch
    assert compile_all(Deferred())["kernels"] == 0


def test_warm_launcher_takes_kernels_futures_and_nothing(fake_driver: _Driver):
    warm_launcher(_Compiled("a"))
    warm_launcher(_Future(_Compiled("b")))
    warm_launcher(None)
    warm_launcher(object())  # not a compiled kernel: nothing to build
    assert fake_driver.built == ["a", "b"]


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "interpreter" in unavailable()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("ALTO_KERNELS_AUTOTUNE", "1")
    assert "autotuning" in unavailable()
    monkeypatch.setenv("ALTO_KERNELS_AUTOTUNE", "0")
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", lambda **kw: None)
    assert "another" in unavailable()


def test_the_env_flag_is_checked_and_off_the_gpu_does_nothing():
    model = tiny_llama(hidden=32, intermediate=64, layers=1)
    with pytest.raises(ValueError, match="ALTO_COMPILE_AHEAD"):
        trainer_from_env(copy.deepcopy(model), 2, env={"ALTO_FUSED_BACKBONE": "0", "ALTO_COMPILE_AHEAD": "yes"})
    tr = trainer_from_env(model, 2, env={"ALTO_FUSED_BACKBONE": "0", "ALTO_COMPILE_AHEAD": "1"})
    assert tr.compile_ahead is None  # CPU: no Triton compiles to move


def test_compile_ahead_is_the_default_and_logs_say_when_it_is_off():
    """On by default since session 17's H200 runs (same losses and decisions, 60.5 -> 47.6 s run
    clock); a run with it off says so in its paths, as for the other switches."""
    from altoruntime.trainer import env_paths

    assert env_paths({}) == "lora=auto optim=fused"
    assert env_paths({"ALTO_COMPILE_AHEAD": "1"}) == "lora=auto optim=fused"
    assert env_paths({"ALTO_COMPILE_AHEAD": "0"}) == "lora=auto optim=fused compile_ahead=0"
    model = tiny_llama(hidden=32, intermediate=64, layers=1)
    assert trainer_from_env(model, 2, env={"ALTO_FUSED_BACKBONE": "0"}).compile_ahead is None  # CPU: nothing to move
