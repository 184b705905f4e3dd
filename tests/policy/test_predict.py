"""Duration predictions that know early exit (altosim/policy/predict.py) and their use in plans."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.early_exit import build_early_exit
from altosim.policy.inter import CpSatScheduler, WaitingTask
from altosim.policy.inter.cpsat import robust_makespan
from altosim.policy.predict import Calibration, expected_budgets, prior_fraction

rungs_st = st.lists(st.floats(0.01, 0.99), min_size=0, max_size=4, unique=True).map(lambda r: tuple(sorted(r)))
progress_st = st.lists(st.floats(0.0, 1.0), min_size=0, max_size=40)


def test_prior_of_halving_rungs_is_the_expected_kept_fraction() -> None:
    # rungs keeping half at 4/12/36% of the budget: 0.04 + 0.08/2 + 0.24/4 + 0.64/8
    assert prior_fraction((0.04, 0.12, 0.36), 0.5, 64) == pytest.approx(0.22)
    # 60 jobs: the cuts keep ceil(30), ceil(15), ceil(7.5) = 8
    assert prior_fraction((0.04, 0.12, 0.36), 0.5, 60) == pytest.approx(0.04 + 0.04 + 0.06 + 8 / 60 * 0.64)
    # the shipped alto default agrees with its own flat prior
    alto = build_early_exit("alto", {})
    assert prior_fraction(alto.rungs(), alto.keep_share(), 64) == pytest.approx(alto.expected_work_fraction())


@settings(max_examples=200, deadline=None)
@given(rungs_st, st.floats(0.05, 1.0), progress_st, st.integers(0, 4))
def test_predictions_within_bounds(rungs, keep, progress, cuts_done) -> None:
    left = expected_budgets(rungs, keep, cuts_done, progress)
    owed = sum(1 - p for p in progress)
    assert -1e-12 <= left <= owed + 1e-9  # never more than training every live job to the end
    if progress:  # at least what the furthest job still owes to the next rung
        gates = [g for g in rungs[cuts_done:] if 0 < g < 1] + [1.0]
        assert left >= max(0.0, gates[0] - max(progress)) - 1e-9


@settings(max_examples=200, deadline=None)
@given(rungs_st, st.floats(0.05, 0.95), progress_st, st.integers(0, 4), st.floats(0.0, 0.5))
def test_more_progress_never_predicts_more_work(rungs, keep, progress, cuts_done, step) -> None:
    ahead = [min(1.0, p + step) for p in progress]
    assert expected_budgets(rungs, keep, cuts_done, ahead) <= expected_budgets(rungs, keep, cuts_done, progress) + 1e-9


@settings(max_examples=100, deadline=None)
@given(rungs_st, st.floats(0.05, 0.95), st.integers(1, 100))
def test_prior_fraction_is_a_share(rungs, keep, n) -> None:
    f = prior_fraction(rungs, keep, n)
    assert 0 < f <= 1 + 1e-12
    assert prior_fraction(rungs, 1.0, n) == pytest.approx(1.0)  # nothing cut: all samples


def test_calibration_mean_and_spread() -> None:
    c = Calibration(prior_spread=0.3, min_seen=3)
    assert (c.factor, c.spread) == (1.0, 0.3)
    for actual in (0.8, 1.0, 1.2):
        c.add(actual, 1.0)
    assert c.factor == pytest.approx(1.0)
    assert c.spread == pytest.approx(math.sqrt(((0.2) ** 2 * 2) / 3))
    c.add(100.0, 1.0)  # an outlier is clamped to hi
    assert c.factor == pytest.approx((3.0 + 4.0) / 4)


def test_uncertain_durations_keep_long_wide_tasks_off_the_end() -> None:
    # a 2-GPU task of 150 s and four 1-GPU tasks of 50 s on 2 GPUs: either order ends at 250 s;
    # with durations 30% uncertain the long wide task goes first (ends pushed late: 265 vs 295)
    waiting = [WaitingTask("L", 2, 150.0, 0.0, 0.3)] + [WaitingTask(f"s{i}", 1, 50.0, 0.0, 0.3) for i in range(4)]
    plan = CpSatScheduler(time_limit_s=5.0).plan(0.0, 2, [], waiting)
    starts = {a.task_id: a.start for a in plan.assignments}
    assert plan.makespan == pytest.approx(250.0)
    assert starts["L"] == 0.0
    assert robust_makespan(0.0, [], waiting, starts) == pytest.approx(265.0)
    assert plan.lower_bound <= plan.makespan + 1e-9


def test_spread_zero_plans_as_before() -> None:
    waiting = [WaitingTask(f"t{i}", 1 + i % 3, 50.0 + 13 * i, 0.0) for i in range(8)]
    a = CpSatScheduler(time_limit_s=1.0).plan(0.0, 4, [], waiting)
    assert robust_makespan(0.0, [], waiting, {x.task_id: x.start for x in a.assignments}) == pytest.approx(a.makespan)
    with pytest.raises(ValueError, match="spread"):
        CpSatScheduler().plan(0.0, 4, [], [WaitingTask("x", 1, 1.0, 0.0, -0.1)])
