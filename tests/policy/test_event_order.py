"""The backend contract's event order: a batch's order depends on its events only, never on the
order the workers answered in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.event_order import order_events
from altosim.policy.types import JobFailed, JobFinished, JobSpec, StepReport, TaskArrived, TaskSpec, Tick


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
