"""Seeded randomness that gives the same draws on every machine and Python version.

Python only promises that a seeded ``Random.random()`` stream is stable across versions
(``randint``/``choice``/``shuffle`` may change), so every draw here is built on ``random()``.
Seeds are hashed with SHA-256 because the built-in ``hash`` is salted per process.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from the parts' text; identical on every machine."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def unit_hash(*parts: object) -> float:
    """A float in [0, 1) from the parts' text; used to bucket examples into splits."""
    return stable_hash(*parts) / 2.0**64


class StableRandom:
    """A small RNG whose draws only use ``random.Random.random`` (version-stable)."""

    def __init__(self, *seed_parts: object) -> None:
        self._rng = random.Random(stable_hash(*seed_parts))

    def random(self) -> float:
        return self._rng.random()

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi], both ends included."""
        if hi < lo:
            raise ValueError(f"randint: hi ({hi}) must be >= lo ({lo})")
        return lo + min(int(self._rng.random() * (hi - lo + 1)), hi - lo)

    def choice(self, seq: Sequence[T]) -> T:
        if not seq:
            raise ValueError("choice: seq must not be empty")
        return seq[self.randint(0, len(seq) - 1)]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """k distinct elements of seq, in draw order."""
        if not 0 <= k <= len(seq):
            raise ValueError(f"sample: k must be in [0, {len(seq)}], got {k}")
        pool = list(seq)
        return [pool.pop(self.randint(0, len(pool) - 1)) for _ in range(k)]

    def shuffle(self, items: list[T]) -> None:
        """Fisher-Yates in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.randint(0, i)
            items[i], items[j] = items[j], items[i]


def stable_permutation(n: int, *seed_parts: object) -> list[int]:
    """A permutation of range(n) that depends only on n and the seed parts."""
    order = list(range(n))
    StableRandom("permutation", n, *seed_parts).shuffle(order)
    return order
