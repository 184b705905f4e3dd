import pytest
import torch

from altokernels import build_meta, loop_lora_linear
from altokernels.module import MultiLoraLinear, reset_slot_optimizer_state


def _layer(impl="torch_grouped"):
    torch.manual_seed(0)
    return MultiLoraLinear(torch.nn.Linear(12, 7), capacity=4, r_max=8, impl=impl)


def test_new_adapter_starts_as_identity_and_trains():
    layer = _layer()
    layer.add_adapter(2, rank=5, generator=torch.Generator().manual_seed(0))
    assert layer.A[2, :, 5:].abs().max() == 0 and layer.A[2, :, :5].abs().max() > 0
    meta = build_meta([6], [2], [5], [2.0], "cpu")
    x = torch.randn(6, 12)
    assert torch.allclose(layer(x, meta), layer.base(x))  # B = 0
    layer(x, meta).square().sum().backward()
    assert layer.B.grad[2, :5].abs().max() > 0
    assert layer.B.grad[2, 5:].abs().max() == 0 and layer.B.grad[[0, 1, 3]].abs().max() == 0
    assert not layer.base.weight.requires_grad


@pytest.mark.parametrize("impl", ["torch_grouped", "triton"])
def test_forward_matches_reference_with_leading_dims(impl):
    layer = _layer(impl)
    with torch.no_grad():
        layer.A.normal_()
        layer.B.normal_()
    meta = build_meta([3, 5], [3, 0], [8, 2], [1.0, 0.5], "cpu")
    x = torch.randn(2, 4, 12)
    want = loop_lora_linear(x.reshape(8, 12), layer.base.weight, layer.base.bias, layer.A, layer.B, meta)
    assert torch.allclose(layer(x, meta).reshape(8, 7), want, atol=1e-5)


def test_remove_and_reuse_slot_keeps_storage_and_resets_optimizer():
    layer = _layer()
    opt = torch.optim.AdamW([layer.A, layer.B], lr=1e-2)
    meta = build_meta([4, 4], [0, 1], [8, 8], [1.0, 1.0], "cpu")
    layer.add_adapter(0, 8)
    layer.add_adapter(1, 8)
    layer(torch.randn(8, 12), meta).square().sum().backward()
    opt.step()
    ptr = layer.A.data_ptr()
    layer.remove_adapter(1)
    assert layer.A[1].abs().max() == 0 and layer.B[1].abs().max() == 0
    reset_slot_optimizer_state(opt, layer, 1)
    assert opt.state[layer.B]["exp_avg"][1].abs().max() == 0
    assert opt.state[layer.B]["exp_avg"][0].abs().max() > 0
    layer.add_adapter(1, 3)
    assert layer.A.data_ptr() == ptr


@pytest.mark.parametrize("kwargs, name", [(dict(capacity=0), "capacity"), (dict(r_max=0), "r_max")])
def test_bad_construction(kwargs, name):
    args = dict(base=torch.nn.Linear(3, 3), capacity=2, r_max=2) | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        MultiLoraLinear(**args)


def test_bad_slot_and_rank():
    layer = _layer()
    with pytest.raises(ValueError, match="^slot"):
        layer.add_adapter(4, 2)
    with pytest.raises(ValueError, match="^rank"):
        layer.add_adapter(0, 9)
