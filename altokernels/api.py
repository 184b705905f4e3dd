"""`multi_lora_linear`: validate, then dispatch to the Triton autograd Function or a torch path."""

from __future__ import annotations

import torch

from altokernels.meta import LoraBatchMeta
from altokernels.reference import grouped_lora_linear, loop_lora_linear
from altokernels.validate import check_inputs


def triton_usable(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on x: CUDA, or Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    if x.is_cuda:
        return True
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def multi_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    impl: str = "auto",
    training: bool = True,
    grad_flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x W^T + b plus, on segment i's rows, scales[i] * drop(x_i) A[slot_i] B[slot_i] (rank-masked).

    impl: "auto" (Triton on CUDA, the plain-torch grouped form elsewhere), "triton",
    "torch_grouped", "loop". `training` switches the per-segment dropout on. A and B may be fp32
    (master weights) under lower-precision x: Triton reads them as they are, the torch paths cast.
    grad_flags: the Triton path's in-place weight gradients (`fused_lora_linear`); the torch paths
    ignore it (autograd accumulates their gradients).
    """
    check_inputs(x, weight, bias, A, B, meta, impl)
    if impl == "auto":
        impl = "triton" if x.is_cuda else "torch_grouped"
    if impl != "triton" and A.dtype != x.dtype:  # fp32 master weights: the torch paths compute in x's dtype
        A, B = A.to(x.dtype), B.to(x.dtype)
    if impl == "loop":
        return loop_lora_linear(x, weight, bias, A, B, meta, training)
    if impl == "torch_grouped":
        return grouped_lora_linear(x, weight, bias, A, B, meta, training)
    if not triton_usable(x):
        raise ValueError("impl: 'triton' needs CUDA tensors or TRITON_INTERPRET=1 set before importing triton")
    from altokernels.function import fused_lora_linear

    return fused_lora_linear(x, weight, bias, A, B, meta, training, grad_flags=grad_flags)
