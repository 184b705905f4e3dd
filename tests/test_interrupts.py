"""deferred_interrupts: Ctrl-C/SIGTERM during a write that must land whole act only after it."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from altosim.files import atomic_write
from altosim.interrupts import deferred_interrupts


def _as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def term_interrupts():
    before = signal.signal(signal.SIGTERM, _as_interrupt)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_the_block_acts_after_it(term_interrupts, signum):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signum)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGTERM) is _as_interrupt  # handlers restored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_signal_no_effect_and_errors_pass_through(term_interrupts):
    with deferred_interrupts():
        pass
    with pytest.raises(OSError, match="disk"):
        with deferred_interrupts():
            raise OSError("disk full")
    assert signal.getsignal(signal.SIGTERM) is _as_interrupt


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_outside_the_main_thread_the_block_just_runs():
    seen = []

    def work():
        with deferred_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    handler = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [handler]


def test_atomic_write_lands_every_file_when_interrupted_between_them(term_interrupts, tmp_path, monkeypatch):
    """A SIGTERM after the first file is in place: the second still lands, then the interrupt."""
    replace = os.replace
    calls = []

    def replace_then_signal(src, dst):
        replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        atomic_write([(tmp_path / "a.csv", "a\n"), (tmp_path / "b.csv", "b\n")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]
