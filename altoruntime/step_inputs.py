"""One fused step's inputs, packed on the host into fixed shapes (a graph-capturable step).

Rows of every adapter are concatenated and right-padded to a *bucketed* length; the labelled
positions (where the LM head and the loss run) are named by a gather index padded to a bucketed
count, with the target, the adapter (segment) and the loss weight of each. So the device work of
a step depends only on (rows per adapter, length bucket, label bucket), and on the Triton path,
whose kernels read each adapter's rows from device tables, only on the total rows: steps of the
same shape reuse one captured CUDA graph (altoruntime/step_graphs.py), and nothing in the step
reads a device value back to size a tensor (no boolean indexing, no host sync).

Right padding with a causal model leaves every real token's logits unchanged, so the backbone
runs without an attention mask when each row's mask is a prefix of ones (`causal_only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from altoruntime.batching import IGNORE, Batch, check_batch

LENGTH_FLOOR = 16  # the finest length bucket (tokens)
LABEL_FLOOR = 64  # the finest labelled-count bucket (positions)
BUCKET_STEPS = 8  # grain: 1/8 of the enclosing power of two (padding adds < 1/4 of the length or label count)


def bucket(n: int, floor: int, cap: int | None = None, steps: int = BUCKET_STEPS) -> int:
    """`n` rounded up to a multiple of max(floor, 2^k / steps) where 2^k >= n > 2^(k-1), so less
    than 2/steps of it is padding (25% by default; steps=2 rounds up to a power of two) and a run
    sees a handful of distinct sizes; never below `n`, and at most `cap` (when given and >= n)."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    grain = max(floor, (1 << (n - 1).bit_length()) // steps)
    out = -(-n // grain) * grain
    return max(n, min(out, cap)) if cap is not None else out


@dataclass(frozen=True, eq=False)
class StepInputs:
    """Host tensors of one fused step (see the module docstring).

    ids [rows, length]; gather/target/segment/weight [labels]: flat index into the [rows,
    length] hidden states of the position that predicts the label, the token to predict, the adapter it belongs to and its
    weight (1 / the adapter's labelled count for a training mean, 1 for evaluation sums, 0 for
    padding entries)."""

    job_ids: tuple[str, ...]
    rows: tuple[int, ...]
    counts: tuple[int, ...]  # labelled positions per adapter
    ids: torch.Tensor
    mask: torch.Tensor  # [rows, length] (the eager path with a non-causal mask reads it)
    gather: torch.Tensor
    target: torch.Tensor
    segment: torch.Tensor
    weight: torch.Tensor
    causal_only: bool  # every row's mask is a prefix of ones: the backbone needs no mask

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    @property
    def labels(self) -> int:
        return int(self.gather.shape[0])

    def shape_key(self) -> tuple:
        """What fixes the device work of the step (with the adapters' slots and ranks)."""
        return (self.rows, self.length, self.labels, self.causal_only)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors a captured step copies in, in the step body's argument order."""
        return (self.ids, self.gather, self.target, self.segment, self.weight)


def pack_step(batches: Mapping[str, Batch] | Sequence[tuple[str, Batch]], pad_token_id: int, mean: bool, max_length: int | None = None,
              bucketed: bool = True, scale: Mapping[str, float] | None = None, steps: int | None = None,
              at_least: tuple[int, int] = (0, 0)) -> StepInputs:
    """Pack `batches` (adapter -> (input_ids, attention_mask, labels), or such pairs: an adapter
    may then come twice, for a forward-only evaluation) in their order.

    mean: weights 1/count (each adapter's mean token loss) rather than 1 (sums).
    scale: a factor on some adapters' weights (1/k for one of k accumulated micro-batches).
    max_length: the model's position limit (a length bucket never exceeds it).
    bucketed: pad length and labels to their buckets (False: the exact sizes).
    steps: a coarser grain (1/steps of the enclosing power of two) for length and labels, and the row count too:
    padding rows (no labels, so no loss and no gradient) go to the last adapter. For captured
    steps, where one more shape costs a capture and a replay is launch-bound, not size-bound.
    at_least: (length, labels) to pad to at least when bucketed (an earlier step's shape, to replay
    its graph)."""
    if not batches:
        raise ValueError("batches: need at least one adapter's batch")
    pairs = list(batches.items()) if isinstance(batches, Mapping) else list(batches)
    parts = [tuple(t.cpu() for t in check_batch(j, b)) for j, b in pairs]
    longest = max(int(p[0].shape[1]) for p in parts)
    grain = BUCKET_STEPS if steps is None else steps
    length = max(bucket(longest, LENGTH_FLOOR, max_length, grain), at_least[0]) if bucketed else longest
    if bucketed and steps is not None:
        n_rows = sum(int(p[0].shape[0]) for p in parts)
        extra = bucket(n_rows, 1, steps=steps) - n_rows
        if extra:
            ids_, mask_, labels_ = parts[-1]
            parts[-1] = (torch.cat([ids_, ids_.new_full((extra, ids_.shape[1]), pad_token_id)]),
                         torch.cat([mask_, mask_.new_zeros((extra, mask_.shape[1]))]),
                         torch.cat([labels_, labels_.new_full((extra, labels_.shape[1]), IGNORE)]))
    ids = torch.cat([torch.nn.functional.pad(p[0].long(), (0, length - p[0].shape[1]), value=pad_token_id)
                     for p in parts])
    mask = torch.cat([torch.nn.functional.pad(p[1].long(), (0, length - p[1].shape[1]), value=0) for p in parts])
    labels = torch.cat([torch.nn.functional.pad(p[2].long(), (0, length - p[2].shape[1]), value=IGNORE)
                        for p in parts])
    rows = tuple(int(p[0].shape[0]) for p in parts)
    seg_of_row = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(rows))
    target_all = labels[:, 1:]
    valid = target_all != IGNORE
    flat = valid.reshape(-1).nonzero().squeeze(1)  # host tensor: no device sync
    seg = seg_of_row.repeat_interleave(length - 1)[flat]
    at = flat // (length - 1) * length + flat % (length - 1)  # the same position in [rows, length]
    counts = torch.bincount(seg, minlength=len(rows))
    n = int(flat.shape[0])
    total = max(bucket(n, LABEL_FLOOR, steps=grain), at_least[1]) if bucketed else n
    pad = total - n
    weight = (1.0 / counts.clamp(min=1).double())[seg].float() if mean else torch.ones(n)
    if scale:
        factor = torch.tensor([float(scale.get(j, 1.0)) for j, _ in pairs], dtype=torch.float64)
        weight = (weight.double() * factor[seg]).float()
    lengths = mask.sum(1)
    causal_only = bool((mask == (torch.arange(length)[None, :] < lengths[:, None]).long()).all())
    return StepInputs(
        job_ids=tuple(j for j, _ in pairs), rows=rows, counts=tuple(int(c) for c in counts),
        ids=ids, mask=mask,
        gather=torch.cat([at, at.new_zeros(pad)]),
        target=torch.cat([target_all.reshape(-1)[flat], flat.new_zeros(pad)]),
        segment=torch.cat([seg, seg.new_zeros(pad)]),
        weight=torch.cat([weight, weight.new_zeros(pad)]),
        causal_only=causal_only,
    )
