"""deferred_interrupts: Ctrl-C/SIGTERM during a write that must land whole act only after it."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time

import pytest

from altosim.files import atomic_write
from altosim.interrupts import SafeInterrupt, deferred_interrupts, handlers_kept, signals_as_interrupt
from tests._signals import as_interrupt

HERE = (os.path.join(os.path.dirname(os.path.abspath(__file__)), ""),)  # this file's code is "ours" here


@pytest.fixture
def term_interrupts():
    """SIGTERM raises KeyboardInterrupt, SIGINT is Python's default (a test run started in the
    background by a script inherits an ignored SIGINT)."""
    before = signal.signal(signal.SIGTERM, as_interrupt), signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_the_block_acts_after_it(term_interrupts, signum):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signum)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGTERM) is as_interrupt  # handlers restored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_signal_no_effect_and_errors_pass_through(term_interrupts):
    with deferred_interrupts():
        pass
    with pytest.raises(OSError, match="disk"):
        with deferred_interrupts():
            raise OSError("disk full")
    assert signal.getsignal(signal.SIGTERM) is as_interrupt


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        with signals_as_interrupt(HERE):
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
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


def test_sigterm_stops_any_alto_command_as_ctrl_c_does(term_interrupts, tmp_path, monkeypatch, capsys):
    """SIGTERM (a time limit) while a command runs: one line, exit 130, the old handlers back after. The
    signal lands in this test's frame (not alto's code), so the stop waits and is raised as the command
    ends."""
    from altosim import cli

    def killed_mid_run(args):
        signal.raise_signal(signal.SIGTERM)
        return 0

    monkeypatch.setattr(cli, "cmd_simulate", killed_mid_run)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert cli.main(["simulate", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["alto: interrupted"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers


def _safe_here():
    """Whether a signal arriving in this function's frame would be raised there."""
    return SafeInterrupt(HERE).safe(sys._getframe())


class _Finalized:
    def __init__(self, seen):
        self.seen = seen

    def __del__(self):
        self.seen.append(_safe_here())


def test_safe_points_are_frames_of_the_named_code_outside_finalizers_and_imports(tmp_path, monkeypatch):
    assert _safe_here() and SafeInterrupt(HERE).safe(None)
    assert not SafeInterrupt((str(tmp_path) + os.sep,)).safe(sys._getframe())  # not the named code
    seen = []
    _Finalized(seen)  # collected at once: its __del__ runs here
    assert seen == [False]
    (tmp_path / "probe_import_frame.py").write_text("from tests.test_interrupts import _safe_here\nSAFE = _safe_here()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("probe_import_frame")  # _safe_here runs while this import is in progress
    assert probe.SAFE is False


def test_a_signal_in_a_finalizer_is_raised_at_the_next_safe_point(term_interrupts):
    """Raised inside __del__ a KeyboardInterrupt would be printed and dropped; here it comes later."""
    class Stops:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        with signals_as_interrupt(HERE):
            Stops()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the resent signal lands in this loop (this file's code)
                time.sleep(0.001)  # (a bare loop: CPython 3.13.0 lets a handler's exception there escape `with`)
            raise AssertionError("the stop never came")


def test_handlers_kept_undoes_what_a_library_call_installs(term_interrupts):
    """ray.init makes SIGTERM `sys.exit(15)`; alto's engine calls it with the handlers kept."""
    with handlers_kept():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) is as_interrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_that_waited_takes_any_frame_but_never_a_finalizer(tmp_path):
    """A Ray driver's main thread sits in ray.wait: the handler runs in Ray's wrapper, never in alto's
    frames, so after `patience_s` any frame will do; a finalizer or an import still will not."""
    now = [0.0]
    handler = SafeInterrupt((str(tmp_path) + os.sep,), patience_s=1.0, clock=lambda: now[0])  # this file is foreign
    here = sys._getframe()
    assert not handler.safe(here)
    handler.asked = 0.0
    now[0] = 0.5
    assert not handler.safe(here)
    now[0] = 1.0
    assert handler.safe(here)
    seen = []

    class Finalized:
        def __del__(self):
            seen.append(handler.safe(sys._getframe()))

    Finalized()
    assert seen == [False]


def test_code_reached_through_a_symlink_is_still_ours(tmp_path, monkeypatch):
    """The packages' folders are resolved; a frame's file is compared by its real path too."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "probe_symlinked_code.py").write_text("import sys\ndef frame():\n    return sys._getframe()\n")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path / "link"))
    probe = importlib.import_module("probe_symlinked_code")
    assert "link" in probe.frame().f_code.co_filename
    assert SafeInterrupt((os.path.join(str(real.resolve()), ""),)).safe(probe.frame())
