"""Token tensors for training and generation, and a deterministic, resumable data order.

Rows are ``prompt tokens + answer tokens + EOS``, right-padded; labels are the input ids on the
answer and EOS and -100 on the prompt and padding (the usual causal-LM shift happens in the
model). Prompt and answer are tokenized separately so the prompt ids used for generation are
exactly the prefix the model was trained on.

The data order is a pure function of (seed, epoch): position ``p`` of an adapter's stream is row
``order(p // N, seed)[p % N]``. A checkpoint only needs the integer position to resume. With
``group`` (length grouping, as transformers' ``group_by_length``), each run of ``group`` rows of
the shuffled order is sorted by length, longest first, so a batch pads its rows to similar
lengths: less padding, the same rows per epoch, the losses of each batch unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from altoruntime.data.rng import stable_permutation

if TYPE_CHECKING:  # example.py calls into this module to tokenize; it is only a type here
    from altoruntime.data.example import Example

IGNORE_INDEX = -100
LENGTH_GROUP_BATCHES = 50  # batches per length-sorted run (transformers' LengthGroupedSampler megabatch)


def _ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    if not texts:
        return []
    return [list(map(int, ids)) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _check_seq_len(seq_len: int) -> None:
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")


@dataclass(frozen=True)
class Batch:
    """Rows of one split, trimmed to their longest row. ``next_position`` resumes the stream."""

    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64
    labels: torch.Tensor  # [B, T] int64, -100 = ignored
    indices: tuple[int, ...]  # rows of the split
    position: int  # stream position of the first row (samples consumed before this batch)
    next_position: int
    epoch: int  # epoch of the first row

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class TokenizedSplit:
    input_ids: torch.Tensor  # [N, L] int64, right-padded
    attention_mask: torch.Tensor  # [N, L] int64
    labels: torch.Tensor  # [N, L] int64, -100 on prompt and padding
    lengths: torch.Tensor  # [N] real row lengths
    prompt_lengths: torch.Tensor  # [N]
    n_truncated: int  # rows whose answer was cut to fit seq_len

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_answer_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def order(self, epoch: int, seed: int | None, group: int = 0) -> list[int]:
        """Row order of one epoch: identity for ``seed=None``, else a version-stable shuffle; with
        ``group`` > 0, each run of that many rows sorted by length, longest first (stable)."""
        if seed is None:
            return list(range(len(self)))
        order = stable_permutation(len(self), "order", seed, epoch)
        if group > 0:
            lengths = self.lengths.tolist()
            order = [i for s in range(0, len(order), group)
                     for i in sorted(order[s:s + group], key=lambda i: -lengths[i])]
        return order

    def select(self, indices: Sequence[int], position: int = 0, next_position: int | None = None, epoch: int = 0) -> Batch:
        if not indices:
            raise ValueError("indices must not be empty")
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        width = int(self.lengths[idx].max())
        return Batch(
            input_ids=self.input_ids[idx, :width], attention_mask=self.attention_mask[idx, :width],
            labels=self.labels[idx, :width], indices=tuple(int(i) for i in indices), position=position,
            next_position=position + len(indices) if next_position is None else next_position, epoch=epoch,
        )

    def batches(self, batch_size: int, epoch: int = 0, seed: int | None = None, start_batch: int = 0,
                drop_last: bool = False) -> Iterator[Batch]:
        """One epoch in ``order(epoch, seed)``, from batch ``start_batch`` on (to resume)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        order, n = self.order(epoch, seed), len(self)
        for start in range(start_batch * batch_size, n, batch_size):
            rows = order[start:start + batch_size]
            if drop_last and len(rows) < batch_size:
                return
            yield self.select(rows, position=epoch * n + start, epoch=epoch)

    def stream(self, batch_size: int, seed: int, position: int = 0, group_by_length: bool = False) -> Iterator[Batch]:
        """Endless batches across epochs (a batch may span an epoch boundary); resume from any
        ``Batch.next_position``. Every row appears once per epoch, in ``order(epoch, seed)``
        (grouped by length over runs of LENGTH_GROUP_BATCHES batches with ``group_by_length``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        n = len(self)
        if n == 0:
            raise ValueError("cannot stream an empty split")
        group = LENGTH_GROUP_BATCHES * batch_size if group_by_length else 0
        orders: dict[int, list[int]] = {}  # the epochs the current batch touches

        def row(p: int) -> int:
            epoch = p // n
            if epoch not in orders:
                if len(orders) >= 2:
                    orders.pop(min(orders))
                orders[epoch] = self.order(epoch, seed, group)
            return orders[epoch][p % n]

        while True:
            rows = [row(p) for p in range(position, position + batch_size)]
            yield self.select(rows, position=position, epoch=position // n)
            position += batch_size


def tokenize_examples(tokenizer: Any, examples: Sequence[Example], seq_len: int = 512,
                      pad_to_seq_len: bool = False, add_special_tokens: bool = True,
                      loss_on: str = "completion") -> TokenizedSplit:
    """Rows for training; a row longer than ``seq_len`` loses the tail of its answer (counted in
    ``n_truncated``). A prompt that leaves no room for one answer token is a ValueError.
    ``add_special_tokens=False`` for prompts that hold them already (chat-template text);
    ``loss_on="all"`` labels the prompt tokens too."""
    _check_seq_len(seq_len)
    if loss_on not in ("completion", "all"):
        raise ValueError(f"loss_on must be 'completion' or 'all', got {loss_on!r}")
    eos = getattr(tokenizer, "eos_token_id", None)
    prompts = _ids(tokenizer, [e.prompt for e in examples], add_special_tokens=add_special_tokens)
    answers = _ids(tokenizer, [e.answer if e.target is None else e.target for e in examples], add_special_tokens=False)
    rows, prompt_lens, truncated = [], [], 0
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if len(p) >= seq_len:
            raise ValueError(f"seq_len={seq_len} too short: prompt of example {i} has {len(p)} tokens")
        full = a + ([int(eos)] if eos is not None else [])
        if len(p) + len(full) > seq_len:
            truncated += 1
            full = full[: seq_len - len(p)]
        rows.append(p + full)
        prompt_lens.append(len(p))
    width = seq_len if pad_to_seq_len else max((len(r) for r in rows), default=1)
    n = len(rows)
    input_ids = torch.full((n, width), _pad_id(tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, plen) in enumerate(zip(rows, prompt_lens)):
        t = torch.tensor(row, dtype=torch.long)
        input_ids[i, : len(row)] = t
        attention_mask[i, : len(row)] = 1
        start = 0 if loss_on == "all" else plen
        labels[i, start: len(row)] = t[start:]
    return TokenizedSplit(input_ids, attention_mask, labels, torch.tensor([len(r) for r in rows], dtype=torch.long),
                          torch.tensor(prompt_lens, dtype=torch.long), truncated)


@dataclass(frozen=True)
class PromptBatch:
    """Left-padded prompts for batched greedy generation (new tokens start at column L)."""

    input_ids: torch.Tensor  # [N, L] int64
    attention_mask: torch.Tensor  # [N, L] int64

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def slice(self, start: int, stop: int) -> "PromptBatch":
        """Rows [start, stop), with the shared left padding trimmed."""
        mask = self.attention_mask[start:stop]
        lead = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum()) if len(mask) else 0
        return PromptBatch(self.input_ids[start:stop, lead:], mask[:, lead:])


def tokenize_prompts(tokenizer: Any, prompts: Sequence[str], seq_len: int = 512,
                     add_special_tokens: bool = True) -> PromptBatch:
    _check_seq_len(seq_len)
    ids = _ids(tokenizer, prompts, add_special_tokens=add_special_tokens)
    for i, p in enumerate(ids):
        if len(p) >= seq_len:
            raise ValueError(f"seq_len={seq_len} too short: prompt {i} has {len(p)} tokens")
    width = max((len(p) for p in ids), default=1)
    input_ids = torch.full((len(ids), width), _pad_id(tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, p in enumerate(ids):
        if p:
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p):] = 1
    return PromptBatch(input_ids, attention_mask)
