"""altokernels/rope.py: the rope kernel equals transformers' `apply_rotary_pos_emb` (values and
gradients, on the CPU through Triton's interpreter, run in a subprocess with TRITON_INTERPRET=1),
and on a GPU it compiles once per direction whatever the batch's rows and length."""

from __future__ import annotations

import pytest
import torch

from tests.altokernels.helpers import recorded_compiles
from tests.altoruntime._runtime_helpers import run_interpreted

SCRIPT = """
import json, torch
from hypothesis import given, settings, strategies as st
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
from altokernels.rope import RopeFunction, rope_


def case(b, s, nq, nk, hd, width, per_row, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, s, (nq + nk) * hd, generator=g, requires_grad=True)
    ang = torch.randn(b if per_row else 1, s, width // 2, generator=g)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    gq, gk = torch.randn(b, nq, s, hd, generator=g), torch.randn(b, nk, s, hd, generator=g)

    def split(t):  # q and k as an attention forward makes them: transposed views of one projection output
        return (t[..., :nq * hd].reshape(b, s, nq, hd).transpose(1, 2),
                t[..., nq * hd:].reshape(b, s, nk, hd).transpose(1, 2))

    q, k = split(x * 1)
    qr, kr = apply_rotary_pos_emb(q[..., :width], k[..., :width], cos, sin)
    qr, kr = torch.cat([qr, q[..., width:]], -1), torch.cat([kr, k[..., width:]], -1)
    ((qr * gq).sum() + (kr * gk).sum()).backward()
    want, want_grad = (qr.detach(), kr.detach()), x.grad.clone()
    x.grad = None
    q, k = RopeFunction.apply(*split(x * 1), cos, sin)
    ((q * gq).sum() + (k * gk).sum()).backward()
    return max(float((q - want[0]).abs().max()), float((k - want[1]).abs().max()),
               float((x.grad - want_grad).abs().max()))


out = {"fixed": [case(3, 5, 9, 3, 8, 8, False, 0), case(3, 5, 9, 3, 8, 8, True, 1), case(2, 4, 4, 2, 8, 4, False, 2)]}
errs = []


@settings(max_examples=12, deadline=None, database=None)
@given(b=st.integers(1, 4), s=st.integers(1, 9), nq=st.integers(1, 6), ratio=st.sampled_from([1, 2, 3]),
       hd=st.sampled_from([4, 8, 12]), cut=st.integers(0, 2), per_row=st.booleans(), seed=st.integers(0, 99))
def prop(b, s, nq, ratio, hd, cut, per_row, seed):
    nk = max(1, nq // ratio)
    errs.append(case(b, s, nq, nk, hd, max(2, hd - 2 * cut), per_row, seed))


prop()
out["prop"] = errs
bad = []
for cos_shape in ((1, 6, 8), (1, 5, 10), (2, 5, 8)):
    try:
        q, k = torch.zeros(3, 4, 5, 8), torch.zeros(3, 2, 5, 8)
        rope_(q, k, torch.zeros(cos_shape), torch.zeros(cos_shape))
    except ValueError as e:
        bad.append(str(e))
out["bad"] = bad
print(json.dumps(out))
"""


def test_rope_equals_transformers_values_and_gradients():
    out = run_interpreted(SCRIPT)
    assert max(out["fixed"]) < 1e-5, out["fixed"]  # one position table, one per row, a partial rotary width
    assert len(out["prop"]) == 12 and max(out["prop"]) < 1e-5, out["prop"]
    assert len(out["bad"]) == 3 and all("do not fit" in e for e in out["bad"]), out["bad"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rope_compiles_once_per_direction_for_any_rows_and_length():
    """Liger's rope compiled again for every new row count (its batch size is a constexpr)."""
    from altokernels.rope import rope_

    with recorded_compiles() as compiled:
        for b, s in ((1, 64), (3, 80), (17, 96), (225, 128), (4, 97), (1, 1)):
            for backward in (False, True):
                for per_row in (False, True):
                    q = torch.randn(b, s, 9, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
                    k = torch.randn(b, s, 3, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
                    cos = torch.randn(b if per_row else 1, s, 64, device="cuda", dtype=torch.bfloat16)
                    rope_(q, k, cos, cos, backward=backward)
        torch.cuda.synchronize()
    assert len(compiled) <= 2, compiled  # forward and backward (none if another test compiled them first)
