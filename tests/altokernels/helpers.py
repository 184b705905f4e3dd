"""Shared case builders and tolerances for the kernel tests."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch

from altokernels import LoraBatchMeta, build_meta

# Errors are measured against an fp64 run of the reference on the same (rounded) inputs:
# err(got) <= 2 * err(reference in dtype) + TOL * max(abs-truth), where abs-truth is the same
# computation on |inputs| (the usual bound on sum |terms| of a dot product), so rounding under
# cancellation does not fail the kernel, while a wrong kernel still fails.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}


@dataclass
class Case:
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    A: torch.Tensor
    B: torch.Tensor
    meta: LoraBatchMeta


def make_case(counts, ranks, d_in, d_out, dtype, device="cpu", extra_slots=1, r_max=None, bias=True,
              dropout=None, seed=0) -> Case:
    g = torch.Generator().manual_seed(seed)
    z = len(counts)
    n_slots = z + extra_slots
    r_max = r_max or max(ranks)
    perm = torch.randperm(n_slots, generator=g)[:z].tolist()  # segments use scattered slots
    scales = [0.5 + (i % 4) for i in range(z)]
    meta = build_meta(counts, perm, ranks, scales, device, dropout=dropout)
    t = sum(counts)

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dtype)

    x = rnd(t, d_in).requires_grad_(True)
    w = rnd(d_out, d_in, s=d_in**-0.5)
    b = rnd(d_out) if bias else None
    A = rnd(n_slots, d_in, r_max, s=d_in**-0.5).requires_grad_(True)
    B = rnd(n_slots, r_max, d_out, s=r_max**-0.5).requires_grad_(True)
    return Case(x, w, b, A, B, meta)


def run(case: Case, fn, dy: torch.Tensor, **kw):
    for t in (case.x, case.A, case.B):
        t.grad = None
    y = fn(case.x, case.weight, case.bias, case.A, case.B, case.meta, **kw)
    gx, ga, gb = torch.autograd.grad(y, [case.x, case.A, case.B], dy)
    return y.detach(), gx, ga, gb


def as_double(case: Case, absolute: bool = False) -> Case:
    """The same case in fp64 (leaf tensors with grad), for ground truth; `absolute`: |inputs|."""

    def d(t, grad):
        if t is None:
            return None
        t = t.detach().double()
        return (t.abs() if absolute else t).requires_grad_(grad)

    return Case(d(case.x, True), d(case.weight, False), d(case.bias, False), d(case.A, True), d(case.B, True),
                case.meta)


def assert_close_to_truth(got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor, abs_truth: torch.Tensor,
                          tol: float, name: str) -> None:
    assert got.shape == truth.shape, f"{name}: shape {got.shape} != {truth.shape}"
    if not truth.numel():
        return
    err = (got.double() - truth).abs().max().item()
    err_ref = (ref.double() - truth).abs().max().item()
    scale = abs_truth.abs().max().item()
    assert err <= 2 * err_ref + tol * max(scale, 1e-6), f"{name}: err {err:.3g}, reference err {err_ref:.3g}, scale {scale:.3g}"


def assert_near(got: torch.Tensor, want: torch.Tensor, tol: float, name: str) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-3), f"{name}: max err {err:.3g} vs scale {scale:.3g}"


def cross_compile_for_sm90(script: str, timeout_s: float) -> None:
    """Run `script` (it compiles kernels for an sm_90 target and prints "ok") in a fresh process
    without TRITON_INTERPRET: the interpreter runs what the GPU compiler may refuse. Skips where no
    ptxas is installed."""
    pytest.importorskip("triton.backends.nvidia.compiler")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("no ptxas for a cross-compile")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@contextmanager
def recorded_compiles() -> Iterator[list[str]]:
    """Inside: each Triton compile of this process is appended (its key, cut to 80 characters) to
    the yielded list, through Triton's post-compile hook; the previous hook is put back after."""
    from triton import knobs

    compiled: list[str] = []
    before = knobs.runtime.jit_post_compile_hook
    knobs.runtime.jit_post_compile_hook = lambda **kw: compiled.append(str(kw.get("key"))[:80])
    try:
        yield compiled
    finally:
        knobs.runtime.jit_post_compile_hook = before
