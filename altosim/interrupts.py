"""Ctrl-C and SIGTERM: one way to stop, raised only where stopping is safe, held off whole writes.

A time limit (SIGTERM) stops `alto` as Ctrl-C does: KeyboardInterrupt, so cleanups run and the command
says "interrupted" in one line (exit 130) instead of dying with temp files left behind.

Python runs a signal handler in the main thread at whatever bytecode it reached, and a KeyboardInterrupt
raised in the wrong place does harm: inside a `__del__` it is printed ("Exception ignored in ...") and
dropped, so the run goes on; inside an import that C++ started (torch's lazy imports of triton and
dynamo) it aborts the process (SIGABRT). So the handler never raises in an import or a finalizer, and
prefers a frame of alto's own code: elsewhere it sends the signal again 20 ms later (a local step
returns to alto's loop many times a second). A stop that has waited a second takes any frame outside
imports and finalizers: a Ray driver spends its time in `ray.wait`, whose Python wrapper is where the
handler runs when the wait returns.

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
import time
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PACKAGES = ("altosim", "altoruntime", "altokernels")  # where a stop is raised first
RETRY_S = 0.02
PATIENCE_S = 1.0  # after this long a stop takes any frame outside imports and finalizers


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
    """A signal handler that raises KeyboardInterrupt outside imports and finalizers, in a frame under
    `dirs` or, once the stop has waited `patience_s`, in any frame; otherwise it re-sends the signal
    after `retry_s`."""

    def __init__(self, dirs: tuple[str, ...], retry_s: float = RETRY_S, patience_s: float = PATIENCE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.dirs, self.retry_s, self.patience_s, self.clock = dirs, retry_s, patience_s, clock
        self.timer: threading.Timer | None = None
        self.asked: float | None = None  # when the stop not yet raised was first asked for

    def cancel(self) -> bool:
        """Stop a pending re-send; True if one was still waiting to fire (a stop asked for and not yet
        raised; one that fired was delivered, to this handler or to one a library had put in its place)."""
        timer, self.timer = self.timer, None
        if timer is None:
            return False
        waiting = not timer.finished.is_set()
        timer.cancel()
        return waiting

    def safe(self, frame: FrameType | None) -> bool:
        if frame is None:  # called from Python code (a deferred signal delivered after its write)
            return True
        f: FrameType | None = frame
        while f is not None:
            code = f.f_code
            if code.co_name == "__del__" or code.co_filename.startswith("<frozen importlib"):
                return False
            f = f.f_back
        if os.path.realpath(frame.f_code.co_filename).startswith(self.dirs):  # dirs are resolved too
            return True
        return self.asked is not None and self.clock() - self.asked >= self.patience_s

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.cancel()
        if self.asked is None:
            self.asked = self.clock()
        if self.safe(frame):
            self.asked = None
            raise KeyboardInterrupt(f"signal {signum}")
        self.timer = threading.Timer(self.retry_s, os.kill, (os.getpid(), signum))
        self.timer.daemon = True
        self.timer.start()


@contextmanager
def signals_as_interrupt(dirs: tuple[str, ...] | None = None) -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise KeyboardInterrupt at the next safe point (see
    SafeInterrupt; `dirs` default: alto's packages); a stop still waiting when the block ends is raised there.
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
def handlers_kept() -> Iterator[None]:
    """Put SIGINT's and SIGTERM's handlers back as they were after the block: for a library call that
    installs its own (ray.init makes SIGTERM `sys.exit(15)`, which would skip the stop's partial
    outputs and its one line; ray.shutdown resets SIGTERM to the default in C, where Python's table
    does not see it: setting the handler again puts Python's C handler back too)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in before.items():
            if old is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(s, old)


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
