"""Random token batches for runtime tests (no peft import, so subprocesses start fast)."""

from __future__ import annotations

import torch

VOCAB = 128


def make_batch(seed: int, b: int, length: int, vocab: int = VOCAB, pad_tail: bool = True):
    """Random (input_ids, attention_mask, labels); with pad_tail, later rows are right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, length), generator=g)
    mask = torch.ones_like(ids)
    if pad_tail:
        for i in range(1, b):
            n = int(torch.randint(2, length + 1, (1,), generator=g))
            mask[i, n:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels
