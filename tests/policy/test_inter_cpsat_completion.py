"""CP-SAT with objective="completion": valid plans, never a larger sum of completion times than
the non-delay greedy rules it starts from nor than the sjf policy's plan, and the sum (not the
makespan) decides ties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.inter import CpSatScheduler, RunningTask, SjfScheduler, WaitingTask, validate_plan
from altosim.policy.inter.base import fifo_order, lpt_order, sjf_order
from altosim.policy.inter.cpsat import area_order, robust_choice
from altosim.policy.inter.fast import event_schedule
from tests.policy.test_inter_strategies import instances

FAST = dict(time_limit_s=0.3, num_workers=1, objective="completion")


def _sum_completion(plan, waiting) -> float:
    dur = {w.task_id: w.duration for w in waiting}
    return sum(a.start + dur[a.task_id] for a in plan.assignments)


@settings(max_examples=30, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=8, max_running=3))
def test_completion_plans_are_valid_and_never_worse_than_the_greedy_rules(inst) -> None:
    now, num_gpus, running, waiting = inst
    p = CpSatScheduler(**FAST).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)
    assert p.lower_bound <= p.makespan
    got = _sum_completion(p, waiting)
    dur = {w.task_id: w.duration for w in waiting}
    for order in (fifo_order(waiting), sjf_order(waiting), area_order(waiting)):
        starts = event_schedule(now, num_gpus, running, order)
        assert got <= sum(starts[t] + dur[t] for t in starts) * (1 + 1e-12) + 1e-9


@settings(max_examples=40, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=3))
def test_completion_plans_never_worse_than_the_sjf_policy(inst) -> None:
    """The sjf policy's serial plan (holes filled, reservations kept) is a candidate and the
    solver's hint: CP-SAT's predicted sum of completion times is never above it."""
    now, num_gpus, running, waiting = inst
    p = CpSatScheduler(**FAST).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)
    assert _sum_completion(p, waiting) <= _sum_completion(SjfScheduler().plan(now, num_gpus, running, waiting),
                                                          waiting) * (1 + 1e-12) + 1e-9


def test_sjf_serial_plan_wins_where_non_delay_rules_lose() -> None:
    # 2 GPUs, one busy until 2 s: the non-delay rules start the long 1-GPU task on the free
    # GPU at once, so the wide short task waits until 10 s (sum 10 + 12 = 22 s); the serial
    # sjf plan holds the free GPU for the wide task at 2 s (4 + 14 = 18 s). The solver is
    # given no time, so only the candidates decide.
    running = [RunningTask("r", (0,), 2.0)]
    waiting = [WaitingTask("long", 1, 10.0, 0.0), WaitingTask("wide", 2, 2.0, 1.0)]
    p = CpSatScheduler(time_limit_s=1e-6, num_workers=1, objective="completion").plan(0.0, 2, running, waiting)
    validate_plan(p, 0.0, 2, running, waiting)
    assert _sum_completion(p, waiting) == pytest.approx(18.0)
    assert p.status == "fallback" and "no wall time left" in p.note


def test_sum_of_completions_not_makespan_decides() -> None:
    # 2 GPUs: a wide long task and two short ones. Every order ends at 11 s; makespan's
    # tie-break starts the wide one first (completions 10, 11, 11), the sum wants the short
    # ones first (1, 1, 11).
    waiting = [WaitingTask("wide", 2, 10.0, 0.0), WaitingTask("s1", 1, 1.0, 1.0), WaitingTask("s2", 1, 1.0, 2.0)]
    mk = CpSatScheduler(time_limit_s=0.3, num_workers=1).plan(0.0, 2, [], waiting)
    cc = CpSatScheduler(**FAST).plan(0.0, 2, [], waiting)
    for p in (mk, cc):
        validate_plan(p, 0.0, 2, [], waiting)
        assert p.makespan == pytest.approx(11.0)
    assert _sum_completion(mk, waiting) == pytest.approx(32.0)
    assert _sum_completion(cc, waiting) == pytest.approx(13.0)


def test_objective_is_checked() -> None:
    with pytest.raises(ValueError, match="objective"):
        CpSatScheduler(objective="mean")


# ---------------------------------------------------------------------------------------------
# Under early exit (durations are predictions with a relative `spread`), a plan replaces the sjf
# policy's only when its predicted gain survives that error (cpsat.robust_choice).
# ---------------------------------------------------------------------------------------------


def _with_spread(waiting, spread: float):
    return [WaitingTask(w.task_id, w.gpus, w.duration, w.arrival, spread) for w in waiting]


def _sure_gain(now, waiting, plan, ref) -> tuple[float, float]:
    """(gain in the sum of completion times, the error it must beat): robust_choice's rule."""
    gain = sum(ref[w.task_id] - plan[w.task_id] for w in waiting)
    err = sum(w.spread * (ref[w.task_id] + plan[w.task_id] - 2 * now) for w in waiting)
    return gain, err


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=10, max_running=3), spread=st.sampled_from([0.0, 0.05, 0.3, 2.0]),
       rule=st.sampled_from(["arrival", "area", "lpt"]))
def test_robust_choice_keeps_only_gains_that_survive_the_error(inst, spread, rule) -> None:
    """Property: the choice is the sjf plan or a plan whose gain over it beats both plans'
    start errors; never a larger predicted sum than the sjf plan's; what the rule refuses at
    some spread it refuses at any larger one, what it keeps it keeps at any smaller; with
    spread 0 (exact durations) the plan stands."""
    now, num_gpus, running, waiting = inst
    waiting = _with_spread(waiting, spread)
    order = {"arrival": fifo_order, "area": area_order, "lpt": lpt_order}[rule](waiting)
    plan = event_schedule(now, num_gpus, running, order)
    ref = SjfScheduler().schedule(now, num_gpus, running, waiting)
    got = robust_choice(now, waiting, plan, ref)
    assert got is plan or got is ref
    gain, err = _sure_gain(now, waiting, plan, ref)
    if got is plan:
        assert spread == 0.0 or not waiting or gain > err >= 0
        for smaller in (0.0, spread / 2):
            assert robust_choice(now, _with_spread(waiting, smaller), plan, ref) is plan
    else:
        assert robust_choice(now, _with_spread(waiting, spread * 2 + 1), plan, ref) is ref
    if spread == 0.0 or not waiting:  # exact durations: the plan chosen by its sum stands
        assert got is plan
    if spread > 0:
        dur = {w.task_id: w.duration for w in waiting}
        assert sum(got[t] + dur[t] for t in dur) <= sum(ref[t] + dur[t] for t in dur) + 1e-9 * (1 + abs(now) * len(dur))


def test_a_tie_goes_to_the_sjf_plan_and_a_gain_must_beat_the_start_errors() -> None:
    # 2 GPUs, one free now and one at 1 s. The sjf plan puts the short task on the free GPU
    # (completions 1 and 1 + 10: sum 12); starting the long one now ties (10 + 2 = 12): the
    # sjf plan stays under early exit (the makespan tie-break chose the long task first before).
    # With exact durations (spread 0) the makespan tie-break stands.
    running = [RunningTask("r", (1,), 1.0)]
    tie = _with_spread([WaitingTask("short", 1, 1.0, 0.0), WaitingTask("long", 1, 10.0, 0.0)], 0.25)
    ref = {"short": 0.0, "long": 1.0}
    assert robust_choice(0.0, tie, long_first := {"long": 0.0, "short": 1.0}, ref) is ref
    p = CpSatScheduler(**FAST).plan(0.0, 2, running, tie)
    assert {a.task_id: a.start for a in p.assignments} == ref
    exact = _with_spread(tie, 0.0)
    assert robust_choice(0.0, exact, long_first, ref) is long_first
    p = CpSatScheduler(**FAST).plan(0.0, 2, running, exact)
    assert {a.task_id: a.start for a in p.assignments} == long_first
    # robust_choice compares predicted starts: a plan that starts 'long' at 1 s instead of
    # 4 s and 'wide' at 3 s instead of 1 s gains 1 s; the starts' errors at spread s are
    # s x ((1 + 4) + (3 + 1)) = 9 s: kept below s = 1/9 only. One that only starts 'long' at
    # 3.5 s gains 0.5 s against s x (4 + 3.5 + 2 x 1).
    waiting = [WaitingTask("short", 1, 1.0, 0.0), WaitingTask("long", 1, 10.0, 0.0), WaitingTask("wide", 2, 1.0, 0.0)]
    ref = {"short": 0.0, "wide": 1.0, "long": 4.0}
    mixed = {"short": 0.0, "wide": 3.0, "long": 1.0}
    assert robust_choice(0.0, _with_spread(waiting, 0.1), mixed, ref) is mixed
    assert robust_choice(0.0, _with_spread(waiting, 0.12), mixed, ref) is ref
    one = {"short": 0.0, "wide": 1.0, "long": 3.5}
    assert robust_choice(0.0, _with_spread(waiting, 0.05), one, ref) is one  # 0.5 > 0.05 x 9.5
    assert robust_choice(0.0, _with_spread(waiting, 0.06), one, ref) is ref  # 0.5 < 0.06 x 9.5
    worse = {"long": 0.0, "short": 1.0, "wide": 10.0}
    assert robust_choice(0.0, _with_spread(waiting, 0.01), worse, ref) is ref
    # starts at `now` carry no error: the same moves an hour later need no more gain
    later = {k: v + 3600.0 for k, v in mixed.items()}
    assert robust_choice(3600.0, _with_spread(waiting, 0.1), later, {k: v + 3600.0 for k, v in ref.items()}) is later


@settings(max_examples=30, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=8, max_running=3), spread=st.sampled_from([0.02, 0.3]))
def test_completion_plans_with_spread_are_the_sjf_plan_or_a_sure_gain(inst, spread) -> None:
    """The scheduler end to end under early exit: its plan is valid and is the sjf policy's
    plan unless its gain over that plan beats the starts' errors."""
    now, num_gpus, running, waiting = inst
    waiting = _with_spread(waiting, spread)
    p = CpSatScheduler(**FAST).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)
    got = {a.task_id: a.start for a in p.assignments}
    ref = SjfScheduler().schedule(now, num_gpus, running, waiting)
    if any(abs(got[t] - ref[t]) > 1e-9 for t in ref):
        gain, err = _sure_gain(now, waiting, got, ref)
        assert gain > err
