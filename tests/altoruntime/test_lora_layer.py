"""The runtime's multi-adapter layer (altoruntime/lora_layer.py) against the plain-torch reference:
forward with leading dims, slot writes in PEFT layout, growing and compacting the stacks in place."""

from __future__ import annotations

import pytest
import torch

from altokernels import build_meta, loop_lora_linear
from altoruntime.lora_layer import LoraContext, MultiLoraLinear


def _layer(impl: str = "torch_grouped", capacity: int = 4, r_max: int = 8) -> MultiLoraLinear:
    torch.manual_seed(0)
    return MultiLoraLinear(torch.nn.Linear(12, 7), LoraContext(impl=impl), capacity, r_max)


def _randomize(layer: MultiLoraLinear) -> None:
    with torch.no_grad():
        layer.A.normal_()
        layer.B.normal_()


@pytest.mark.parametrize("impl", ["torch_grouped", "loop"])
def test_forward_matches_reference_with_leading_dims(impl):
    layer = _layer(impl)
    _randomize(layer)
    meta = build_meta([3, 5], [3, 0], [8, 2], [1.0, 0.5], "cpu")
    layer.ctx.meta = meta
    x = torch.randn(2, 4, 12)
    want = loop_lora_linear(x.reshape(8, 12), layer.weight, layer.bias, layer.A, layer.B, meta)
    assert torch.allclose(layer(x).reshape(8, 7), want, atol=1e-5)
    layer.ctx.meta = None  # no adapters this call: the frozen projection alone
    assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_only_the_stacks_train():
    layer = _layer()
    _randomize(layer)
    layer.ctx.meta = build_meta([6], [2], [5], [2.0], "cpu")
    layer(torch.randn(6, 12)).square().sum().backward()
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.B.grad[2, :5].abs().max() > 0
    assert layer.B.grad[2, 5:].abs().max() == 0 and layer.B.grad[[0, 1, 3]].abs().max() == 0


def test_set_get_and_zero_slot_in_peft_layout():
    layer = _layer()
    lora_a, lora_b = torch.randn(3, 12), torch.randn(7, 3)  # PEFT: lora_A [r, d_in], lora_B [d_out, r]
    layer.set_slot(1, lora_a, lora_b)
    a, b = layer.get_slot(1, 3)
    assert torch.equal(a, lora_a) and torch.equal(b, lora_b)
    assert layer.A[1, :, 3:].abs().max() == 0 and layer.A[[0, 2, 3]].abs().max() == 0
    layer.zero_slot(1)
    assert layer.A.abs().max() == 0 and layer.B.abs().max() == 0


def test_resize_and_compact_keep_the_parameters_and_their_slots():
    layer = _layer(capacity=2, r_max=4)
    _randomize(layer)
    a_param, before = layer.A, layer.A.detach().clone()
    layer.resize(4, 8)
    assert layer.A is a_param and layer.A.shape == (4, 12, 8) and layer.B.shape == (4, 8, 7)
    assert torch.equal(layer.A[:2, :, :4], before) and layer.A[2:].abs().max() == 0
    layer.compact([1, 0], 2, 4)
    assert layer.A is a_param and torch.equal(layer.A[0], before[1]) and torch.equal(layer.A[1], before[0])


def test_single_adapter_context_builds_meta_per_row_count():
    layer = _layer()
    _randomize(layer)
    layer.ctx.set_single((2, 4, 0.5))
    for rows in (1, 5):
        x = torch.randn(rows, 12)
        want = loop_lora_linear(x, layer.weight, layer.bias, layer.A, layer.B, build_meta([rows], [2], [4], [0.5], "cpu"))
        assert torch.allclose(layer(x), want, atol=1e-5)
