"""One fused forward/backward over a rank's rows, shaped so every rank runs the same collectives.

Under FSDP every rank must run every layer's forward and backward (each one all-gathers that
layer's frozen weights), whatever it trains. So a rank's batch is padded with dummy rows
(labels all ignored, attention on, so they are finite and contribute exactly zero gradient) to
the rows and length agreed for the step, and a rank with no adapter at all still runs the
backbone forward and a zero-weighted backward (its embedding output is made to require grad so
the backward reaches every layer). The per-adapter loss is a token-weighted sum, so the data
parallel baseline can normalize by the tokens of the whole (split) batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from altoruntime.batching import IGNORE, Batch
from altoruntime.trainer import MultiAdapterTrainer


@dataclass(frozen=True)
class RowBlock:
    """A rank's step input: concatenated rows, and how many rows each adapter owns."""

    job_ids: tuple[str, ...]
    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    rows: tuple[int, ...]
    dummy_rows: int


def check_rows(job_id: str, batch: Batch, allow_unlabelled: bool) -> tuple[torch.Tensor, ...]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
        raise ValueError(f"batches[{job_id!r}]: expected (input_ids, attention_mask, labels)")
    ids, mask, labels = (torch.as_tensor(t).long() for t in batch)
    if ids.dim() != 2 or ids.shape[1] < 2 or (ids.shape[0] < 1 and not allow_unlabelled):
        raise ValueError(f"batches[{job_id!r}]: input_ids must be [batch, seq >= 2], got {tuple(ids.shape)}")
    if mask.shape != ids.shape or labels.shape != ids.shape:
        raise ValueError(f"batches[{job_id!r}]: attention_mask/labels shape differs from input_ids")
    if not allow_unlabelled and not (labels[:, 1:] != IGNORE).any():
        raise ValueError(f"batches[{job_id!r}]: labels have no token to predict (all -100)")
    return ids, mask, labels


def dummy_rows(n: int, length: int, pad_token_id: int) -> Batch:
    """Rows that run through the model but predict nothing (all labels ignored)."""
    ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    return ids, torch.ones_like(ids), torch.full_like(ids, IGNORE)


def shape_of(batches: Mapping[str, Batch]) -> tuple[int, int]:
    """(rows, longest sequence) of a rank's batches."""
    rows = sum(int(torch.as_tensor(b[0]).shape[0]) for b in batches.values())
    length = max((int(torch.as_tensor(b[0]).shape[1]) for b in batches.values()), default=2)
    return rows, length


def block(batches: Mapping[str, Batch], rows: int, length: int, pad_token_id: int,
          allow_unlabelled: bool = False) -> RowBlock:
    """Concatenate `batches` (in order), right-pad to `length`, and append dummy rows up to
    `rows` (they join the last adapter's segment: they carry no label, so no gradient)."""
    parts = [check_rows(j, b, allow_unlabelled) for j, b in batches.items()]
    have = sum(p[0].shape[0] for p in parts)
    if have > rows or any(p[0].shape[1] > length for p in parts):
        raise ValueError(f"batches: {have} rows up to length {max(p[0].shape[1] for p in parts)} exceed the step's {rows} x {length}")
    if have < rows or not parts:
        parts.append(dummy_rows(rows - have, length, pad_token_id))

    def cat(i: int, fill: int) -> torch.Tensor:
        return torch.cat([nn.functional.pad(p[i], (0, length - p[i].shape[1]), value=fill) for p in parts])

    counts = [int(p[0].shape[0]) for p in parts[: len(batches)]]
    if counts:
        counts[-1] += rows - have
    return RowBlock(tuple(batches), cat(0, pad_token_id), cat(1, 0), cat(2, IGNORE), tuple(counts), rows - have)


def token_losses(trainer: MultiAdapterTrainer, blk: RowBlock, training: bool,
                 with_hits: bool = False) -> tuple[list[torch.Tensor], list[int], list[int]]:
    """Per adapter: summed token CE (a graph tensor), its labelled-token count and (`with_hits`;
    else empty) how many argmax predictions were right, on this rank. With no adapter, runs the
    bare backbone and returns one zero-weighted loss that still reaches every layer in the
    backward."""
    dev = trainer.device
    ids, mask, labels = blk.ids.to(dev), blk.mask.to(dev), blk.labels.to(dev)
    if not blk.job_ids:
        return [_bare_forward(trainer, ids, mask, training)], [0], []
    try:
        per_token, hit, counts = trainer.forward_tokens(blk.job_ids, ids, mask, labels, list(blk.rows), training)
    finally:
        if not training:
            trainer.ctx.meta = None
    hits = [int(h.sum()) for h in torch.split(hit, counts)] if with_hits else []
    return [t.sum() for t in torch.split(per_token, counts)], counts, hits


def _bare_forward(trainer: MultiAdapterTrainer, ids: torch.Tensor, mask: torch.Tensor, training: bool) -> torch.Tensor:
    model = trainer.model
    emb = model.get_input_embeddings()
    hook = emb.register_forward_hook(lambda m, i, o: o.requires_grad_(training)) if training else None
    try:
        trainer.ctx.meta = None
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, -1:]).float()  # one position: keeps the head in the graph
    finally:
        if hook is not None:
            hook.remove()
    return logits.sum() * 0.0
