"""Intra-task scheduler: which waiting jobs join a task's running group.

The paper's rule: admit jobs grouped by per-adapter batch size, greedily in decreasing batch
order, while the memory model says the group still fits; when a job exits, backfill first with
a waiting job of the *same* batch size (ranks keep equal tokens per step, so collectives stay in
lockstep), else with any job that fits. This module is a pure function of its arguments; the
TaskGroup owns the queue order (e.g. rotating candidates through freed slots in warm-up).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from altosim.policy.memory import MemoryModel
from altosim.policy.types import JobSpec


def pick_admissions(
    running: Sequence[JobSpec],
    candidates: Sequence[JobSpec],
    memory: MemoryModel | None,
    seq_len: int,
    max_jobs: int | None = None,
    prefer_batch: int | None = None,
) -> list[JobSpec]:
    """Jobs to admit, in admission order.

    Candidates are tried in decreasing `batch_size` (stable: queue order within a batch size);
    with `prefer_batch` (the batch size of a job that just exited) candidates of exactly that
    size are tried first. A candidate is admitted when the running group plus everything
    admitted so far plus it fits `memory` (None: no memory limit) and the group stays within
    `max_jobs` (None: no cap). A candidate that does not fit is skipped, not a barrier: a
    smaller one behind it may still fit.
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be > 0, got {seq_len!r}")
    if max_jobs is not None and max_jobs < 0:
        raise ValueError(f"max_jobs must be >= 0 or None, got {max_jobs!r}")
    ids = [j.job_id for j in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError("candidates: duplicate job_id")
    running_ids = {j.job_id for j in running}
    if running_ids.intersection(ids):
        raise ValueError(f"candidates: job already running: {sorted(running_ids.intersection(ids))[0]}")
    for j in (*running, *candidates):
        if j.batch_size <= 0:
            raise ValueError(f"job {j.job_id}: batch_size must be > 0, got {j.batch_size!r}")

    order = sorted(candidates, key=lambda j: -j.batch_size)  # sorted() is stable
    if prefer_batch is not None:
        order = [j for j in order if j.batch_size == prefer_batch] + [
            j for j in order if j.batch_size != prefer_batch
        ]

    total = sum(j.micro_batch for j in running)  # rows resident at once (a micro-batch when accumulating)
    count = len(running)
    admitted: list[JobSpec] = []
    for job in order:
        if max_jobs is not None and count >= max_jobs:
            break
        if memory is not None and not memory.fits(total + job.micro_batch, seq_len):
            continue
        admitted.append(job)
        total += job.micro_batch
        count += 1
    return admitted


def group_by_batch(jobs: Sequence[JobSpec]) -> dict[int, list[JobSpec]]:
    """Jobs keyed by per-adapter batch size, largest first, queue order kept inside a key."""
    groups: dict[int, list[JobSpec]] = defaultdict(list)
    for j in jobs:
        groups[j.batch_size].append(j)
    return {b: groups[b] for b in sorted(groups, reverse=True)}


def fits_alone(job: JobSpec, memory: MemoryModel | None, seq_len: int) -> bool:
    """Whether `job` fits an otherwise empty executor (if not, it can never be admitted)."""
    return memory is None or memory.fits(job.micro_batch, seq_len)
