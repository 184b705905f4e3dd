import pytest
import torch

from altokernels import build_meta, multi_lora_linear


def _args():
    meta = build_meta([3, 2], [0, 2], [2, 4], [1.0, 1.0], "cpu")
    return dict(
        x=torch.randn(5, 6), weight=torch.randn(7, 6), bias=torch.randn(7),
        A=torch.randn(3, 6, 4), B=torch.randn(3, 4, 7), meta=meta,
    )


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(x=torch.randn(6, 6)), "x"),  # rows inconsistent with offsets
        (dict(x=torch.randn(5, 6, 1)), "x"),
        (dict(weight=torch.randn(7, 5)), "weight"),
        (dict(weight=torch.randn(7, 6, dtype=torch.float64)), "weight"),
        (dict(bias=torch.randn(6)), "bias"),
        (dict(A=torch.randn(3, 5, 4)), "A"),
        (dict(A=torch.randn(3, 6, 4).to(torch.bfloat16)), "A"),
        (dict(B=torch.randn(3, 4, 6)), "B"),
        (dict(B=torch.randn(2, 4, 7)), "B"),
        (dict(A=torch.randn(3, 6, 3), B=torch.randn(3, 3, 7)), "meta.ranks"),
        (dict(A=torch.randn(2, 6, 4), B=torch.randn(2, 4, 7)), "meta.slots"),
        (dict(meta="nope"), "meta"),
        (dict(impl="cuda"), "impl"),
    ],
)
def test_bad_input_names_argument(change, name):
    args = _args()
    args.update(change)
    with pytest.raises(ValueError, match=f"^{name}"):
        multi_lora_linear(**args)


def test_wrong_device_names_argument():
    args = _args()
    args["meta"] = build_meta([3, 2], [0, 2], [2, 4], [1.0, 1.0], "meta")
    with pytest.raises(ValueError, match="^x"):
        multi_lora_linear(**args)


def test_good_input_runs():
    y = multi_lora_linear(**_args())
    assert y.shape == (5, 7)
