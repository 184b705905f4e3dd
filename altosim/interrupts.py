"""Hold Ctrl-C and SIGTERM off a write that must land whole, then deliver them.

An interrupt raised inside torch.save leaves its zip writer mid-record; its cleanup then raises a
RuntimeError in place of the KeyboardInterrupt, so the user sees a traceback instead of "interrupted".
Python runs signal handlers in the main thread between bytecodes, so swapping the handlers for ones
that only record is what defers them (masking the signal in one thread does not: the kernel hands it to
another thread, torch's pool threads included, and Python still runs the handler in the main thread).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block with SIGINT/SIGTERM recorded, not acted on; on leaving, restore the handlers and
    act on the first signal that came (its handler runs: Ctrl-C raises KeyboardInterrupt after the block).
    Outside the main thread (where handlers cannot be set) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if came:
            _deliver(came[0], before[came[0]])


def _deliver(signum: int, handler: object) -> None:
    """Act on `signum` as `handler` (what was installed before the block) would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_IGN:
        return
    else:  # SIG_DFL, or a handler set outside Python: the default action
        signal.raise_signal(signum)
