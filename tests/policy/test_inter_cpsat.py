"""CP-SAT inter-task scheduler: validity, never worse than FIFO, agreement of the two models,
left shift, bounds against a brute-force optimum, truncation and fallback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings

from altosim.policy.inter import CpSatScheduler, FifoScheduler, RunningTask, SjfScheduler, WaitingTask, validate_plan
from altosim.policy.inter import cpsat as cpsat_mod
from altosim.policy.inter.base import fifo_order
from altosim.policy.inter.cpsat_models import build_cumulative, build_paper, solve
from altosim.policy.registry import INTER_TASK
from tests.policy._cpsat import STALL_PROOF_S, budget_of
from tests.policy.test_inter_strategies import brute_force_makespan, instances

# the work budget of a 0.5 s limit; no wall cap a loaded machine reaches (tests/policy/_cpsat.py)
FAST = budget_of(0.5, num_workers=2)
STATUSES = {"optimal", "feasible", "greedy", "fallback"}


def test_beats_both_greedy_orders_when_short_tasks_should_wait() -> None:
    # 2 GPUs; FIFO and SJF both run the two short tasks first and the long one last (15);
    # the optimum runs the long one at once beside the short ones in sequence (10).
    waiting = [WaitingTask("s1", 1, 5.0, 0.0), WaitingTask("s2", 1, 5.0, 1.0), WaitingTask("long", 1, 10.0, 2.0)]
    assert FifoScheduler().plan(0.0, 2, [], waiting).makespan == 15.0
    assert SjfScheduler().plan(0.0, 2, [], waiting).makespan == 15.0
    for model in ("cumulative", "paper"):
        p = CpSatScheduler(model=model, **FAST).plan(0.0, 2, [], waiting)
        validate_plan(p, 0.0, 2, [], waiting)
        assert p.makespan == 10.0 and p.status == "optimal"
        assert {a.task_id: a.start for a in p.assignments}["long"] == 0.0


@settings(max_examples=40, deadline=None)
@given(inst=instances(max_gpus=8, max_waiting=8, max_running=3))
def test_cpsat_plans_are_valid_and_never_worse_than_fifo(inst) -> None:
    now, num_gpus, running, waiting = inst
    p = CpSatScheduler(**FAST).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)
    assert p.status in STATUSES
    assert p.makespan <= FifoScheduler().plan(now, num_gpus, running, waiting).makespan
    assert p.makespan <= SjfScheduler().plan(now, num_gpus, running, waiting).makespan
    assert p.lower_bound <= p.makespan


@settings(max_examples=30, deadline=None)
@given(inst=instances(max_gpus=4, max_waiting=5, max_running=2))
def test_bound_and_makespan_bracket_the_true_optimum(inst) -> None:
    now, num_gpus, running, waiting = inst
    if not waiting:
        return
    opt = brute_force_makespan(now, num_gpus, running, waiting)
    p = CpSatScheduler(resolution=1000, **FAST).plan(now, num_gpus, running, waiting)
    assert p.lower_bound <= opt + 1e-9 <= p.makespan + 2e-9
    if p.status == "optimal":
        # optimal in integer time: off the real optimum by at most 2 units per task
        greedy = min(FifoScheduler().plan(now, num_gpus, running, waiting).makespan,
                     SjfScheduler().plan(now, num_gpus, running, waiting).makespan)
        unit = (greedy - now) / 1000
        assert p.makespan <= opt + 2 * len(waiting) * unit + 1e-9


@settings(max_examples=25, deadline=None)
@given(inst=instances(max_gpus=3, max_waiting=4, max_running=2))
def test_paper_and_cumulative_models_agree(inst) -> None:
    now, num_gpus, running, waiting = inst
    if not waiting:
        return
    greedy = FifoScheduler().plan(now, num_gpus, running, waiting).makespan
    unit = (greedy - now) / 20  # coarse time keeps the paper model's big-M small
    inst_int, _ = cpsat_mod._discretize(now, num_gpus, running, fifo_order(waiting), unit, with_ids=True)
    a = solve(build_cumulative(inst_int), STALL_PROOF_S, 2, 0, False)  # to optimality: a few ms
    b = solve(build_paper(inst_int), STALL_PROOF_S, 2, 0, False)
    assert a.status == b.status == "OPTIMAL"
    assert a.cmax == b.cmax
    # and the paper model's plan is a valid plan too
    p = CpSatScheduler(model="paper", **FAST).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)


@settings(max_examples=30, deadline=None)
@given(inst=instances(max_gpus=4, max_waiting=5, max_running=2, integral=True))
def test_exact_optimum_and_left_shift_on_whole_seconds(inst) -> None:
    """With whole-second data and a 1 s unit the integer model is exact: CP-SAT must find the
    brute-force optimum, and when starting something now costs no makespan, it must do so."""
    now, num_gpus, running, waiting = inst
    if not waiting:
        return
    p = CpSatScheduler(time_unit_s=1.0, **budget_of(2.0)).plan(now, num_gpus, running, waiting)
    validate_plan(p, now, num_gpus, running, waiting)
    assert p.status == "optimal"
    opt = brute_force_makespan(now, num_gpus, running, waiting)
    assert p.makespan == opt
    if brute_force_makespan(now, num_gpus, running, waiting, start_now=True) == opt:
        assert p.starts_now(now), "GPUs left idle now although starting a task costs no makespan"


def test_left_shift_yields_to_makespan() -> None:
    # 5 GPUs, 2 free now; starting the 1-GPU task now would block the 3-GPU one (29 -> 42)
    running = [RunningTask("r0", (0,), 1.0), RunningTask("r2", (1, 2), 14.0)]
    waiting = [WaitingTask("w0", 1, 14.0, 0.0), WaitingTask("w1", 3, 28.0, 0.0)]
    p = CpSatScheduler(**FAST).plan(0.0, 5, running, waiting)
    assert p.makespan == 29.0 and p.starts_now(0.0) == ()
    # ... and idle GPUs are used now when that is free: 2 GPUs, one busy until 2
    running = [RunningTask("r", (0,), 2.0)]
    waiting = [WaitingTask("wide", 2, 4.0, 0.0), WaitingTask("short", 1, 2.0, 1.0)]
    p = CpSatScheduler(**FAST).plan(0.0, 2, running, waiting)
    assert p.makespan == 6.0 and [a.task_id for a in p.starts_now(0.0)] == ["short"]


def test_truncates_to_max_tasks_and_says_so() -> None:
    waiting = [WaitingTask(f"w{i}", 1 + i % 2, 3.0 + (7 * i) % 5, float(i)) for i in range(7)]
    p = CpSatScheduler(max_tasks=3, **FAST).plan(0.0, 2, [], waiting)
    validate_plan(p, 0.0, 2, [], waiting)
    assert "first 3 of 7" in p.note
    assert p.makespan <= FifoScheduler().plan(0.0, 2, [], waiting).makespan


def test_solver_failure_falls_back_to_the_greedy_plan(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(cpsat_mod, "solve", broken)
    waiting = [WaitingTask("s1", 1, 5.0, 0.0), WaitingTask("s2", 1, 5.0, 1.0), WaitingTask("long", 1, 10.0, 2.0)]
    p = CpSatScheduler(**FAST).plan(0.0, 2, [RunningTask("r", (0,), 1.0)], waiting)
    assert p.status == "fallback" and "solver exploded" in p.note
    validate_plan(p, 0.0, 2, [RunningTask("r", (0,), 1.0)], waiting)


def test_greedy_meeting_the_bound_skips_the_solver(monkeypatch) -> None:
    monkeypatch.setattr(cpsat_mod, "solve", lambda *a, **k: pytest.fail("solver called"))
    waiting = [WaitingTask("a", 1, 5.0, 0.0), WaitingTask("b", 1, 5.0, 0.0)]
    p = CpSatScheduler(**FAST).plan(0.0, 2, [], waiting)
    assert p.status == "optimal" and p.makespan == p.lower_bound == 5.0


def test_parameters_are_checked_and_registry_passes_them() -> None:
    s = INTER_TASK.build("cpsat", time_limit_s=1.0, model="paper", max_tasks=10)
    assert isinstance(s, CpSatScheduler) and s.model == "paper" and s.max_tasks == 10
    bads = (dict(model="mip"), dict(time_limit_s=0.0), dict(num_workers=0), dict(max_tasks=0), dict(resolution=1),
            dict(time_unit_s=-1.0))
    for bad in bads:
        with pytest.raises(ValueError, match=next(iter(bad))):
            CpSatScheduler(**bad)


def test_policy_import_does_not_load_ortools() -> None:
    code = "import sys, altosim.policy.inter; assert 'ortools' not in sys.modules, 'ortools loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


def test_deterministic_mode_repeats_its_plan() -> None:
    waiting = [WaitingTask(f"w{i}", 1 + i % 3, 2.0 + (5 * i) % 7, float(i)) for i in range(8)]
    running = [RunningTask("r", (0, 1), 3.0)]
    sched = CpSatScheduler(time_limit_s=0.5, deterministic=True)
    a = sched.plan(0.0, 4, running, waiting)
    b = sched.plan(0.0, 4, running, waiting)
    validate_plan(a, 0.0, 4, running, waiting)
    assert a.assignments == b.assignments and a.status == b.status
