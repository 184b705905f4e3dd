"""Learning-rate schedules with linear warm-up, as transformers' `get_*_schedule_with_warmup`."""

from __future__ import annotations

import math
from typing import Literal

LrSchedule = Literal["constant", "linear", "cosine"]
LR_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")


def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """Warm-up steps for a fraction of the job's steps (rounded up, as the HF Trainer does)."""
    return math.ceil(warmup_ratio * total_steps)


def lr_factor(schedule: str, step: int, warmup: int, total: int) -> float:
    """The multiplier of the base lr for the update after `step` earlier updates (LambdaLR's
    lambda: transformers' constant / linear / cosine (half a cycle) with warm-up)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"lr_schedule: must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
