"""ALTO's cohort cuts: rungs in budget fractions, equal-samples comparison, the noise band.

Driven through the real Controller by a lockstep backend (every running job one step per
tick, reports at its eval steps, the Controller's actions applied), so the gates, holds and
cuts are the ones the simulator and the runtime get.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.early_exit import Alto
from altosim.policy.early_exit.signals import noise, signal
from altosim.policy.types import (
    Admit, JobFinished, JobHistory, JobSpec, StepReport, Stop, Suspend, TaskArrived, TaskSpec,
)

NO_EXIT_RULES = {"tau_gap": math.inf, "tau_slope": math.inf}


def make_task(n: int, every_pct: int, samples: int = 400, batches: tuple[int, ...] = (1, 2, 4)) -> TaskSpec:
    jobs = tuple(JobSpec(f"j{i:02d}", "t", lr=1e-4, rank=8, batch_size=batches[i % len(batches)]) for i in range(n))
    return TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=samples, eval_every_samples=samples * every_pct // 100)


def drive(task: TaskSpec, val, params: dict) -> dict[str, tuple[str, float]]:
    """Run one task; per job (how it ended, budget fraction it reached). `val(job, f)`: its val
    loss after fraction f of its budget."""
    cfg = ControllerConfig(num_gpus=1, early_exit="alto", early_exit_params={**NO_EXIT_RULES, **params},
                           inter_task="fifo")
    ctl = Controller(cfg, duration_for=lambda t: 1.0)
    state = {j.job_id: "pending" for j in task.jobs}
    step = {j.job_id: 0 for j in task.jobs}
    ended: dict[str, str] = {}

    def apply(acts) -> None:
        for a in acts:
            if isinstance(a, Admit):
                state[a.job_id] = "running"
            elif isinstance(a, Suspend):
                state[a.job_id] = "suspended"
            elif isinstance(a, Stop):
                state[a.job_id] = "stopped"
                ended[a.job_id] = a.reason

    apply(ctl.on_event(TaskArrived(0.0, task)))
    for tick in range(1, 100_000):
        if not ctl.running and not ctl.waiting:
            break
        for job in task.jobs:
            jid = job.job_id
            if state[jid] != "running":
                continue
            step[jid] += 1
            s, total = step[jid], task.total_steps(job)
            if task.is_eval_step(job, s):
                samples = min(s * job.batch_size, task.samples_per_job)
                v = val(jid, samples / task.samples_per_job)
                apply(ctl.on_event(StepReport(float(tick), "t", jid, s, samples, v, v)))
            if s >= total and state[jid] == "running":
                state[jid] = "finished"
                ended[jid] = "finished"
                apply(ctl.on_event(JobFinished(float(tick), "t", jid)))
    return {j.job_id: (ended[j.job_id], min(step[j.job_id] * j.batch_size, task.samples_per_job) / task.samples_per_job)
            for j in task.jobs}


def crossing_curves(n: int, jitter: float = 0.005):
    """Power-law curves that cross: fast starters with high floors, slow starters with low ones
    (the late bloomers of real grids), times a deterministic, white-looking jitter of up to
    `jitter` (a function of the job and the sample count, so both densities see the same values)."""
    def val(job: str, f: float) -> float:
        k = int(job[1:])
        floor, scale, rate = 0.5 + 0.03 * ((7 * k) % n), 1.0 + 0.1 * (k % 5), 0.3 + 0.05 * (k % 7)
        return (floor + scale * (f + 0.01) ** -rate / 10) * (1 + jitter * math.sin(7919.0 * round(f * 400) + k))
    return val


def test_the_same_curves_evaluated_every_1_and_every_4_percent_get_the_same_cuts():
    """Rungs are budget fractions: a task that evaluates 4x less often is cut at the same
    points (within one of its evaluations) and, ranking alone (no noise band), keeps the same
    jobs. (With eval-count gates, the old rule, the second cut moved from 24% to 48%.)"""
    n, val = 24, crossing_curves(24, jitter=0.0)
    params = {"warmup_ratio": 0.05, "cut_spacing": 2.5, "cuts": 3, "select_ratio": 0.5, "noise_z": 0}
    fine, coarse = drive(make_task(n, 1), val, params), drive(make_task(n, 4), val, params)
    assert {j for j, (e, _) in fine.items() if e == "finished"} == {j for j, (e, _) in coarse.items() if e == "finished"}
    cut_at = {j: f for j, (e, f) in fine.items() if e == "underperforming"}
    assert cut_at and set(cut_at) == {j for j, (e, _) in coarse.items() if e == "underperforming"}
    for j, f in cut_at.items():
        assert abs(coarse[j][1] - f) <= 0.04 + 1e-9, (j, f, coarse[j][1])
    # with hold at the gates no job trains past a rung before its cut: cuts at the rungs
    assert {round(f, 2) for f in cut_at.values()} <= {0.05, 0.12, 0.13, 0.31, 0.32}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.floats(0.01, 0.3), st.floats(1.5, 4.0), st.integers(1, 5))
def test_every_gate_is_within_one_evaluation_of_its_rung(every_pct, first, spacing, cuts):
    task = make_task(6, every_pct, samples=1000, batches=(1, 2, 3, 4, 8, 16))
    from altosim.policy.early_exit.base import gate_step

    for r in Alto(warmup_ratio=first, cut_spacing=spacing, cuts=cuts).rungs():
        for job in task.jobs:
            step = gate_step(task, job, r)
            at = min(step * job.batch_size, task.samples_per_job) / task.samples_per_job
            one_eval = task.eval_every_steps(job) * job.batch_size / task.samples_per_job
            assert task.is_eval_step(job, step) and abs(at - r) <= one_eval + 1e-9


def test_jobs_are_compared_at_equal_samples_not_by_their_latest_report():
    """Without hold, a large-batch job reaches the rung first and trains on; the cut still
    reads its val at the rung, so its later progress does not make it win."""
    task = make_task(2, 1, samples=100, batches=(1, 4))
    # j01 (batch 4) is worse at every equal sample count but, by the time j00 reaches the
    # rung, j01 has trained 4x further and its latest val is lower than j00's
    val = lambda j, f: (1.0 - f) if j == "j00" else (1.1 - f)  # noqa: E731
    out = drive(task, val, {"warmup_ratio": 0.1, "cuts": 1, "select_ratio": 0.5, "noise_z": 0, "hold_at_gate": False})
    assert out["j00"][0] == "finished" and out["j01"][0] == "underperforming"


def hist_of(job: JobSpec, task: TaskSpec, vals: list[float]) -> JobHistory:
    h = JobHistory(job, task.total_steps(job))
    every = task.eval_every_steps(job)
    for i, v in enumerate(vals, start=1):
        h.add(StepReport(0.0, "t", job.job_id, i * every, min(i * every * job.batch_size, task.samples_per_job), v, v))
    return h


cohorts = st.lists(st.lists(st.floats(0.05, 5.0), min_size=10, max_size=10), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(cohorts, st.floats(0.1, 1.0), st.sampled_from([0.0, 0.5, 1.0, 3.0]),
       st.sampled_from(["latest", "best", "extrapolated"]))
def test_a_cut_never_drops_the_leader_and_is_deterministic(vals, ratio, z, rank_by):
    task = make_task(len(vals), 1, samples=100, batches=(1,))
    hists = {j.job_id: hist_of(j, task, v) for j, v in zip(task.jobs, vals)}
    policy = Alto(warmup_ratio=0.1, cuts=1, select_ratio=ratio, noise_z=z, rank_by=rank_by)
    kept = policy.select(hists, task, 0)
    sig = {j: signal(h, len(h.steps), task, rank_by) for j, h in hists.items()}
    leader = min(sig, key=lambda j: (sig[j], j))
    assert leader in kept
    assert kept == Alto(**policy.params()).select(hists, task, 0)  # same input, same cut
    assert len(kept) >= max(1, math.ceil(ratio * len(vals) - 1e-9))
    if z == 0:
        assert len(kept) == max(1, math.ceil(ratio * len(vals) - 1e-9))


@settings(max_examples=100, deadline=None)
@given(cohorts, st.floats(0.1, 0.9))
def test_a_wider_noise_band_keeps_a_superset(vals, ratio):
    task = make_task(len(vals), 1, samples=100, batches=(1,))
    hists = {j.job_id: hist_of(j, task, v) for j, v in zip(task.jobs, vals)}
    narrow = set(Alto(warmup_ratio=0.1, select_ratio=ratio, noise_z=0.5).select(hists, task, 0))
    wide = set(Alto(warmup_ratio=0.1, select_ratio=ratio, noise_z=2.0).select(hists, task, 0))
    assert narrow <= wide


def test_noise_is_the_relative_jitter_around_the_recent_power_law():
    task = make_task(1, 1, samples=100, batches=(1,))
    job = task.jobs[0]
    law = [2.0 * (0.01 * i) ** -0.3 for i in range(1, 21)]
    assert noise(hist_of(job, task, law), 20, task, 0.1) < 1e-9  # a smooth learning curve has none
    zigzag = [v * (1.03 if i % 2 else 0.97) for i, v in enumerate(law)]
    assert 0.025 < noise(hist_of(job, task, zigzag), 20, task, 0.1) < 0.04
    assert noise(hist_of(job, task, law[:2]), 2, task, 0.1) == 0.0  # too few points


def test_extrapolation_ranks_a_steep_late_bloomer_ahead():
    task = make_task(2, 1, samples=100, batches=(1,))
    fast = [0.9 * (0.01 * i) ** -0.05 for i in range(1, 11)]  # low now, nearly flat
    steep = [0.6 * (0.01 * i) ** -0.25 for i in range(1, 11)]  # higher now, falling fast
    h = {"j00": hist_of(task.jobs[0], task, fast), "j01": hist_of(task.jobs[1], task, steep)}
    assert h["j00"].val[-1] < h["j01"].val[-1]
    assert signal(h["j01"], 10, task, "extrapolated") < signal(h["j00"], 10, task, "extrapolated")


class _CountedSpacing(float):
    """A rung spacing that counts the products and powers taken of it and refuses more than
    `limit`: a rung index found by walking the rungs (~2.8e10 of them at spacing 1 + 1e-9 from
    1e-12) fails at once instead of hanging; the closed form takes at most 3 powers (the log's
    guess, then its rounding guards)."""

    def __new__(cls, value: float, limit: int = 8):
        obj = super().__new__(cls, value)
        obj.calls, obj.limit = 0, limit
        return obj

    def _count(self) -> float:
        self.calls += 1
        assert self.calls <= self.limit, "rung_of walks the rungs (one product or power per rung)"
        return float(self)

    def __pow__(self, k):
        return self._count() ** k

    def __mul__(self, x):
        return self._count() * x

    __rmul__ = __mul__


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-12, 1.0), st.floats(1.0 + 1e-9, 100.0), st.integers(0, 64), st.lists(st.floats(0.0, 1.0), max_size=20))
def test_hostile_schedules_stay_cheap_and_ordered(first, spacing, cuts, ts):
    """Extreme but valid parameters: rungs increase, stay below the budget's end, at most 64;
    ASHA's rung index is monotone in time and costs no loop over rungs (counted, not timed: a
    deadline fails a stalled example on a loaded machine)."""
    from altosim.policy.early_exit.asha import rung_of

    rungs = Alto(warmup_ratio=first, cut_spacing=spacing, cuts=cuts).rungs()
    assert len(rungs) <= cuts and all(0 < a < b < 1 for a, b in zip(rungs, rungs[1:])) and all(r < 1 for r in rungs)
    ks = [rung_of(t, first, _CountedSpacing(spacing)) for t in sorted(ts)]
    seen = [k for k in ks if k is not None]
    assert seen == sorted(seen)
    for t, k in zip(sorted(ts), ks):
        assert (k is None) == (t < first * (1 - 1e-9))
        if k is not None:
            assert first * spacing ** k <= t + 1e-6
