"""Where a task's batches come from: the protocol the backend reads, and its `altoruntime.data` form.

A job's data order is a pure function of (job seed, stream position), so a checkpoint needs only
the integer position to resume the same order.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import torch

from altosim.policy.types import JobSpec
from altoruntime.batching import Batch


class TaskData(Protocol):
    """Where a task's batches come from. The data order is a pure function of (job, position)."""

    def train_batch(self, job: JobSpec, position: int) -> tuple[Batch, int]:
        """The batch at `position` of this job's stream and the position after it."""

    def val_batches(self) -> Sequence[Batch]:
        """The validation set, in fixed batches (the same for every job)."""

    # optional: `final_metric(model) -> float`, the task metric of a model with one adapter
    # applied (e.g. exact match of greedy generations); scored for each task's best adapter.
    # optional: `objective = (metric name, minimize, scorer)`: every config that trained is scored
    # at the task's end and the best by it is exported (otherwise the lowest validation loss).


class SplitData:
    """TaskData over tokenized splits of `altoruntime.data` (each job streams in its own seeded order)."""

    def __init__(self, train, val, val_batch_size: int = 16,
                 final_metric: Callable[[torch.nn.Module], float] | None = None,
                 objective: tuple[str, bool, Callable[[torch.nn.Module], float]] | None = None,
                 group_by_length: bool = False) -> None:
        """group_by_length: each job's stream sorts runs of rows by length (less padding)."""
        if val_batch_size < 1:
            raise ValueError(f"val_batch_size: must be >= 1, got {val_batch_size}")
        self.train = train
        self.group_by_length = group_by_length
        self._streams: dict[str, tuple[Iterator, int]] = {}  # job -> (open stream, its next position)
        if final_metric is not None:
            self.final_metric = final_metric
        if objective is not None:  # (metric name, minimize, scorer): picks the best config at the end
            self.objective = objective
        self._val = [(b.input_ids, b.attention_mask, b.labels) for b in val.batches(val_batch_size)]

    def train_batch(self, job: JobSpec, position: int) -> tuple[Batch, int]:
        it, expected = self._streams.get(job.job_id, (None, -1))
        if it is None or expected != position:  # first call, or a jump (resume): reopen the stream
            it = self.train.stream(job.batch_size, seed=job.seed, position=position,
                                   group_by_length=self.group_by_length)
        b = next(it)
        self._streams[job.job_id] = (it, b.next_position)
        return (b.input_ids, b.attention_mask, b.labels), b.next_position

    def val_batches(self) -> Sequence[Batch]:
        return self._val
