"""Baselines (none, median stopping, ASHA) hand-checked against Ray Tune's semantics; building
policies by name; determinism of every policy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.early_exit import CONTINUE, Asha, MedianStopping, NoExit, Verdict, build_early_exit
from altosim.policy.early_exit.asha import cutoff, rung_of
from altosim.policy.registry import EARLY_EXIT
from altosim.policy.types import JobHistory, JobSpec, StepReport, TaskSpec

PRUNED = Verdict(True, "pruned")
DIV = Verdict(True, "diverging")


def make_task(n_jobs: int = 6, samples: int = 100, batch_sizes: tuple[int, ...] = (1,)) -> TaskSpec:
    jobs = tuple(JobSpec(f"j{i}", "t", lr=1e-4, rank=8, batch_size=batch_sizes[i % len(batch_sizes)])
                 for i in range(n_jobs))
    return TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=samples)


class Driver:
    """A stand-in Controller: report (job, val) at the job's next evaluation, ask the policy."""

    def __init__(self, policy, task: TaskSpec | None = None) -> None:
        self.policy, self.task, self.hists = policy, task or make_task(), {}

    def report(self, job_id: str, val: float | None, train: float = 1.0, index: int | None = None) -> Verdict:
        job = self.task.job(job_id)
        h = self.hists.setdefault(job_id, JobHistory(job, self.task.total_steps(job)))
        step = (index or len(h.steps) + 1) * self.task.eval_every_steps(job)
        h.add(StepReport(0.0, "t", job_id, step, step * job.batch_size, train, val))
        return self.policy.on_report(h, self.task)

    def round(self, vals: dict[str, float | None]) -> dict[str, Verdict]:
        return {j: self.report(j, v) for j, v in vals.items()}


# --- none ----------------------------------------------------------------------------------------


def test_none_never_stops_and_has_no_gate():
    d = Driver(NoExit())
    assert [d.report("j0", v, t) for v, t in [(1.0, 1.0), (9.0, 9.0), (math.nan, math.nan)]] == [CONTINUE] * 3
    assert d.policy.rungs() == ()
    assert d.policy.select(d.hists, d.task, 0) == ["j0"]


# --- median stopping -----------------------------------------------------------------------------


def test_median_compares_best_so_far_with_peers_at_the_same_index():
    d = Driver(MedianStopping(warmup_ratio=0.01, min_jobs=3))
    # index 1: j0..j2 have < 3 peers; j3's peers [1, 2, 3] have median 2 and 2.5 > 2 -> pruned
    assert d.round({"j0": 1.0, "j1": 2.0, "j2": 3.0, "j3": 2.5}) == {
        "j0": CONTINUE, "j1": CONTINUE, "j2": CONTINUE, "j3": PRUNED}
    # index 2: a tie with the median is not "worse" (Ray: strictly worse)
    assert d.round({"j0": 1.0, "j1": 2.0, "j2": 3.0}) == {"j0": CONTINUE, "j1": CONTINUE, "j2": CONTINUE}
    assert d.report("j4", 2.0, index=2) == CONTINUE  # peers at 2: [1, 2, 3], median 2, best 2
    # j5's best so far (0.5 at index 1) counts, not its current 5.0
    assert d.report("j5", 0.5, index=1) == CONTINUE
    assert d.report("j5", 5.0, index=2) == CONTINUE
    assert d.report("j2", 3.0, index=3) == CONTINUE  # nobody else at index 3 yet


def test_median_stopped_jobs_still_count_and_min_jobs_gates():
    d = Driver(MedianStopping(warmup_ratio=0.01, min_jobs=1))
    assert d.report("j0", 1.0) == CONTINUE  # no peers
    assert d.report("j1", 2.0) == PRUNED  # peers [1.0]
    assert d.report("j2", 1.5) == CONTINUE  # peers [1.0, 2.0]: the stopped j1 still counts
    assert d.report("j3", 1.6) == PRUNED  # peers [1.0, 2.0, 1.5]: median 1.5
    d = Driver(MedianStopping(warmup_ratio=0.01, min_jobs=2))
    assert d.round({"j0": 1.0, "j1": 2.0, "j2": 3.0}) == {"j0": CONTINUE, "j1": CONTINUE, "j2": PRUNED}


def test_median_warmup_evals():
    d = Driver(MedianStopping(warmup_ratio=0.02, min_jobs=1))
    assert d.round({"j0": 1.0, "j1": 9.0}) == {"j0": CONTINUE, "j1": CONTINUE}  # index 1 < 2
    assert d.round({"j0": 1.0, "j1": 9.0}) == {"j0": CONTINUE, "j1": PRUNED}  # earliest at index 2


def test_median_running_average_is_rays_rule():
    def play(policy) -> Verdict:
        d = Driver(policy)
        for j in ["j0", "j1", "j2"]:
            d.report(j, 1.0)
            d.report(j, 3.0)
        return d.report("j3", 2.5, index=2)  # j3's first report

    # at index 2, peers' values are [3, 3, 3] (median 3) but their running means over [1, 2]
    # are [2, 2, 2]: j3 (best 2.5) survives the first rule, not Ray's
    assert play(MedianStopping(warmup_ratio=0.01, min_jobs=3)) == CONTINUE
    assert play(MedianStopping(warmup_ratio=0.01, min_jobs=3, running_average=True)) == PRUNED
    # the running mean starts at the grace period: over [2, 2] the peers' mean is 3 again
    assert play(MedianStopping(warmup_ratio=0.02, min_jobs=3, running_average=True)) == CONTINUE


def test_median_running_average_uses_only_jobs_that_reached_t():
    d = Driver(MedianStopping(warmup_ratio=0.01, min_jobs=1, running_average=True))
    d.report("j0", 9.0)  # j0 stays at index 1
    assert d.report("j1", 1.0) == CONTINUE  # peers at 1: j0 (9.0)
    assert d.report("j1", 5.0) == CONTINUE  # at index 2 no peer has reached 2
    assert d.report("j2", 6.0, index=1) == PRUNED  # peers' means at 1: [9, 1] -> median 5


# --- ASHA ----------------------------------------------------------------------------------------


def test_rungs():
    assert [rung_of(t, 2, 3) for t in [1, 2, 5, 6, 17, 18, 54]] == [None, 0, 0, 1, 1, 2, 3]
    assert [rung_of(t, 1, 2) for t in [1, 2, 3, 4, 8]] == [0, 1, 1, 2, 3]


def test_cutoff_is_rays_percentile():
    assert cutoff({}, 2) is None
    assert cutoff({"a": 2.0, "b": 4.0}, 2) == 3.0  # Ray's _Bracket docstring example
    assert cutoff({str(i): -float(i) for i in range(1, 6)}, 4) == -2.0  # 75th pct of -5..-1


def test_asha_rays_docstring_example_in_loss_form():
    # Ray: _Bracket(min_t=1, max_t=10, rf=2): rewards 2 (CONTINUE), 4 (CONTINUE), 1 (STOP).
    # As losses 10 - reward: 8, 6, 9; the cutoff on rewards is -7 (loss 7), strict
    d = Driver(Asha(grace_period=0.01, reduction_factor=2))
    assert d.round({"j0": 8.0, "j1": 6.0, "j2": 9.0}) == {"j0": CONTINUE, "j1": CONTINUE, "j2": PRUNED}
    assert d.report("j3", 7.0) == CONTINUE  # recorded rewards [-8, -6, -9]: cutoff -8, -7 >= -8


def test_asha_keeps_top_quarter_at_eta_4():
    d = Driver(Asha(grace_period=0.01, reduction_factor=4), make_task(n_jobs=7))
    first = d.round({f"j{i}": float(i) for i in range(1, 6)})  # each judged, then recorded
    assert [v.stop for v in first.values()] == [False, True, True, True, True]
    assert d.report("j6", 2.0) == CONTINUE  # rewards -1..-5: 75th percentile -2, not below it
    assert d.report("j0", 2.5) == PRUNED  # rewards -1..-5, -2: cutoff -2 > -2.5


def test_asha_judges_once_per_rung_and_first_at_rung_continues():
    d = Driver(Asha(grace_period=0.02, reduction_factor=2), make_task(samples=100))
    assert d.report("j0", 1.0) == CONTINUE  # index 1 < grace
    assert d.report("j0", 1.0) == CONTINUE  # index 2: first at rung 0 -> continue
    assert d.report("j1", 9.0, index=1) == CONTINUE
    assert d.report("j1", 9.0) == PRUNED  # index 2: rung 0 holds [-1]
    assert d.report("j2", 0.5, index=2) == CONTINUE
    assert d.report("j2", 50.0) == CONTINUE  # index 3: still rung 0, already judged there
    assert d.report("j2", 50.0) == CONTINUE  # index 4 = rung 1: first at that rung
    assert d.report("j0", 1.0, index=4) == CONTINUE  # rung 1 holds [-50]: -1 is above the cutoff
    assert d.report("j3", 60.0, index=4) == PRUNED  # rung 1 holds [-50, -1]: cutoff -25.5


def test_asha_max_t_stops_with_budget_and_last_report_is_never_judged():
    task = make_task(samples=10)  # 10 evals, batch 1
    d = Driver(Asha(grace_period=0.1, reduction_factor=2, max_t=0.3), task)
    assert [d.report("j0", 1.0) for _ in range(3)] == [CONTINUE, CONTINUE, Verdict(True, "budget")]
    d = Driver(Asha(grace_period=0.1, reduction_factor=2), task)  # max_t: the whole budget
    d.report("j0", 1.0, index=8)  # rung 3 (index 8) holds [-1]
    assert d.report("j1", 9.0, index=10) == CONTINUE  # last report: finished, no decision
    assert d.report("j2", 9.0, index=9) == PRUNED  # the same value one eval earlier is judged


@pytest.mark.parametrize("policy", [MedianStopping(warmup_ratio=0.01, min_jobs=1), Asha(grace_period=0.01)])
def test_baselines_exit_non_finite_losses_at_once(policy):
    d = Driver(policy)
    assert d.report("j0", math.nan) == DIV
    assert d.report("j1", 1.0, train=math.inf) == DIV


def test_baselines_ignore_reports_without_val():
    d = Driver(Asha(grace_period=0.01, reduction_factor=2))
    d.report("j0", 1.0)
    assert d.report("j1", None, index=1) == CONTINUE
    assert d.report("j1", 9.0, index=2) == CONTINUE  # first at rung 1 (rung 0 skipped: no val)
    assert d.report("j1", 9.0, index=3) == CONTINUE  # rung 0 is not judged afterwards


# --- building by name --------------------------------------------------------------------------


def test_registry_has_every_policy():
    assert {"alto", "none", "median", "asha"} <= set(EARLY_EXIT.names())
    assert isinstance(build_early_exit("asha", {"grace_period": 0.02}), Asha)
    assert build_early_exit("median", None).params() == {"warmup_ratio": 0.05, "min_jobs": 3, "running_average": False}
    assert build_early_exit("asha", {}).params() == {"grace_period": 0.05, "reduction_factor": 4.0, "max_t": None}


@pytest.mark.parametrize("name, params, words", [
    ("optuna", {}, "unknown early_exit policy 'optuna'"),
    ("alto", {"tau": 1}, "'tau': unknown parameter"),
    ("alto", {"w": 1}, "'w': Input should be greater than or equal to 2"),
    ("alto", {"div_patience": 0}, "'div_patience': Input should be greater than 0"),
    ("alto", {"warmup_ratio": 0.0}, "'warmup_ratio': Input should be greater than 0"),
    ("alto", {"select_ratio": 1.5}, "'select_ratio': Input should be less than or equal to 1"),
    ("alto", {"ema": 1.0}, "'ema': Input should be less than 1"),
    ("alto", {"tau_gap": math.nan}, "'tau_gap'"),
    ("alto", {"w": 2.5}, "'w': Input should be a valid integer"),
    ("alto", {"tau_slope": "0.1"}, "'tau_slope': Input should be a valid number"),
    ("alto", {"rank_by": "mean"}, "'rank_by': Input should be 'latest', 'best' or 'extrapolated'"),
    ("median", {"min_jobs": 0}, "'min_jobs': Input should be greater than or equal to 1"),
    ("median", {"hard_stop": False}, "'hard_stop': unknown parameter"),
    ("asha", {"reduction_factor": 1}, "'reduction_factor': Input should be greater than 1"),
    ("asha", {"grace_period": 0.5, "max_t": 0.4}, "'max_t' must be >= grace_period 0.5"),
    ("none", {"x": 1}, "'x': unknown parameter"),
    ("alto", [("w", 2)], "params must be a mapping"),
])
def test_bad_parameters_are_one_line_errors(name, params, words):
    with pytest.raises(ValueError) as e:
        build_early_exit(name, params)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_infinite_thresholds_turn_rules_off():
    p = build_early_exit("alto", {"tau_slope": math.inf, "tau_gap": math.inf})
    assert p.tau_slope == math.inf and p.tau_gap == math.inf


def test_each_build_is_a_fresh_policy():
    a, b = build_early_exit("asha", {"grace_period": 0.01}), build_early_exit("asha", {"grace_period": 0.01})
    Driver(a).report("j0", 1.0)
    assert Driver(b).report("j1", 9.0) == CONTINUE  # b has no memory of a's rung


# --- determinism and robustness, every policy ---------------------------------------------------

POLICIES = [("alto", {}), ("alto", {"w": 3, "div_patience": 0.1, "ovf_patience": 0.1}), ("none", {}),
            ("median", {"warmup_ratio": 0.1, "min_jobs": 1}),
            ("median", {"warmup_ratio": 0.2, "min_jobs": 2, "running_average": True}),
            ("asha", {"grace_period": 0.1, "reduction_factor": 2}), ("asha", {"grace_period": 0.2, "max_t": 0.6})]

events = st.lists(st.tuples(st.integers(0, 4), st.floats(0.1, 3.0), st.one_of(st.none(), st.floats(0.1, 3.0))),
                  max_size=60)


def replay(name: str, params: dict, evs) -> list[tuple[str, Verdict]]:
    """Feed interleaved reports (each job up to 10 evals) as a Controller would: never ask a
    stopped job again."""
    d = Driver(build_early_exit(name, params), make_task(n_jobs=5, samples=10))
    out, stopped = [], set()
    for k, train, val in evs:
        j = f"j{k}"
        if j in stopped or len(d.hists.get(j, JobHistory(d.task.job(j), 0)).steps) >= 10:
            continue
        v = d.report(j, val, train)
        out.append((j, v))
        if v.stop:
            stopped.add(j)
    return out


@settings(max_examples=60, deadline=None)
@given(events)
def test_same_reports_same_verdicts(evs):
    for name, params in POLICIES:
        assert replay(name, params, evs) == replay(name, params, evs)


@settings(max_examples=60, deadline=None)
@given(events)
def test_a_stopped_job_asked_again_gets_the_same_verdict(evs):
    for name, params in POLICIES:
        d = Driver(build_early_exit(name, params), make_task(n_jobs=5, samples=10))
        first: dict[str, Verdict] = {}
        for k, train, val in evs:
            j = f"j{k}"
            if len(d.hists.get(j, JobHistory(d.task.job(j), 0)).steps) >= 10:
                continue
            v = d.report(j, val, train)
            if j in first:
                assert v == first[j]  # no second, different verdict
            elif v.stop:
                first[j] = v


@pytest.mark.parametrize("name, params", POLICIES)
def test_name_and_params_rebuild_the_policy(name, params):
    p = build_early_exit(name, params)
    assert p.name == name
    q = build_early_exit(p.name, p.params())
    assert q == p and q is not p and q.params() == p.params()
