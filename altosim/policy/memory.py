"""Linear GPU-memory model of one executor: M(B) = k0 + k1 * B * L.

B is the *total* per-adapter batch summed over the co-located adapters (jobs) of a group and L
the sequence length, so B * L is the number of tokens one fused step holds activations for; k0
is what does not scale with tokens (frozen backbone, adapters, optimizer state, allocator slack).
The intra-task scheduler admits jobs while M stays under (1 - margin) * capacity; the margin
absorbs fragmentation and what the profile did not see (the paper profiles peak *reserved*
memory, one synthetic step per grid point, and fits this line by least squares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class MemoryModel:
    """All quantities in bytes. `margin` is the share of `capacity` kept free."""

    k0: float
    k1: float
    capacity: float
    margin: float = 0.10

    def __post_init__(self) -> None:
        for name in ("k0", "k1", "capacity", "margin"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"MemoryModel.{name} must be finite, got {getattr(self, name)!r}")
        if self.k1 <= 0:
            raise ValueError(f"MemoryModel.k1 must be > 0 (bytes per token), got {self.k1!r}")
        if self.capacity <= 0:
            raise ValueError(f"MemoryModel.capacity must be > 0 bytes, got {self.capacity!r}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"MemoryModel.margin must be in [0, 1), got {self.margin!r}")

    @property
    def budget(self) -> float:
        """Bytes a group may use: (1 - margin) * capacity."""
        return (1.0 - self.margin) * self.capacity

    def predict(self, total_batch: int, seq_len: int) -> float:
        """Predicted peak bytes of a group whose per-adapter batches sum to `total_batch`."""
        _check_counts(total_batch, seq_len)
        return self.k0 + self.k1 * total_batch * seq_len

    def fits(self, total_batch: int, seq_len: int) -> bool:
        return self.predict(total_batch, seq_len) <= self.budget

    def max_total_batch(self, seq_len: int) -> int:
        """Largest total batch that fits (0 when even an empty group does not)."""
        _check_counts(0, seq_len)
        if not self.fits(0, seq_len):
            return 0
        b = max(0, int((self.budget - self.k0) // (self.k1 * seq_len)))
        while b > 0 and not self.fits(b, seq_len):  # float rounding at the boundary
            b -= 1
        while self.fits(b + 1, seq_len):
            b += 1
        return b

    @classmethod
    def fit(
        cls,
        points: Sequence[tuple[int, int, float]],
        capacity: float,
        margin: float = 0.10,
    ) -> "MemoryModel":
        """Least-squares fit of (total_batch, seq_len, bytes) profile points."""
        if len(points) == 0:
            raise ValueError("MemoryModel.fit: points is empty; need >= 2 distinct total_batch*seq_len")
        try:
            arr = np.asarray([(float(b) * float(l), float(m)) for b, l, m in points], dtype=float)
        except (TypeError, ValueError):
            raise ValueError("MemoryModel.fit: points must be (total_batch, seq_len, bytes) tuples") from None
        for b, l, _ in points:
            _check_counts(b, l)
        if not np.all(np.isfinite(arr)):
            raise ValueError("MemoryModel.fit: points contain a non-finite value")
        x, y = arr[:, 0], arr[:, 1]
        if len(np.unique(x)) < 2:
            raise ValueError(
                f"MemoryModel.fit: points need >= 2 distinct total_batch*seq_len values, got {len(np.unique(x))}"
            )
        design = np.stack([np.ones_like(x), x], axis=1)
        (k0, k1), *_ = np.linalg.lstsq(design, y, rcond=None)
        if k1 <= 0:
            raise ValueError(f"MemoryModel.fit: fitted k1={k1:.4g} <= 0; memory must grow with tokens")
        return cls(k0=float(k0), k1=float(k1), capacity=float(capacity), margin=float(margin))


def _check_counts(total_batch: int, seq_len: int) -> None:
    if total_batch < 0:
        raise ValueError(f"total_batch must be >= 0, got {total_batch!r}")
    if seq_len <= 0:
        raise ValueError(f"seq_len must be > 0, got {seq_len!r}")
