"""Incremental re-planning (altosim/policy/inter/incremental.py): the kept plan is the full plan
while nothing material changed, stays feasible under arrivals, and goes stale when it must."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.inter import RunningTask, SjfScheduler, WaitingTask, validate_plan
from altosim.policy.inter.base import make_plan
from altosim.policy.inter.incremental import PlanCache

G = 8


@st.composite
def instances(draw):
    n_run = draw(st.integers(0, 3))
    running, gpu = [], 0
    for i in range(n_run):
        k = draw(st.integers(1, 2))
        running.append(RunningTask(f"r{i}", tuple(range(gpu, gpu + k)), draw(st.integers(1, 50)) * 1.0))
        gpu += k
    waiting = [WaitingTask(f"w{i}", draw(st.integers(1, G)), draw(st.integers(1, 60)) * 1.0, 0.0)
               for i in range(draw(st.integers(1, 12)))]
    new = [WaitingTask(f"n{i}", draw(st.integers(1, G)), draw(st.integers(1, 60)) * 1.0, 0.0)
           for i in range(draw(st.integers(0, 4)))]
    return running, waiting, new


def _replay(cache: PlanCache, running, waiting, plan) -> dict[str, float]:
    """Drive the cache through the plan's own future (every task ends when planned): the start
    times it hands out, event by event."""
    dur = {w.task_id: w.duration for w in waiting}
    ends = sorted({r.remaining for r in running} | {a.start + dur[a.task_id] for a in plan.assignments})
    got: dict[str, float] = {}
    for t in [0.0, *ends]:
        for r in running:
            if r.remaining == t and t > 0:
                cache.finished(t, r.task_id)
        for a in plan.assignments:
            if a.task_id in got and got[a.task_id] + dur[a.task_id] == t:
                cache.finished(t, a.task_id)
        due = cache.due(t)
        assert due is not None, "nothing material changed, yet the plan went stale"
        for task_id in due:
            got[task_id] = t
            cache.started(task_id)
    return got


@settings(max_examples=60, deadline=None)
@given(instances())
def test_kept_plan_is_the_full_plan_when_nothing_changed(inst) -> None:
    running, waiting, _ = inst
    plan = SjfScheduler().plan(0.0, G, running, waiting)
    cache = PlanCache()
    cache.keep(plan, 0.0, G, running, waiting)
    assert _replay(cache, running, waiting, plan) == {a.task_id: a.start for a in plan.assignments}


@settings(max_examples=60, deadline=None)
@given(instances())
def test_arrivals_keep_every_planned_start_and_stay_feasible(inst) -> None:
    running, waiting, new = inst
    plan = SjfScheduler().plan(0.0, G, running, waiting)
    cache = PlanCache(resolve_share=1.0)
    cache.keep(plan, 0.0, G, running, waiting)
    if len(new) > len(waiting):
        new = new[: len(waiting)]
    for w in new:
        cache.arrived(0.0, w)
    assert cache.valid
    for a in plan.assignments:  # no planned start moved
        assert cache.start[a.task_id] == a.start
    both = waiting + new
    merged = make_plan(0.0, running, both, dict(cache.start), "greedy", 0.0, 0.0)
    validate_plan(merged, 0.0, G, running, both)  # raises on any over-subscription


def test_material_changes_make_it_stale() -> None:
    running = [RunningTask("r", (0, 1), 10.0)]
    waiting = [WaitingTask("a", 2, 5.0, 0.0), WaitingTask("b", 1, 5.0, 0.0)]
    plan = SjfScheduler().plan(0.0, 2, running, waiting)

    def fresh() -> PlanCache:
        c = PlanCache(resolve_share=0.5, min_new=1)
        c.keep(plan, 0.0, 2, running, waiting)
        return c

    c = fresh()
    c.finished(4.0, "r")  # ended before its planned 10 s (early exit)
    assert c.due(4.0) is None
    c = fresh()
    c.finished(10.0, "r")  # as planned
    assert c.due(10.0) is not None
    c = fresh()
    c.started("stranger")  # a task the plan did not hold
    assert c.due(0.0) is None
    c = fresh()
    c.arrived(1.0, WaitingTask("n1", 1, 1.0, 1.0))  # 1 of 2 waiting: within resolve_share
    assert c.valid
    c.arrived(1.0, WaitingTask("n2", 1, 1.0, 1.0))
    assert c.due(1.0) is None
    with pytest.raises(ValueError):
        PlanCache(resolve_share=1.5)
