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


# ------------------------------------------------------------------ backfilling from a drifted plan
@st.composite
def drifting(draw):
    """Waiting tasks (GPUs, predicted duration, actual/predicted ratio, arrival) and the share
    of the queue in changes a kept plan may take."""
    n = draw(st.integers(1, 14))
    tasks = [(draw(st.integers(1, G)), draw(st.integers(1, 40)) * 1.0, draw(st.sampled_from([0.1, 0.5, 1.0, 1.7])),
              draw(st.sampled_from([0.0, 0.0, 5.0, 20.0]))) for _ in range(n)]
    return tasks, draw(st.sampled_from([0.0, 0.5, 1.0])), draw(st.integers(1, 4))


def _drive(tasks, share, min_new, scan=64):
    """A small cluster driven by a PlanCache: tasks end at predicted x ratio (early exit, wrong
    predictions) and arrive over time; a full SJF plan only when the cache asks for one.
    Returns the start times, the number of full plans and the most GPUs ever busy."""
    import heapq as hq

    sched, cache = SjfScheduler(), PlanCache(resolve_share=share, min_new=min_new, scan=scan)
    pred = {f"t{i}": w for i, w in enumerate(tasks)}
    arrivals = sorted((a, f"t{i}") for i, (_, _, _, a) in enumerate(tasks))
    waiting: dict[str, WaitingTask] = {}
    running: dict[str, tuple[float, int]] = {}  # id -> (start, gpus)
    ends: list[tuple[float, str]] = []
    started: dict[str, float] = {}
    state = {"free": G, "peak": 0, "plans": 0}

    def start(t: str, now: float) -> None:
        w = waiting.pop(t)
        state["free"] -= w.gpus
        assert state["free"] >= 0, "over-committed"
        state["peak"] = max(state["peak"], G - state["free"])
        started[t] = now
        cache.started(t, now)
        running[t] = (now, w.gpus)
        hq.heappush(ends, (now + w.duration * pred[t][2], t))

    def full_plan(now: float) -> None:
        run, gid = [], 0
        for t, (s, g) in sorted(running.items()):
            run.append(RunningTask(t, tuple(range(gid, gid + g)), max(pred[t][1] - (now - s), 0.0)))
            gid += g
        queue = sorted(waiting.values(), key=lambda w: w.task_id)
        plan = sched.plan(now, G, run, queue)
        validate_plan(plan, now, G, run, queue)
        state["plans"] += 1
        cache.keep(plan, now, G, run, queue)

    k = 0
    while len(started) < len(tasks):
        nxt = ([ends[0][0]] if ends else []) + ([arrivals[k][0]] if k < len(arrivals) else [])
        assert nxt, f"stuck: {sorted(waiting)} wait with nothing running or arriving"
        now = min(nxt)
        while ends and ends[0][0] <= now:
            t = hq.heappop(ends)[1]
            state["free"] += running.pop(t)[1]
            cache.finished(now, t)
        while k < len(arrivals) and arrivals[k][0] <= now:
            t = arrivals[k][1]
            waiting[t] = WaitingTask(t, pred[t][0], pred[t][1], pred[t][3])
            cache.arrived(now, waiting[t])
            k += 1
        for _ in range(3):  # as Controller._replan: plan if asked, start, backfill after a late start
            if not waiting:
                break
            was_exact = cache.exact and cache.valid
            due = cache.next_starts(now, state["free"])
            if due is None:
                full_plan(now)
                continue
            for t in due:
                if waiting[t].gpus <= state["free"]:
                    start(t, now)
                else:
                    assert was_exact, "backfilling handed out a task that does not fit"
            late = [t for t in due if t in waiting]
            if not late:
                break
            cache.postpone(now, late, list(running))
            if cache.exact:
                break
    return started, state["plans"], state["peak"]


@settings(max_examples=80, deadline=None)
@given(drifting())
def test_backfilling_a_drifted_plan_starts_every_task_without_overcommitting(inst) -> None:
    tasks, share, min_new = inst
    started, plans, peak = _drive(tasks, share, min_new)
    assert len(started) == len(tasks)  # every task eventually started
    assert peak <= G  # no GPU over-committed (asserted at every start too)
    assert plans >= 1
