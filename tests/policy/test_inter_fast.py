"""Event-driven fast rules (fast.py) and the incremental CP-SAT planner built on them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from altosim.policy.inter import CpSatScheduler, FreeProfile, RunningTask, SjfScheduler, WaitingTask, validate_plan
from altosim.policy.inter import cpsat as cpsat_mod
from altosim.policy.inter.base import fifo_order, list_schedule, make_plan, makespan_of, sjf_order
from altosim.policy.inter.fast import event_schedule, reserve_then_fill
from tests.policy._cpsat import budget_of
from tests.policy.test_inter_strategies import instances

# the work budget of a 0.5 s limit; no wall cap a loaded machine reaches (tests/policy/_cpsat.py)
FAST = budget_of(0.5, num_workers=2)


def as_plan(now, running, waiting, starts):
    return make_plan(now, running, waiting, starts, "greedy", 0.0, now)


@settings(max_examples=80, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=4))
def test_event_fifo_equals_serial_fifo(inst) -> None:
    now, num_gpus, running, waiting = inst
    order = fifo_order(waiting)
    assert event_schedule(now, num_gpus, running, order, head_of_line=True) == list_schedule(
        now, num_gpus, running, order, head_of_line=True)


@settings(max_examples=80, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=4))
def test_event_backfill_is_valid_and_non_delay(inst) -> None:
    now, num_gpus, running, waiting = inst
    starts = event_schedule(now, num_gpus, running, fifo_order(waiting))
    validate_plan(as_plan(now, running, waiting, starts), now, num_gpus, running, waiting)
    # non-delay on a base that only frees GPUs: at every start instant, no task that starts
    # later fitted in the GPUs left over then
    prof = FreeProfile(now, num_gpus, running)
    for t in sorted(set(starts.values())):
        free = int(prof.free[prof.times.searchsorted(t, side="right") - 1])
        used = sum(w.gpus for w in waiting if starts[w.task_id] <= t < starts[w.task_id] + w.duration)
        later = [w for w in waiting if starts[w.task_id] > t]
        assert all(w.gpus > free - used for w in later)


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=3), split=hst.integers(0, 10))
def test_event_schedule_around_placed_tasks_is_feasible(inst, split) -> None:
    """A base profile holding placed tasks (CP-SAT's head) takes GPUs back later: the rest
    must still fit everywhere."""
    now, num_gpus, running, waiting = inst
    head, rest = waiting[:split], waiting[split:]
    prof = FreeProfile(now, num_gpus, running)
    starts = list_schedule(now, num_gpus, running, head, profile=prof)
    starts.update(event_schedule(now, num_gpus, running, rest, profile=prof))
    validate_plan(as_plan(now, running, waiting, starts), now, num_gpus, running, waiting)


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=3), reserve=hst.integers(1, 12))
def test_reserve_then_fill_is_serial_sjf_up_to_reserve(inst, reserve) -> None:
    now, num_gpus, running, waiting = inst
    order = sjf_order(waiting)
    starts = reserve_then_fill(now, num_gpus, running, order, reserve)
    validate_plan(as_plan(now, running, waiting, starts), now, num_gpus, running, waiting)
    if len(waiting) <= reserve:
        assert starts == list_schedule(now, num_gpus, running, order)
    sjf = SjfScheduler(reserve=reserve).plan(now, num_gpus, running, waiting)
    assert {a.task_id: a.start for a in sjf.assignments} == starts


def _profile_reference(now, num_gpus, running, order, head_of_line):
    """Serial scheduling through FreeProfile's numpy methods, task by task (what list_schedule was)."""
    prof = FreeProfile(now, num_gpus, running)
    starts, floor = {}, now
    for w in order:
        s = prof.earliest_start(w.gpus, w.duration, floor if head_of_line else now)
        prof.place(s, w.duration, w.gpus)
        starts[w.task_id] = s
        floor = s if head_of_line else floor
    return starts, prof


@settings(max_examples=80, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=12, max_running=4), hol=hst.booleans(),
       by=hst.sampled_from(["sjf", "given"]))
def test_list_schedule_matches_the_profile_methods(inst, hol, by) -> None:
    """The list-based serial scheme gives the very starts, and leaves the very profile, of
    earliest_start + place per task."""
    now, num_gpus, running, waiting = inst
    order = sjf_order(waiting) if by == "sjf" else waiting
    prof = FreeProfile(now, num_gpus, running)
    starts = list_schedule(now, num_gpus, running, order, head_of_line=hol, profile=prof)
    want, want_prof = _profile_reference(now, num_gpus, running, order, hol)
    assert starts == want
    assert prof.times.tolist() == want_prof.times.tolist() and prof.free.tolist() == want_prof.free.tolist()


def test_long_queue_plans_are_valid_and_say_what_went_to_cpsat() -> None:
    waiting = [WaitingTask(f"w{i:03d}", 1 + i % 4, 5.0 + (37 * i) % 23, float(i)) for i in range(300)]
    running = [RunningTask("r", tuple(range(12)), 30.0)]
    p = CpSatScheduler(max_tasks=40, **FAST).plan(0.0, 16, running, waiting)
    validate_plan(p, 0.0, 16, running, waiting)
    assert "first 40 of 300" in p.note
    fast = event_schedule(0.0, 16, running, fifo_order(waiting))
    assert p.makespan <= makespan_of(0.0, running, waiting, fast)


# ---------------------------------------------------------------------------------- incremental


@settings(max_examples=30, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=9, max_running=3), head=hst.integers(1, 4))
def test_incremental_never_worse_than_the_fast_rule_and_valid(inst, head) -> None:
    now, num_gpus, running, waiting = inst
    sched = CpSatScheduler(max_tasks=head, **FAST)
    for batch in (waiting, waiting[1:]):  # the second plan may keep the first's order
        p = sched.plan(now, num_gpus, running, batch)
        validate_plan(p, now, num_gpus, running, batch)
        fast = event_schedule(now, num_gpus, running, fifo_order(batch))
        assert p.makespan <= makespan_of(now, running, batch, fast) + 1e-9
        assert p.lower_bound <= p.makespan + 1e-9


@settings(max_examples=20, deadline=None)
@given(inst=instances(max_gpus=6, max_waiting=8, max_running=3), head=hst.integers(1, 4))
def test_incremental_is_deterministic_given_the_same_calls(inst, head) -> None:
    now, num_gpus, running, waiting = inst
    calls = [waiting, waiting[1:], waiting[2:]]
    a, b = CpSatScheduler(max_tasks=head, time_limit_s=5.0), CpSatScheduler(max_tasks=head, time_limit_s=5.0)
    for batch in calls:
        pa, pb = a.plan(now, num_gpus, running, batch), b.plan(now, num_gpus, running, batch)
        assert pa.assignments == pb.assignments and pa.status == pb.status


def _counting_solve(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = cpsat_mod.solve

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpsat_mod, "solve", counting)
    return calls


def test_keeps_the_last_order_until_enough_of_the_head_is_new(monkeypatch) -> None:
    calls = _counting_solve(monkeypatch)
    waiting = [WaitingTask(f"w{i:02d}", 1 + i % 3, 4.0 + (7 * i) % 11, float(i)) for i in range(30)]
    running = [RunningTask("r", (0, 1, 2), 6.0)]
    sched = CpSatScheduler(max_tasks=10, resolve_share=0.2, **FAST)
    sched.plan(0.0, 4, running, waiting)
    assert len(calls) == 1
    # two head tasks started: two new ones enter the head (20% of it): nothing material
    p = sched.plan(1.0, 4, running, waiting[2:])
    assert len(calls) == 1 and "kept the last cp-sat order" in p.note
    validate_plan(p, 1.0, 4, running, waiting[2:])
    # a third new one (30% new since the solve): solve again
    sched.plan(2.0, 4, running, waiting[3:])
    assert len(calls) == 2


def test_optimal_means_meeting_the_real_bound() -> None:
    # durations that do not divide the unit: the integer model's optimum is not the real one
    waiting = [WaitingTask(f"w{i}", 1 + i % 2, 3.3 + 1.7 * i, 0.0) for i in range(6)]
    running = [RunningTask("r", (0,), 2.9)]
    p = CpSatScheduler(resolution=10, **FAST).plan(0.0, 3, running, waiting)
    validate_plan(p, 0.0, 3, running, waiting)
    assert p.status != "optimal" or p.makespan <= p.lower_bound * (1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(inst=instances(max_gpus=4, max_waiting=6, max_running=2))
def test_optimal_status_has_no_gap_to_the_real_bound(inst) -> None:
    now, num_gpus, running, waiting = inst
    p = CpSatScheduler(resolution=20, **FAST).plan(now, num_gpus, running, waiting)
    if p.status == "optimal":
        assert p.gap <= 1e-9


def test_deterministic_mode_hands_the_solver_a_fixed_work_budget(monkeypatch) -> None:
    calls = _counting_solve(monkeypatch)
    # a GPU idles now in every greedy plan, so the solver is asked whether that costs makespan
    running = [RunningTask("r0", (0,), 1.0), RunningTask("r2", (1, 2), 14.0)]
    waiting = [WaitingTask("w0", 1, 14.0, 0.0), WaitingTask("w1", 3, 28.0, 0.0)]
    for params in (dict(), dict(work_limit=0.05), dict(deterministic=False)):
        CpSatScheduler(time_limit_s=1.5, **params).plan(0.0, 5, running, waiting)
    assert [c["work_limit"] for c in calls] == [pytest.approx(cpsat_mod.WORK_PER_S * 1.5), 0.05, None]
    for bad in (dict(work_limit=0.0), dict(resolve_share=1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CpSatScheduler(**bad)


def test_no_free_gpu_means_nothing_starts_without_planning() -> None:
    waiting = [WaitingTask("a", 1, 1.0, 0.0)]
    for sched in (CpSatScheduler(), SjfScheduler()):
        assert sched.starts_now(0, iter(waiting)) == []
        assert sched.starts_now(1, iter(waiting)) is None
