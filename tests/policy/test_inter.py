"""Greedy inter-task schedulers (fifo, sjf), the free-GPU profile and plan validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from altosim.policy.inter import (
    Assignment,
    FifoScheduler,
    Plan,
    RunningTask,
    SjfScheduler,
    WaitingTask,
    assign_gpu_ids,
    lower_bound,
    validate_plan,
)
from altosim.policy.registry import INTER_TASK
from tests.policy.test_inter_strategies import brute_force_makespan, instances


def W(i: str, gpus: int, dur: float, arr: float = 0.0) -> WaitingTask:
    return WaitingTask(i, gpus, dur, arr)


def starts(plan: Plan) -> dict[str, float]:
    return {a.task_id: a.start for a in plan.assignments}


def test_registry_builds_by_name() -> None:
    assert {"fifo", "sjf", "cpsat"} <= set(INTER_TASK.names())
    assert isinstance(INTER_TASK.build("fifo"), FifoScheduler)
    with pytest.raises(ValueError, match="unknown inter_task policy"):
        INTER_TASK.build("lottery")


def test_fifo_blocks_behind_the_head_sjf_does_not() -> None:
    # 4 GPUs, 2 busy until t=10. Head needs 4 GPUs; a 1-GPU task behind it fits now.
    running = [RunningTask("r", (0, 1), 10.0)]
    waiting = [W("big", 4, 5.0, 0.0), W("small", 1, 3.0, 1.0)]
    f = FifoScheduler().plan(0.0, 4, running, waiting)
    assert starts(f) == {"big": 10.0, "small": 15.0}
    assert f.makespan == 18.0 and f.status == "greedy"
    s = SjfScheduler().plan(0.0, 4, running, waiting)
    assert starts(s) == {"small": 0.0, "big": 10.0}
    assert s.makespan == 15.0
    assert [a.task_id for a in s.starts_now(0.0)] == ["small"]


def test_fifo_ties_by_task_id_and_sjf_ties_by_arrival_then_id() -> None:
    waiting = [W("b", 1, 2.0, 0.0), W("a", 1, 2.0, 0.0), W("c", 1, 1.0, 5.0)]
    f = FifoScheduler().plan(0.0, 1, [], waiting)
    assert starts(f) == {"a": 0.0, "b": 2.0, "c": 4.0}
    s = SjfScheduler().plan(0.0, 1, [], waiting)
    assert starts(s) == {"c": 0.0, "a": 1.0, "b": 3.0}


def test_sjf_fills_a_hole_before_a_wider_task() -> None:
    # 2 GPUs; 1 busy until 10. "wide" (2 GPUs) must wait for 10; a short 1-GPU task fits before.
    running = [RunningTask("r", (0,), 10.0)]
    waiting = [W("wide", 2, 1.0), W("long", 1, 20.0), W("short", 1, 0.5)]
    s = SjfScheduler().plan(0.0, 2, running, waiting)
    assert starts(s) == {"short": 0.0, "wide": 10.0, "long": 11.0}


def test_empty_queue_plan() -> None:
    running = [RunningTask("r", (0, 1), 4.0)]
    for sched in (FifoScheduler(), SjfScheduler(), INTER_TASK.build("cpsat")):
        p = sched.plan(3.0, 2, running, [])
        assert p.assignments == () and p.makespan == 7.0 and p.lower_bound == 7.0


@pytest.mark.parametrize(
    "running,waiting,match",
    [
        ([], [W("a", 3, 1.0)], "gpus=3"),
        ([], [W("a", 0, 1.0)], "gpus=0"),
        ([], [W("a", 1, -1.0)], "duration"),
        ([], [W("a", 1, 0.0)], "duration"),
        ([], [W("a", 1, float("inf"))], "duration"),
        ([], [W("a", 1, 1.0), W("a", 1, 1.0)], "duplicate"),
        ([RunningTask("r", (0,), 1.0), RunningTask("q", (0,), 1.0)], [], "GPU 0 already held"),
        ([RunningTask("r", (5,), 1.0)], [], "GPU id 5"),
        ([RunningTask("r", (0,), -1.0)], [], "remaining"),
    ],
)
def test_bad_input_raises_one_clear_error(running, waiting, match) -> None:
    for sched in (FifoScheduler(), SjfScheduler(), INTER_TASK.build("cpsat")):
        with pytest.raises(ValueError, match=match):
            sched.plan(0.0, 2, running, waiting)


def test_validate_plan_catches_each_defect() -> None:
    running = [RunningTask("r", (0,), 5.0)]
    waiting = [W("a", 1, 4.0), W("b", 2, 1.0)]
    good = Plan((Assignment("a", 0.0, 1), Assignment("b", 5.0, 2)), 6.0, "greedy", 0.0, 6.0)
    validate_plan(good, 0.0, 2, running, waiting)
    bad = {
        "missing": Plan((Assignment("a", 0.0, 1),), 6.0, "greedy", 0.0, 0.0),
        "unknown": good.__class__(good.assignments + (Assignment("z", 9.0, 1),), 10.0, "greedy", 0.0, 0.0),
        "twice": Plan(good.assignments + (Assignment("a", 7.0, 1),), 11.0, "greedy", 0.0, 0.0),
        "needs 2": Plan((Assignment("a", 0.0, 1), Assignment("b", 5.0, 1)), 6.0, "greedy", 0.0, 0.0),
        "< now": Plan((Assignment("a", -1.0, 1), Assignment("b", 5.0, 2)), 6.0, "greedy", 0.0, 0.0),
        "GPUs in use": Plan((Assignment("a", 0.0, 1), Assignment("b", 4.0, 2)), 6.0, "greedy", 0.0, 0.0),
        "makespan": Plan(good.assignments, 5.5, "greedy", 0.0, 0.0),
    }
    for match, plan in bad.items():
        with pytest.raises(ValueError, match=match):
            validate_plan(plan, 0.0, 2, running, waiting)


def test_back_to_back_tasks_share_gpus() -> None:
    # half-open intervals: b may start at the instant a ends
    waiting = [W("a", 2, 3.0, 0.0), W("b", 2, 3.0, 1.0)]
    p = FifoScheduler().plan(0.0, 2, [], waiting)
    assert starts(p) == {"a": 0.0, "b": 3.0}
    validate_plan(p, 0.0, 2, [], waiting)
    ids = assign_gpu_ids(p, 0.0, 2, [], waiting)
    assert ids == {"a": (0, 1), "b": (0, 1)}


@settings(max_examples=200, deadline=None)
@given(inst=instances())
def test_greedy_plans_are_valid_and_realizable(inst) -> None:
    now, num_gpus, running, waiting = inst
    lb = lower_bound(now, num_gpus, running, waiting) if waiting else None
    for sched in (FifoScheduler(), SjfScheduler()):
        p = sched.plan(now, num_gpus, running, waiting)
        validate_plan(p, now, num_gpus, running, waiting)  # capacity, coverage, start >= now
        if lb is not None:
            assert p.lower_bound == lb <= p.makespan
        # concrete ids: never a GPU held by two tasks at once, never one a running task holds
        ids = assign_gpu_ids(p, now, num_gpus, running, waiting)
        dur = {w.task_id: w.duration for w in waiting}
        spans = [(now, now + r.remaining, set(r.gpus)) for r in running]
        spans += [(a.start, a.start + dur[a.task_id], set(ids[a.task_id])) for a in p.assignments]
        for i, (s1, e1, g1) in enumerate(spans):
            for s2, e2, g2 in spans[i + 1 :]:
                if s1 < e2 and s2 < e1:
                    assert not g1 & g2
    f = FifoScheduler().plan(now, num_gpus, running, waiting)
    order = sorted(waiting, key=lambda w: (w.arrival, w.task_id))
    fs = starts(f)
    assert [fs[w.task_id] for w in order] == sorted(fs[w.task_id] for w in order)  # FIFO order


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_gpus=4, max_waiting=5, max_running=2))
def test_lower_bound_never_exceeds_the_optimum(inst) -> None:
    now, num_gpus, running, waiting = inst
    if waiting:
        assert lower_bound(now, num_gpus, running, waiting) <= brute_force_makespan(now, num_gpus, running, waiting) + 1e-9


def test_gap_is_relative_to_the_remaining_horizon() -> None:
    p = Plan((), makespan=1100.0, status="feasible", solve_s=0.0, lower_bound=1050.0, now=1000.0)
    assert p.gap == pytest.approx(1.0)
    assert Plan((), 5.0, "optimal", 0.0, 5.0, now=5.0).gap == 0.0


def test_latest_start_on_a_known_profile() -> None:
    from altosim.policy.inter import FreeProfile

    prof = FreeProfile(0.0, 4, [RunningTask("r", (0, 1, 2), 5.0)])
    prof.place(8.0, 2.0, 4)  # free: 1 on [0,5), 4 on [5,8), 0 on [8,10), 4 after
    assert list(prof.free) == [1, 4, 0, 4]
    assert prof.latest_start(1, 3.0, 20.0, 0.0) == 17.0
    assert prof.latest_start(2, 3.0, 9.0, 0.0) == 5.0
    assert prof.latest_start(1, 3.0, 8.0, 0.0) == 5.0
    assert prof.latest_start(2, 3.0, 7.0, 0.0) is None
    assert prof.latest_start(1, 2.0, 7.0, 6.0) is None and prof.latest_start(1, 2.0, 7.0, 5.0) == 5.0


@settings(max_examples=150, deadline=None)
@given(inst=instances())
def test_justification_never_hurts_and_stays_valid(inst) -> None:
    from altosim.policy.inter.base import makespan_of
    from altosim.policy.inter.improve import justify

    now, num_gpus, running, waiting = inst
    for sched in (FifoScheduler(), SjfScheduler()):
        p = sched.plan(now, num_gpus, running, waiting)
        better = justify(now, num_gpus, running, waiting, starts(p))
        assert set(better) == {w.task_id for w in waiting}
        q = Plan(tuple(Assignment(w.task_id, better[w.task_id], w.gpus) for w in waiting),
                 makespan_of(now, running, waiting, better), "greedy", 0.0, 0.0)
        validate_plan(q, now, num_gpus, running, waiting)
        assert q.makespan <= p.makespan


def test_justification_repairs_a_bad_order() -> None:
    from altosim.policy.inter.improve import justify

    # 2 GPUs: two 1-GPU shorts first then the long one (15); justification finds 10
    waiting = [W("s1", 1, 5.0), W("s2", 1, 5.0), W("long", 1, 10.0)]
    better = justify(0.0, 2, [], waiting, {"s1": 0.0, "s2": 0.0, "long": 5.0})
    assert max(better[w.task_id] + w.duration for w in waiting) == 10.0


@settings(max_examples=60, deadline=None)
@given(hst.integers(1, 16), hst.lists(hst.tuples(hst.integers(1, 8), hst.floats(1, 100)), max_size=12),
       hst.lists(hst.tuples(hst.integers(1, 8), hst.floats(0.1, 100)), max_size=12))
def test_fifo_starts_now_equals_the_plans_starts_at_now(num_gpus, run_specs, wait_specs):
    """The Controller's shortcut for long queues starts exactly what FIFO's full plan starts now."""
    from altosim.policy.inter.fifo import FifoScheduler

    running, used = [], 0
    for i, (g, rem) in enumerate(run_specs):
        if used + g <= num_gpus:
            running.append(RunningTask(f"r{i}", tuple(range(used, used + g)), rem))
            used += g
    waiting = [WaitingTask(f"w{i}", min(g, num_gpus), d, float(i)) for i, (g, d) in enumerate(wait_specs)]
    s = FifoScheduler()
    plan = s.plan(0.0, num_gpus, running, waiting)
    assert s.starts_now(num_gpus - used, waiting) == [
        a.task_id for a in sorted(plan.assignments, key=lambda a: (a.start, float(a.task_id[1:]))) if a.start <= 0.0]
