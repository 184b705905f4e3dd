"""Argument checks for `multi_lora_linear`, run before any launch (a handful of attribute reads)."""

from __future__ import annotations

import torch

from altokernels.meta import LoraBatchMeta

IMPLS = ("auto", "triton", "torch_grouped", "loop")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _same_device(t: torch.Tensor, device: torch.device) -> bool:
    return t.device == device or (t.device.type == device.type == "cpu")


def check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    impl: str,
) -> None:
    """Raise ValueError naming the first bad argument."""
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    if not isinstance(meta, LoraBatchMeta):
        raise ValueError(f"meta: expected LoraBatchMeta from build_meta, got {type(meta).__name__}")
    for name, t, nd in (("x", x, 2), ("weight", weight, 2), ("A", A, 3), ("B", B, 3)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a tensor, got {type(t).__name__}")
        if t.dim() != nd:
            raise ValueError(f"{name}: expected {nd} dims, got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} unsupported, expected one of {DTYPES}")
        if t.dtype != x.dtype and not (name in ("A", "B") and t.dtype == torch.float32):
            raise ValueError(f"{name}: dtype {t.dtype} differs from x's {x.dtype} (A/B may also be float32)")
        if not _same_device(t, meta.device):
            raise ValueError(f"{name}: on {t.device}, meta was built for {meta.device}")
    if isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor) and A.dtype != B.dtype:
        raise ValueError(f"B: dtype {B.dtype} differs from A's {A.dtype}")
    t_rows, d_in = x.shape
    d_out = weight.shape[0]
    if t_rows != meta.total_tokens:
        raise ValueError(f"x: has {t_rows} rows, meta's offsets cover {meta.total_tokens}")
    if weight.shape[1] != d_in:
        raise ValueError(f"weight: shape {tuple(weight.shape)} does not match d_in={d_in} of x")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (d_out,):
            raise ValueError(f"bias: expected shape ({d_out},), got {getattr(bias, 'shape', bias)}")
        if bias.dtype != x.dtype or not _same_device(bias, meta.device):
            raise ValueError(f"bias: expected {x.dtype} on {meta.device}, got {bias.dtype} on {bias.device}")
    n_slots, a_in, r_max = A.shape
    if a_in != d_in:
        raise ValueError(f"A: shape {tuple(A.shape)} needs dim 1 = d_in = {d_in}")
    if B.shape != (n_slots, r_max, d_out):
        raise ValueError(f"B: expected shape {(n_slots, r_max, d_out)}, got {tuple(B.shape)}")
    if meta.max_rank > r_max:
        raise ValueError(f"meta.ranks: max rank {meta.max_rank} exceeds r_max={r_max} of A/B")
    if max(meta.slots) >= n_slots:
        raise ValueError(f"meta.slots: slot {max(meta.slots)} out of range for {n_slots} slots in A/B")
