"""Plain-torch multi-adapter LoRA: the per-adapter loop every kernel is tested against, and the
best plain-torch grouped form (ranks padded, batched matmuls), both differentiated by autograd.

y[rows of segment i] = x_i W^T + b + s_i * (drop_i(x_i) A[slot_i][:, :r_i]) B[slot_i][:r_i, :]
"""

from __future__ import annotations

import torch

from altokernels.meta import LoraBatchMeta


def lora_input(x: torch.Tensor, meta: LoraBatchMeta, training: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LoRA branch's input after per-segment dropout, and the keep/(1-p) multiplier (or None).

    One `torch.rand` over the whole buffer, so every implementation draws the same mask from the
    same torch seed.
    """
    if not training or meta.row_dropout is None:
        return x, None
    p = meta.row_dropout[:, None]
    keep = torch.rand(x.shape, device=x.device, dtype=torch.float32) >= p
    mult = (keep / (1.0 - p)).to(x.dtype)
    return x * mult, mult


def rank_masks(meta: LoraBatchMeta, r_max: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[segments, r_max] 0/1 mask: column j of segment i is live iff j < rank_i."""
    cols = torch.arange(r_max, device=device)
    return (cols[None, :] < meta.seg_rank.to(device)[:, None].long()).to(dtype)


def loop_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    training: bool = True,
) -> torch.Tensor:
    """Reference: one batched base GEMM, then a per-adapter loop (split, LoRA, cat)."""
    base = torch.nn.functional.linear(x, weight, bias)
    xl, _ = lora_input(x, meta, training)
    parts = []
    for i in range(meta.num_segments):
        lo, hi = meta.offsets[i], meta.offsets[i + 1]
        s, r = meta.slots[i], meta.ranks[i]
        shrink = xl[lo:hi] @ A[s, :, :r]
        parts.append((shrink @ B[s, :r, :]) * meta.scales[i])
    return base + torch.cat(parts, dim=0)


def grouped_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    meta: LoraBatchMeta,
    training: bool = True,
) -> torch.Tensor:
    """Plain-torch grouped form: ranks padded to r_max and masked, tokens padded to the longest
    segment (a free view when all counts are equal), two `torch.bmm` calls."""
    base = torch.nn.functional.linear(x, weight, bias)
    xl, _ = lora_input(x, meta, training)
    z, r_max = meta.num_segments, A.shape[2]
    # Masking B alone suffices: padded S columns meet zero B rows, so they add nothing and the
    # padded A columns / B rows get zero gradient. The scale is folded into the same multiply.
    mult = rank_masks(meta, r_max, x.device, x.dtype) * meta.seg_scale.to(x.dtype)[:, None]
    if meta.slots == tuple(range(A.shape[0])):
        a, b = A, B * mult[:, :, None]
    else:
        idx = meta.seg_slot.long()
        a, b = A.index_select(0, idx), B.index_select(0, idx) * mult[:, :, None]
    if meta.equal_counts:
        n = meta.token_counts[0]
        delta = torch.bmm(torch.bmm(xl.view(z, n, -1), a), b).view(meta.total_tokens, -1)
        return base + delta
    n_max = max(meta.token_counts)
    # the meta's device tensors and a known output size: no host-to-device copy, no device sync
    starts = meta.seg_start.to(x.device).long()
    counts = meta.seg_end.to(x.device).long() - starts
    seg_of_row = torch.repeat_interleave(torch.arange(z, device=x.device), counts, output_size=meta.total_tokens)
    pos = torch.arange(meta.total_tokens, device=x.device) - starts[seg_of_row]
    xp = x.new_zeros(z, n_max, x.shape[1]).index_put((seg_of_row, pos), xl)
    delta = torch.bmm(torch.bmm(xp, a), b)[seg_of_row, pos]
    return base + delta
