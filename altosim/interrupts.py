"""Ctrl-C and SIGTERM: one way to stop, raised only where stopping is safe, held off whole writes.

A time limit (SIGTERM) stops `alto` as Ctrl-C does: KeyboardInterrupt, so cleanups run and the command
says "interrupted" in one line (exit 130) instead of dying with temp files left behind.

Python runs a signal handler in the main thread at whatever bytecode it reached, and a KeyboardInterrupt
raised in the wrong place does harm: inside a `__del__` it is printed ("Exception ignored in ...") and
dropped, so the run goes on; inside an import that C++ started (torch's lazy imports of triton and
dynamo) it aborts the process (SIGABRT). So the handler raises only in a frame of alto's own code and
outside imports and finalizers; elsewhere it sends the signal again 20 ms later, until it lands in such
a frame (a step returns to alto's loop many times a second).

An interrupt raised inside torch.save leaves its zip writer mid-record; its cleanup then raises a
RuntimeError in place of the KeyboardInterrupt. `deferred_interrupts` swaps the handlers for ones that
only record around such writes (masking the signal in one thread does not defer it: the kernel hands
it to another thread, torch's pool threads included, and Python still runs the handler in the main
thread).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Iterable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PACKAGES = ("altosim", "altoruntime", "altokernels")  # where a KeyboardInterrupt may be raised
RETRY_S = 0.02


def _heeded() -> list[int]:
    """SIGINT and SIGTERM, less one ignored when this process started (`cmd &` in a script ignores
    SIGINT, `nohup` SIGHUP): as Python itself does, a signal the parent ignores stays ignored."""
    return [s for s in SIGNALS if signal.getsignal(s) != signal.SIG_IGN]


def package_dirs(names: Iterable[str] = PACKAGES) -> tuple[str, ...]:
    """The folders of the named packages (found, not imported), each ending in a path separator."""
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)
        for d in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.join(str(Path(d).resolve()), ""))
    return tuple(dirs)


class SafeInterrupt:
    """A signal handler that raises KeyboardInterrupt in a frame under `dirs` (not in an import or a
    finalizer); anywhere else it re-sends the signal after `retry_s`."""

    def __init__(self, dirs: tuple[str, ...], retry_s: float = RETRY_S):
        self.dirs, self.retry_s = dirs, retry_s
        self.timer: threading.Timer | None = None

    def cancel(self) -> bool:
        """Stop a pending re-send; True if one was pending (a stop asked for and not yet raised)."""
        timer, self.timer = self.timer, None
        if timer is None:
            return False
        timer.cancel()
        return True

    def safe(self, frame: FrameType | None) -> bool:
        if frame is None:  # called from Python code (a deferred signal delivered after its write)
            return True
        if not os.path.abspath(frame.f_code.co_filename).startswith(self.dirs):
            return False
        f: FrameType | None = frame
        while f is not None:
            code = f.f_code
            if code.co_name == "__del__" or code.co_filename.startswith("<frozen importlib"):
                return False
            f = f.f_back
        return True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.cancel()
        if self.safe(frame):
            raise KeyboardInterrupt(f"signal {signum}")
        self.timer = threading.Timer(self.retry_s, os.kill, (os.getpid(), signum))
        self.timer.daemon = True
        self.timer.start()


@contextmanager
def signals_as_interrupt(dirs: tuple[str, ...] | None = None) -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise KeyboardInterrupt at the next safe point in code under
    `dirs` (default: alto's packages); a stop still waiting for one when the block ends is raised there.
    The old handlers after. Outside the main thread, and for an ignored signal: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = SafeInterrupt(package_dirs() if dirs is None else dirs)
    before = {s: signal.signal(s, handler) for s in _heeded()}
    try:
        yield
    finally:
        for s, old in before.items():
            signal.signal(s, old)
        pending = handler.cancel()
    if pending:
        raise KeyboardInterrupt("signal while finishing")


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block with SIGINT/SIGTERM recorded, not acted on; on leaving, restore the handlers and
    act on the first signal that came (its handler runs: Ctrl-C raises KeyboardInterrupt after the block).
    Outside the main thread (where handlers cannot be set) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in _heeded()}
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
