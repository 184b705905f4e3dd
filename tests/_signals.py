"""Signal handlers the tests install (where `alto` itself would install `signals_as_interrupt`)."""

from __future__ import annotations

from types import FrameType


def as_interrupt(signum: int, frame: FrameType | None) -> None:
    """A handler that turns the signal (SIGTERM in the tests) into Ctrl-C, at once."""
    raise KeyboardInterrupt(f"signal {signum}")
