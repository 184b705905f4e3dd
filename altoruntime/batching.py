"""Fuse several adapters' micro-batches into one batch the backbone runs once.

Rows are concatenated along the batch dimension and right-padded to the longest sequence:
padding at the end of a causal sequence never changes the logits of the tokens before it, so
each row's logits equal those of its adapter's batch run alone.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, labels [b, L]
IGNORE = -100  # label of a position that is not predicted (prompt, padding)


def check_batch(job_id: str, batch: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One adapter's (input_ids, attention_mask, labels), validated; errors name the adapter."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
        raise ValueError(f"batches[{job_id!r}]: expected (input_ids, attention_mask, labels)")
    ids, mask, labels = (torch.as_tensor(t) for t in batch)
    if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 2:
        raise ValueError(f"batches[{job_id!r}]: input_ids must be [batch, seq >= 2], got {tuple(ids.shape)}")
    if mask.shape != ids.shape or labels.shape != ids.shape:
        raise ValueError(f"batches[{job_id!r}]: attention_mask/labels shape differs from input_ids")
    if not (labels[:, 1:] != IGNORE).any():
        raise ValueError(f"batches[{job_id!r}]: labels have no token to predict (all -100)")
    return ids, mask, labels


def concat_batches(
    batches: Mapping[str, Batch], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """(input_ids, attention_mask, labels) of all adapters, in `batches` order, on `device`,
    and each adapter's row count."""
    parts = [check_batch(job_id, b) for job_id, b in batches.items()]
    length = max(p[0].shape[1] for p in parts)

    def cat(i: int, fill: int) -> torch.Tensor:
        padded = [nn.functional.pad(p[i].long(), (0, length - p[i].shape[1]), value=fill) for p in parts]
        return torch.cat(padded).to(device)

    return cat(0, pad_token_id), cat(1, 0), cat(2, IGNORE), [int(p[0].shape[0]) for p in parts]


def labelled_counts(valid: torch.Tensor, rows: Sequence[int]) -> list[int]:
    """Labelled positions per adapter, from the [rows, L] mask of labelled positions."""
    counts = valid.sum(1).tolist()
    return [sum(counts[r0:r0 + n]) for r0, n in zip([0, *itertools.accumulate(rows)], rows)]
