"""altokernels/rms_norm.py: the RMSNorm kernels equal transformers' `LlamaRMSNorm` (values and the
input's gradient, on the CPU through Triton's interpreter, in a subprocess with TRITON_INTERPRET=1),
and on a GPU compile once per direction whatever the rows."""

from __future__ import annotations

import pytest
import torch

from tests.altokernels.helpers import recorded_compiles
from tests.altoruntime._runtime_helpers import run_interpreted

SCRIPT = """
import json, torch
from hypothesis import given, settings, strategies as st
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from altokernels.rms_norm import RMSNormFunction


def mx(t):
    return float(t.abs().max()) if t.numel() else 0.0


def case(shape, dtype, seed, strided=False):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    norm = LlamaRMSNorm(n, eps=1e-6).to(dtype).requires_grad_(False)
    norm.weight.copy_(torch.randn(n, generator=g).to(dtype))
    base = (3 * torch.randn(*shape[:-1], 2 * n if strided else n, generator=g)).to(dtype)
    x = (base[..., :n] if strided else base).detach().requires_grad_(True)  # strided: rows apart by 2n
    dy = torch.randn(shape, generator=g).to(dtype)
    y = norm(x)
    y.backward(dy)
    want, want_dx = y.detach(), x.grad.clone()
    x.grad = None
    got = RMSNormFunction.apply(x, norm.weight, 1e-6)
    got.backward(dy)
    xf = x.detach().float()  # dX's scale: its first term, rstd * dY * w (dX itself cancels towards 0 for tiny n)
    term = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * dy.float() * norm.weight.float()
    scale = max(mx(want), 1e-6), max(mx(want_dx), mx(term), 1e-6)
    return [mx(got - want) / scale[0], mx(x.grad - want_dx) / scale[1],
            list(got.shape) == list(shape)]


out = {"fp32": [case((3, 5, 24), torch.float32, 0), case((7, 20), torch.float32, 1), case((1, 1, 24), torch.float32, 2),
                case((4, 3, 16), torch.float32, 3, strided=True)],
       "bf16": [case((3, 5, 24), torch.bfloat16, 4), case((6, 40), torch.bfloat16, 5)]}
errs = []


@settings(max_examples=12, deadline=None, database=None)
@given(rows=st.integers(0, 9), n=st.integers(1, 70), seed=st.integers(0, 99), strided=st.booleans())
def prop(rows, n, seed, strided):
    errs.append(case((rows, n), torch.float32, seed, strided))


prop()
out["prop"] = errs
bad = []
w = torch.ones(8, requires_grad=True)
for args in ((torch.ones(2, 8), w, 1e-6), (torch.ones(2, 8), torch.ones(6), 1e-6),
             (torch.ones(2, 8), torch.ones(8, dtype=torch.bfloat16), 1e-6)):
    try:
        RMSNormFunction.apply(*args)
    except ValueError as e:
        bad.append(str(e))
out["bad"] = bad
print(json.dumps(out))
"""


def test_rms_norm_equals_transformers_values_and_gradients():
    out = run_interpreted(SCRIPT)
    for err_y, err_dx, shaped in out["fp32"] + out["prop"]:  # relative to the largest value
        assert err_y < 1e-6 and err_dx < 1e-5 and shaped, out
    assert len(out["prop"]) == 12
    for err_y, err_dx, shaped in out["bf16"]:  # the inverse RMS's last fp32 bits may flip the rounding of the
        assert err_y < 2 ** -6 and err_dx < 2 ** -6 and shaped, out["bf16"]  # cast row, then of its product: 2 steps
    assert len(out["bad"]) == 3 and "gradient is not computed" in out["bad"][0], out["bad"]
    assert all("does not fit" in e for e in out["bad"][1:]), out["bad"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rms_norm_compiles_once_per_direction_for_any_rows():
    """Liger's RMSNorm backward compiled again as a group shrank (its rows per program specialize)."""
    from altokernels.rms_norm import RMSNormFunction

    w = torch.randn(576, device="cuda", dtype=torch.bfloat16)
    with recorded_compiles() as compiled:
        for rows in (64, 97, 1, 28_800, 16, 3_000):
            x = torch.randn(rows, 576, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            RMSNormFunction.apply(x, w, 1e-5).sum().backward()
        torch.cuda.synchronize()
    assert len(compiled) <= 2, compiled  # forward and backward (none if another test compiled them first)
