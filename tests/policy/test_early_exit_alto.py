"""ALTO Algorithm 1: decision sequences on hand-made curves, defaults, and the safety properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from altosim.policy.early_exit import CONTINUE, Alto, Verdict, build_early_exit
from altosim.policy.early_exit.alto import PAPER_PARAMS
from altosim.policy.early_exit.base import gate_step, lsq_slope, lsq_slopes
from altosim.policy.types import JobHistory, JobSpec, StepReport, TaskSpec

DIV = Verdict(True, "diverging")
DIV_KEEP = Verdict(True, "diverging", restore_best=True)
OVF = Verdict(True, "overfitting", restore_best=True)


def make_task(n_jobs: int = 4, samples: int = 100, batch_sizes: tuple[int, ...] = (1,)) -> TaskSpec:
    """Eval every sample-percent: a batch-1 job evaluates every step, 100 evals in all."""
    jobs = tuple(JobSpec(f"j{i}", "t", lr=1e-4, rank=8, batch_size=batch_sizes[i % len(batch_sizes)])
                 for i in range(n_jobs))
    return TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=samples)


class Driver:
    """A stand-in Controller: appends a report to the job's history, asks the policy."""

    def __init__(self, policy, task: TaskSpec) -> None:
        self.policy, self.task, self.hists = policy, task, {}

    def report(self, job_id: str, train: float, val: float | None) -> Verdict:
        job = self.task.job(job_id)
        h = self.hists.setdefault(job_id, JobHistory(job, self.task.total_steps(job)))
        step = (len(h.steps) + 1) * self.task.eval_every_steps(job)
        h.add(StepReport(0.0, "t", job_id, step, step * job.batch_size, train, val))
        return self.policy.on_report(h, self.task)

    def curve(self, job_id: str, train: list[float], val: list[float | None]) -> list[Verdict]:
        """Verdicts report by report, up to and including the first stop."""
        out: list[Verdict] = []
        for t, v in zip(train, val):
            out.append(self.report(job_id, t, v))
            if out[-1].stop:
                break
        return out


# the exit rules' thresholds these hand-made curves were written for: the paper's patience of two
# evaluations at a 1% interval, and 15% of the budget without a new best for the plateau
RULES = {"div_patience": 0.02, "ovf_patience": 0.02, "plateau_ratio": 0.15}


def run(train: list[float], val: list[float | None], **params) -> list[Verdict]:
    return Driver(Alto(**{**RULES, **params}), make_task()).curve("j0", train, val)


def run_paper(train: list[float], val: list[float | None], **params) -> list[Verdict]:
    """The paper's Algorithm 1 exactly: the gap alone makes overfitting."""
    return run(train, val, gap_requires_plateau=False, div_margin=0.0, diverging_keeps_best=False, **params)


def test_defaults_are_the_papers_thresholds_plus_plateau_and_noise_aware_halving():
    p = build_early_exit("alto", {}).params()
    assert p == Alto().params() and set(p) == set(Alto.model_fields)
    assert (p["tau_slope"], p["tau_gap"]) == (0.1, 0.1)  # the paper's 0.001 per 1%-evaluation, 0.1
    assert p["hold_at_gate"] and p["cuts"] >= 2 and 0 < p["select_ratio"] < 1  # halving rungs, held
    paper = Alto(**PAPER_PARAMS)
    assert (paper.div_patience, paper.ovf_patience) == (0.02, 0.02)  # two evaluations at a 1% interval
    assert (paper.rungs(), paper.select_ratio, paper.holds_at_gate(), paper.noise_z) == ((0.05,), 0.25, False, 0.0)
    assert (paper.gap_requires_plateau, paper.div_margin, paper.diverging_keeps_best) == (False, 0.0, False)


@pytest.mark.parametrize("bad", [{"gap_requires_plateau": 1}, {"gap_requires_plateau": "no"},
                                 {"p_plateau": 0}, {"p_plateau": 2.5}, {"div_margin": -0.1},
                                 {"plateau_ratio": 0}, {"plateau_ratio": 1.5},
                                 {"div_margin": math.inf}])
def test_bad_plateau_params_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Alto(**bad)


# --- diverging ---------------------------------------------------------------------------------


def test_diverging_needs_p_div_consecutive_rising_evals():
    rise = [1.0, 1.01, 1.02, 1.03]
    # eval 1: no slope yet; eval 2: both slopes >= tau (count 1); eval 3: count 2 -> exit
    assert run_paper(rise, rise) == [CONTINUE, CONTINUE, DIV]


def test_diverging_counter_resets_when_val_slope_drops():
    train = [1.0, 1.1, 1.2, 1.3, 1.4]
    val = [1.0, 1.1, 1.1, 1.2, 1.3]  # flat at eval 3 -> reset
    assert run_paper(train, val) == [CONTINUE] * 4 + [DIV]


def test_diverging_counter_resets_when_train_slope_drops():
    train = [1.0, 1.1, 0.9, 1.1, 1.3, 1.5]  # EMA 1.0, 1.05, 0.975 (falls), 1.0375, 1.16875, ...
    val = [1.0, 1.05, 1.1, 1.15, 1.2, 1.25]
    assert run_paper(train, val, tau_gap=math.inf) == [CONTINUE] * 4 + [DIV]  # gap rule off


def test_one_rising_slope_is_not_diverging():
    train = [1.0, 0.99, 0.98, 0.97, 0.96]  # falling train, rising val (gap stays < 0.1)
    val = [1.0, 1.01, 1.02, 1.03, 1.04]
    assert run_paper(train, val) == [CONTINUE] * 5


def test_slope_uses_the_last_w_points_by_least_squares():
    # w=3: slope over (1.0, 1.3, 1.0) is 0 even though the last step rises
    train = [1.0, 1.3, 1.0, 1.3, 1.0]
    val = train
    assert run_paper(train, val, w=3, ema=0.0) == [CONTINUE] * 5
    rise = [1.0, 1.3, 1.4, 1.5, 1.6]
    assert run_paper(rise, rise, w=3, ema=0.0, div_patience=0.01) == [CONTINUE, CONTINUE, DIV]


_finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_finite, _finite, _finite), min_size=0, max_size=6))
def test_lsq_slopes_are_lsq_slope_bit_for_bit(pts):
    """The diverging rule's one-pass slopes are the same floats as the two-list slope it replaced
    (sum_{i<j} dx dy / sum_{i<j} dx^2), column by column; lsq_slope is that of one column."""

    def two_list_slope(xs, ys):
        num = den = 0.0
        for j in range(len(xs)):
            for i in range(j):
                dx = xs[j] - xs[i]
                num += dx * (ys[j] - ys[i])
                den += dx * dx
        return num / den if den > 0 else 0.0

    xs = [p[0] for p in pts]
    ys1, ys2 = [p[1] for p in pts], [p[2] for p in pts]
    assert lsq_slopes(pts) == (two_list_slope(xs, ys1), two_list_slope(xs, ys2))
    assert lsq_slope(xs, ys1) == two_list_slope(xs, ys1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_exits_at_once(bad):
    # a non-finite loss is a blow-up in both modes, discarded like the runtime's JobFailed
    for r in (run, run_paper):
        assert r([bad], [1.0]) == [DIV]
        assert r([1.0], [bad]) == [DIV]
        assert r([1.0, bad], [1.0, None]) == [CONTINUE, DIV]


# --- overfitting -------------------------------------------------------------------------------


def test_overfitting_needs_p_ovf_consecutive_gaps_and_restores_best():
    train = [1.0, 1.0, 1.0]  # EMA stays 1.0
    val = [1.05, 1.15, 1.15]  # gap 0.05, 0.15 (count 1), 0.15 (count 2) -> exit
    out = run_paper(train, val)
    assert out == [CONTINUE, CONTINUE, OVF] and out[-1].restore_best


def test_gap_must_exceed_tau_gap_strictly():
    assert run_paper([1.0, 1.0], [1.5, 1.5], tau_gap=0.5, ovf_patience=0.01) == [CONTINUE, CONTINUE]  # gap == 0.5
    assert run_paper([1.0, 1.0], [1.5, 1.5], tau_gap=0.4375, ovf_patience=0.01) == [OVF]


def test_overfitting_counter_resets():
    train = [1.0] * 4
    val = [1.2, 1.05, 1.2, 1.2]
    assert run_paper(train, val) == [CONTINUE, CONTINUE, CONTINUE, OVF]


def test_gap_is_relative_to_the_train_ema():
    # raw train 0.5 at eval 2 would give gap 1.3; the EMA (0.75) gives 0.53 -> still > 0.1
    # with ema=0.9 the EMA is 0.95, gap 0.21; ema=0.0 uses the raw train loss
    assert run_paper([1.0, 0.5], [1.0, 1.15], ema=0.5, ovf_patience=0.01) == [CONTINUE, OVF]
    assert run_paper([1.0, 1.1], [1.0, 1.15], ema=0.5, ovf_patience=0.01) == [CONTINUE, CONTINUE]  # EMA 1.05: 0.095
    assert run_paper([1.0, 1.1], [1.0, 1.15], ema=0.0, ovf_patience=0.01) == [CONTINUE, CONTINUE]  # raw: 0.045


def test_reports_without_val_feed_only_the_ema():
    # eval 1: gap 0.25 (count 1); the val-less report moves the EMA to 2.0 and keeps the count;
    # eval 2: EMA 1.5 > val -> no gap, reset. Without feeding the EMA it would have exited.
    assert run_paper([1.0, 3.0, 1.0], [1.25, None, 1.25]) == [CONTINUE] * 3
    # and a val-less report does not reset the counters
    assert run_paper([1.0, 1.0, 1.0], [1.25, None, 1.25]) == [CONTINUE, CONTINUE, OVF]


def test_diverging_wins_when_both_rules_fire():
    # eval 2: EMA slope 0.05, val slope 0.3 (diverging) and gap (1.3 - 1.05) / 1.05 = 0.24
    assert run_paper([1.0, 1.1], [1.0, 1.3], div_patience=0.01, ovf_patience=0.01) == [CONTINUE, DIV]
    assert run_paper([1.0, 1.0], [1.0, 1.3], div_patience=0.01, ovf_patience=0.01) == [CONTINUE, OVF]  # flat train


# --- overfitting with the plateau condition (our default) ---------------------------------------


def test_falling_val_with_a_huge_gap_is_not_overfitting():
    # train ~0.01 (gap (val - train) / train ~ 10..30), val still falling at every evaluation:
    # the paper's rule stops at eval 2, ours never does
    train = [0.01] * 40
    val = [0.3 * 0.99 ** i for i in range(40)]
    assert run(train, val) == [CONTINUE] * 40
    assert run_paper(train, val) == [CONTINUE, OVF]


def test_noisy_descent_with_new_bests_inside_the_patience_is_not_overfitting():
    # val rises for p_plateau - 1 evaluations, then sets a new best, over and over
    val = []
    for k in range(8):
        base = 0.5 * 0.9 ** k
        val += [base] + [base * 1.2] * 5
    assert run([0.01] * len(val), val, plateau_ratio=0.06) == [CONTINUE] * len(val)
    assert run([0.01] * len(val), val, plateau_ratio=0.05)[-1] == OVF


def test_real_overfit_stops_after_p_plateau_evals_without_a_new_best_and_restores_best():
    train = [1.0, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01, 0.01]
    val = [1.0, 0.6, 0.4, 0.35, 0.36, 0.38, 0.40, 0.43, 0.47, 0.50, 0.55]  # best at eval 4
    out = run(train, val, plateau_ratio=0.04)
    # evals 5..8 make no new best; the gap has been > 0.1 for >= p_ovf evals: exit at eval 8
    assert out == [CONTINUE] * 7 + [OVF] and out[-1].restore_best
    assert run(train, val, plateau_ratio=0.07) == [CONTINUE] * 10 + [OVF]
    assert run(train, val, plateau_ratio=0.08) == [CONTINUE] * 11


def test_plateau_without_a_gap_is_not_overfitting():
    # val flat above its best but below train * (1 + tau_gap): no gap, no exit
    assert run([1.0] * 20, [1.0] + [1.05] * 19, plateau_ratio=0.02) == [CONTINUE] * 20


@st.composite
def curve_pair(draw):
    n = draw(st.integers(1, 40))
    train = draw(st.lists(st.floats(1e-4, 5.0), min_size=n, max_size=n))
    val = draw(st.lists(st.one_of(st.none(), st.floats(1e-4, 5.0)), min_size=n, max_size=n))
    return train, val


@settings(max_examples=200, deadline=None)
@given(curve_pair(), st.integers(1, 4), st.integers(1, 8), st.floats(0.0, 2.0))
def test_plateau_rule_never_stops_earlier_than_the_papers(pair, p_ovf, p_plateau, tau_gap):
    """Ours adds a condition to the paper's overfitting rule (diverging is unchanged), so it stops a
    job at the same evaluation as the paper or later, and only for a reason the paper also had."""
    train, val = pair
    ours = run(train, val, ovf_patience=p_ovf / 100, plateau_ratio=p_plateau / 100, tau_gap=tau_gap)
    paper = run_paper(train, val, ovf_patience=p_ovf / 100, tau_gap=tau_gap)
    assert len(ours) >= len(paper)
    if ours[-1].stop:
        assert paper[-1].stop
    if ours[-1] == DIV_KEEP:
        assert paper[-1] == (DIV if len(paper) == len(ours) else OVF)
    if paper[-1] == DIV:  # same evaluation; ours keeps the best snapshot either way
        assert len(ours) == len(paper) and ours[-1] in (DIV_KEEP, OVF)
        best = min(v for v in val[:len(ours)] if v is not None)
        last = next(v for v in reversed(val[:len(ours)]) if v is not None)
        assert ours[-1] == (OVF if last < best + 0.1 * abs(best) else DIV_KEEP)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=60), st.floats(1e-3, 0.9),
       st.integers(1, 4), st.integers(1, 6))
def test_strictly_falling_val_is_never_stopped_by_the_plateau_rule(train, first, p_ovf, p_plateau):
    """Whatever the train loss (hence the gap), a val loss that improves at every evaluation is
    never overfitting; with a non-increasing EMA it is not diverging either."""
    train = sorted(train, reverse=True)
    val = [first * 0.999 ** i for i in range(len(train))]
    assert run(train, val, ovf_patience=p_ovf / 100, plateau_ratio=p_plateau / 100) == [CONTINUE] * len(train)


# --- underperforming (cohort cut) --------------------------------------------------------------


def test_rung_gates_are_budget_fractions_on_the_eval_grid():
    task = make_task(samples=100)  # batch 1: eval every step, 100 steps
    job = task.jobs[0]
    assert [gate_step(task, job, f) for f in Alto(warmup_ratio=0.05, cut_spacing=2, cuts=3).rungs()] == [5, 10, 20]
    assert gate_step(task, job, 0.07) == 7  # not 8 from 7.000000000000001
    assert gate_step(task, job, 0.001) == 1  # at least the first evaluation
    assert gate_step(task, job, 1.0) == 100
    assert Alto(warmup_ratio=0.3, cut_spacing=2, cuts=5).rungs() == (0.3, 0.6)  # none at or past the end


def test_gate_is_the_same_samples_for_every_batch_size():
    # 10,000 samples, eval every 100 samples: batch 16 evaluates every round(6.25) = 6 steps
    task = make_task(n_jobs=3, samples=10_000, batch_sizes=(1, 16, 3))
    steps = [gate_step(task, j, 0.05) for j in task.jobs]
    assert steps == [500, 30, 165]  # the evaluation nearest to 500 samples: 500, 480, 495


def test_select_keeps_top_quarter_nan_last_ties_by_id():
    task = make_task(n_jobs=8)
    d = Driver(Alto(select_ratio=0.25, warmup_ratio=0.05, noise_z=0), task)
    vals = {"j0": 3.0, "j1": 1.0, "j2": math.nan, "j3": 2.0, "j4": 1.0, "j5": None, "j6": 4.0, "j7": 5.0}
    warmed = {}
    for j, v in vals.items():
        h = JobHistory(task.job(j), 100)
        h.add(StepReport(0.0, "t", j, 5, 5, 1.0, v))
        warmed[j] = h
    assert d.policy.select(warmed, task, 0) == ["j1", "j4"]  # ceil(0.25 * 8) = 2, tie -> id order
    at5 = {"warmup_ratio": 0.05, "noise_z": 0}
    assert Alto(select_ratio=0.5, **at5).select(warmed, task, 0) == ["j1", "j4", "j3", "j0"]
    assert Alto(select_ratio=1.0, **at5).select(warmed, task, 0)[-2:] == ["j2", "j5"]  # NaN, missing last
    five = {j: warmed[j] for j in ["j0", "j1", "j3", "j6", "j7"]}
    assert Alto(select_ratio=0.25, **at5).select(five, task, 0) == ["j1", "j3"]  # ceil(1.25) = 2


def test_select_uses_the_latest_val_at_the_rung_or_the_best():
    task = make_task(n_jobs=2)
    d = Driver(Alto(select_ratio=0.5, tau_gap=math.inf, warmup_ratio=0.03, noise_z=0), task)
    d.curve("j0", [1.0, 1.0, 1.0, 1.0], [0.5, 1.0, None, 0.1])  # at the rung: best 0.5, latest 1.0
    d.curve("j1", [1.0, 1.0, 1.0], [0.9, 0.9, 0.9])
    assert d.policy.select(d.hists, task, 0) == ["j1"]  # j0's 0.1 is past the rung: not compared
    assert Alto(select_ratio=0.5, warmup_ratio=0.03, rank_by="best").select(d.hists, task, 0) == ["j0"]


# --- robustness --------------------------------------------------------------------------------


def test_rising_near_the_best_is_a_stall_that_keeps_the_best_snapshot():
    # both slopes rise for p_div = 2 evaluations; val 1.03 is 3% above its best (1.0)
    train, val = [1.0, 1.01, 1.02], [1.0, 1.01, 1.03]
    assert run(train, val, tau_gap=math.inf) == [CONTINUE, CONTINUE, OVF]
    assert run(train, val, tau_gap=math.inf, div_margin=0.02) == [CONTINUE, CONTINUE, DIV_KEEP]
    assert run(train, val, tau_gap=math.inf, div_margin=0.02, diverging_keeps_best=False) == [CONTINUE, CONTINUE, DIV]
    assert run_paper(train, val, tau_gap=math.inf) == [CONTINUE, CONTINUE, DIV]
    # a blow-up far above the best stays diverging (ours keeps the best snapshot; the paper discards it)
    assert run([1.0, 1.5, 2.5], [1.0, 1.5, 2.5], tau_gap=math.inf) == [CONTINUE, CONTINUE, DIV_KEEP]
    assert run_paper([1.0, 1.5, 2.5], [1.0, 1.5, 2.5], tau_gap=math.inf) == [CONTINUE, CONTINUE, DIV]


def test_stopped_job_keeps_its_verdict():
    d = Driver(Alto(**RULES, gap_requires_plateau=False), make_task())
    assert d.curve("j0", [1.0, 1.0, 1.0], [1.05, 1.15, 1.15])[-1] == OVF
    h = d.hists["j0"]
    assert d.policy.on_report(h, d.task) == OVF  # asked again, no new report
    assert d.report("j0", 1.0, 1.0) == OVF  # a report after the stop: same verdict, no new one


def test_asking_twice_without_a_new_report_does_not_double_count():
    d = Driver(Alto(ovf_patience=0.02, gap_requires_plateau=False), make_task())
    assert d.report("j0", 1.0, 1.2) == CONTINUE
    h = d.hists["j0"]
    assert d.policy.on_report(h, d.task) == CONTINUE  # would be count 2 if recounted
    assert d.report("j0", 1.0, 1.0) == CONTINUE
    # the plateau counter (evaluations since the best val) is not recounted either
    d = Driver(Alto(ovf_patience=0.01, plateau_ratio=0.02), make_task())
    assert d.report("j0", 1.0, 1.0) == CONTINUE and d.report("j0", 1.0, 1.2) == CONTINUE
    assert d.policy.on_report(d.hists["j0"], d.task) == CONTINUE
    assert d.report("j0", 1.0, 1.2) == OVF


curves = st.lists(st.tuples(st.floats(0.05, 5.0), st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(curves, st.integers(1, 6))
def test_batched_reports_give_the_same_verdict_as_one_by_one(pts, chunk):
    """A Controller that asks late (several new reports at once) gets the verdict it would have
    got by asking after each: the first stop, or CONTINUE."""
    train = [t for t, _, _ in pts]
    val = [t * (0.5 + u) if has else None for t, u, has in pts]
    one = run(train, val)
    d = Driver(Alto(**RULES), make_task())
    h = d.hists["j0"] = JobHistory(d.task.job("j0"), 100)
    for i, (t, v) in enumerate(zip(train, val)):
        h.add(StepReport(0.0, "t", "j0", i + 1, i + 1, t, v))
        if (i + 1) % chunk == 0 or i == len(train) - 1:
            expect = next((x for x in one[: i + 1] if x.stop), CONTINUE)
            assert d.policy.on_report(h, d.task) == expect


# --- properties --------------------------------------------------------------------------------


@st.composite
def monotone_curve(draw, tau_gap: float):
    """Non-increasing positive train and val, relative gap (val - train) / train <= tau_gap."""
    n = draw(st.integers(1, 40))
    train, val = [draw(st.floats(0.1, 10.0))], []
    for _ in range(n - 1):
        train.append(train[-1] * (1 - draw(st.floats(0.0, 0.2))))
    for t in train:
        cap = t * (1 + tau_gap * draw(st.floats(0.0, 0.999)))
        val.append(min(cap, val[-1]) if val else cap)
    assume(all((v - t) / t <= tau_gap - 1e-9 for t, v in zip(train, val)))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return train, [v if keep or i == 0 else None for i, (v, keep) in enumerate(zip(val, mask))]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(2, 6), st.floats(1e-6, 0.1), st.floats(0.001, 1.0), st.integers(1, 4),
       st.integers(1, 4), st.floats(0.0, 0.99))
def test_monotone_curves_within_gap_never_stop(data, w, tau_slope, tau_gap, p_div, p_ovf, ema):
    train, val = data.draw(monotone_curve(tau_gap))
    out = run(train, val, w=w, tau_slope=tau_slope * 100, tau_gap=tau_gap, div_patience=p_div / 100, ovf_patience=p_ovf / 100, ema=ema)
    assert out == [CONTINUE] * len(train)


@st.composite
def non_crossing_cohort(draw):
    """n jobs of mixed batch sizes whose monotone curves keep one order: job k's loss is the
    shared shape times (1 + offset_k), offsets distinct, so no two curves ever cross."""
    n = draw(st.integers(2, 12))
    shape = [1.0]
    for _ in range(99):
        shape.append(shape[-1] * (1 - draw(st.floats(0.0, 0.05))))
    # distinct in steps of 0.001, so no two curves tie in floating point (unique floats such as
    # 0.0 and 1e-300 would give identical losses and an arbitrary "best")
    offsets = [k / 1000 for k in draw(st.lists(st.integers(0, 500), min_size=n, max_size=n, unique=True))]
    gap = draw(st.floats(0.0, 0.09))
    bs = tuple(draw(st.lists(st.sampled_from([1, 2, 4]), min_size=n, max_size=n)))
    return n, shape, offsets, gap, bs


@settings(max_examples=100, deadline=None)
@given(non_crossing_cohort(), st.floats(0.01, 0.3), st.floats(0.05, 1.0), st.sampled_from([0.0, 1.0, 3.0]))
def test_best_final_job_survives_warmup_cut_and_rules(cohort, warmup_ratio, select_ratio, noise_z):
    n, shape, offsets, gap, bs = cohort
    task = make_task(n_jobs=n, samples=400, batch_sizes=bs)  # eval every 4 samples, 100 evals
    policy = Alto(warmup_ratio=warmup_ratio, select_ratio=select_ratio, cuts=1, noise_z=noise_z)
    d = Driver(policy, task)
    loss = {f"j{k}": [s * (1 + offsets[k]) for s in shape] for k in range(n)}
    best = min(loss, key=lambda j: loss[j][-1])
    alive = set(loss)

    def advance(j: str, until_step: int | None) -> None:
        job = task.job(j)
        while j in alive and len(d.hists.get(j, JobHistory(job, 0)).steps) < 100:
            i = len(d.hists.get(j, JobHistory(job, 0)).steps)
            if until_step is not None and (i + 1) * task.eval_every_steps(job) > until_step:
                return
            v = d.report(j, loss[j][i], loss[j][i] * (1 + gap))
            if v.stop:
                alive.discard(j)

    for j in sorted(loss):  # warm-up: every job up to its warm-up step
        advance(j, gate_step(task, task.job(j), policy.rungs()[0]))
    warmed = {j: d.hists[j] for j in sorted(alive) if j in d.hists}
    kept = policy.select(warmed, task, 0)
    alive &= set(kept)
    for j in sorted(alive):
        advance(j, None)
    assert best in alive
    k = max(1, math.ceil(select_ratio * len(warmed) - 1e-9))
    assert len(kept) == k if noise_z == 0 else len(kept) >= k


def test_diverging_job_keeps_its_best_snapshot_unless_paper_mode():
    """Ours: a diverging exit restores the best snapshot (it stays a candidate result); paper: it does not."""
    train, val = [1.0, 0.8, 0.6, 0.9, 1.4, 2.0], [1.0, 0.8, 0.6, 0.9, 1.4, 2.0]
    ours = run(train, val, tau_gap=math.inf)
    assert ours[-1].stop and ours[-1].reason == "diverging" and ours[-1].restore_best
    paper = run_paper(train, val, tau_gap=math.inf)
    assert paper[-1].stop and paper[-1].reason == "diverging" and not paper[-1].restore_best
