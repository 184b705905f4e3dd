"""The Ray engine keeps Ctrl-C's way of stopping: whatever signal handlers ray.init and ray.shutdown
install are undone after them, and ray.init's own SIGTERM exit becomes a KeyboardInterrupt (the
stop that writes partial outputs and says so in one line). A fake `ray` module stands in for Ray,
doing to the handlers what the real one does."""

from __future__ import annotations

import signal
import sys
import types

import pytest

from altoruntime.cluster.ray_engine import RayBackend
from tests._signals import as_interrupt


def _fake_ray(init_exits: bool) -> types.ModuleType:
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: False

    def init(**kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does
        if init_exits:
            sys.exit(signal.SIGTERM)  # its handler ran: a SIGTERM came while Ray started

    def cluster_resources():
        raise RuntimeError("stop here: the loop is not what this test is about")

    def shutdown():
        ray.shutdowns += 1
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as dropping the core worker does (in C)

    ray.init, ray.cluster_resources, ray.shutdown, ray.shutdowns = init, cluster_resources, shutdown, 0
    return ray


@pytest.fixture
def handler():
    before = signal.signal(signal.SIGTERM, as_interrupt)
    yield
    signal.signal(signal.SIGTERM, before)


def _backend():
    return RayBackend(controller=None, make_trainer=None, data_for=None)


@pytest.mark.parametrize("init_exits", [False, True])
def test_ray_init_and_shutdown_leave_the_handlers_as_they_were(handler, monkeypatch, init_exits):
    ray = _fake_ray(init_exits)
    monkeypatch.setitem(sys.modules, "ray", ray)
    with pytest.raises(KeyboardInterrupt if init_exits else RuntimeError):
        _backend().run([])
    assert signal.getsignal(signal.SIGTERM) is as_interrupt
    assert ray.shutdowns == 1  # a start cut short is shut down too (left to the exit, Ray crashed it)


def test_another_exit_from_ray_init_is_left_alone(handler, monkeypatch):
    ray = _fake_ray(False)

    def init(**kwargs):
        sys.exit(3)

    ray.init = init
    monkeypatch.setitem(sys.modules, "ray", ray)
    with pytest.raises(SystemExit):
        _backend().run([])
    assert ray.shutdowns == 1
