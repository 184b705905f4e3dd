"""The backend contract's event order: a batch's order depends on its events only, never on the
order the workers answered in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.event_order import EVENT_ORDER, LEGACY_ORDER, feed_batch, order_events
from altosim.policy.types import (
    Admit, JobFailed, JobFinished, JobSpec, StepReport, Stop, Suspend, TaskArrived, TaskSpec, Tick,
)


def _task(task_id: str, arrival: float) -> TaskSpec:
    return TaskSpec(task_id, arrival, "tiny", "d", 1, (JobSpec(f"{task_id}/j0", task_id, 1e-3, 2, 1),), 10)


BATCH = [
    StepReport(3.0, "b", "b/j1", 4, 8, 1.0, 1.0),
    JobFinished(3.0, "a", "a/j0"),
    StepReport(2.0, "a", "a/j0", 6, 12, 1.0, 1.0),
    Tick(3.0),
    JobFailed(3.1, "a", "a/j1", "nan"),
    StepReport(2.5, "a", "a/j0", 5, 10, 1.0, 1.0),
    TaskArrived(0.0, _task("z", 1.0)),
    TaskArrived(0.0, _task("c", 1.0), more_coming=True),
    TaskArrived(0.0, _task("y", 0.5)),
    StepReport(3.0, "a", "a/j1", 2, 2, 1.0, 1.0),
]


def _name(e) -> str:
    if isinstance(e, TaskArrived):
        return f"arrived {e.task.task_id}"
    if isinstance(e, Tick):
        return "tick"
    return f"{e.kind} {e.job_id}" + (f" @{e.step}" if isinstance(e, StepReport) else "")


def test_the_documented_order():
    got = order_events(BATCH, now=7.0)
    assert [_name(e) for e in got] == [
        "arrived y", "arrived c", "arrived z",  # by (arrival, task id)
        "step_report a/j0 @5", "step_report a/j0 @6", "job_finished a/j0",  # by (task, job), then step
        "step_report a/j1 @2", "job_failed a/j1", "step_report b/j1 @4", "tick"]
    assert [e.more_coming for e in got[:3]] == [True, True, False]  # planned once, after the last
    assert {e.now for e in got} == {7.0}  # one batch, one time


@settings(max_examples=50, deadline=None)
@given(st.permutations(BATCH))
def test_any_arrival_order_of_a_batch_gives_the_same_order(perm):
    assert order_events(perm, now=1.0) == order_events(BATCH, now=1.0)
    assert order_events(perm) == order_events(BATCH)  # without `now`, each keeps its own time


STEP = [  # one fused step of task t, in a trainer's slot order (j2 was admitted first)
    StepReport(5.0, "t", "t/j2", 4, 4, 1.0, 1.0), JobFinished(5.0, "t", "t/j2"),
    StepReport(5.0, "t", "t/j0", 4, 4, 1.0, 1.0), JobFinished(5.0, "t", "t/j0"),
    StepReport(5.0, "t", "t/j1", 4, 4, 1.0, 1.0), JobFailed(5.0, "t", "t/j3", "nan"),
]


def _feed(order, acts_on):
    """Feed STEP; the Controller answers an event named in `acts_on` with the actions given there."""
    return [_name(e) for e in feed_batch(STEP, lambda e: acts_on.get(_name(e), []), order)]


def test_feed_batch_drops_what_follows_a_stop_in_the_contract_and_only_a_finish_in_legacy():
    cut = {"step_report t/j0 @4": [Stop("t", "t/j1", "pruned"), Stop("t", "t/j2", "pruned"),
                                   Suspend("t", "t/j3")]}
    got = _feed(EVENT_ORDER, cut)
    assert got == ["step_report t/j0 @4", "job_finished t/j0"]  # j1, j2, j3 follow j0 and were taken out
    assert _feed(LEGACY_ORDER, cut) == [  # slot order kept; j2's finish came before the cut: kept
        "step_report t/j2 @4", "job_finished t/j2", "step_report t/j0 @4", "job_finished t/j0",
        "step_report t/j1 @4", "job_failed t/j3"]
    resumed = {**cut, "job_finished t/j0": [Admit("t", "t/j1", resume=True)]}
    assert _feed(EVENT_ORDER, resumed) == ["step_report t/j0 @4", "job_finished t/j0", "step_report t/j1 @4"]
    own = {"step_report t/j0 @4": [Stop("t", "t/j0", "pruned")]}  # a job stopped by its own report
    assert _feed(LEGACY_ORDER, own)[2:4] == ["step_report t/j0 @4", "step_report t/j1 @4"]  # finish dropped
    assert "job_finished t/j0" not in _feed(EVENT_ORDER, own)
    with pytest.raises(ValueError, match="order"):
        feed_batch(STEP, lambda e: [], order=7)
