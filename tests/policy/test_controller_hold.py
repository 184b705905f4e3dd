"""The Controller's hold at gate and successive cuts, driven by a tiny lockstep backend.

The backend advances every running job one step per tick, reports at the task's eval steps
(random losses, NaN now and then), sends JobFinished at a job's last step, and executes the
Controller's actions. Properties (hypothesis): with hold, no job trains past the gate of a cut
before that cut; a stopped job never runs or reports again; the running group never exceeds the
group capacity; every job ends stopped or finished and the task finishes.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.early_exit.base import gate_step
from altosim.policy.types import (
    Admit, FinishTask, JobFinished, JobSpec, StartTask, StepReport, Stop, Suspend, TaskArrived, TaskSpec,
)


class Lockstep:
    """Executes a Controller's actions for one task and checks the invariants on the way."""

    def __init__(self, ctl: Controller, task: TaskSpec, losses: dict[str, list[float]], cap: int | None,
                 check_gates: bool) -> None:
        self.ctl, self.task, self.losses, self.cap, self.check_gates = ctl, task, losses, cap, check_gates
        self.state = {j.job_id: "pending" for j in task.jobs}
        self.step = {j.job_id: 0 for j in task.jobs}
        self.finished_task = False
        self.now = 0.0

    def apply(self, acts) -> None:
        for a in acts:
            if isinstance(a, Admit):
                assert self.state[a.job_id] in ("pending", "suspended"), f"{a.job_id} admitted twice"
                assert a.resume == (self.state[a.job_id] == "suspended")
                self.state[a.job_id] = "running"
            elif isinstance(a, Suspend):
                assert self.state[a.job_id] == "running"
                self.state[a.job_id] = "suspended"
            elif isinstance(a, Stop):
                assert self.state[a.job_id] not in ("stopped", "finished"), f"{a.job_id} stopped twice"
                self.state[a.job_id] = "stopped"
            elif isinstance(a, FinishTask):
                self.finished_task = True
            else:
                assert isinstance(a, StartTask)
        running = [j for j, s in self.state.items() if s == "running"]
        if self.cap is not None:
            assert len(running) <= self.cap
        self.check_gate_invariant()

    def check_gate_invariant(self) -> None:
        ts = self.ctl.running.get(self.task.task_id)
        if not self.check_gates or ts is None or ts.cut_done:
            return
        for j in self.task.jobs:
            rungs = ts.policy.rungs()
            gate = gate_step(self.task, j, rungs[ts.cuts_done]) if ts.cuts_done < len(rungs) else None
            if self.state[j.job_id] != "stopped" and gate is not None:
                assert self.step[j.job_id] <= gate, f"{j.job_id} at step {self.step[j.job_id]} past gate {gate}"

    def run(self, max_ticks: int = 10_000) -> None:
        self.apply(self.ctl.on_event(TaskArrived(0.0, self.task)))
        for _ in range(max_ticks):
            if self.finished_task:
                return
            self.now += 1.0
            for job in self.task.jobs:
                jid = job.job_id
                if self.state[jid] != "running":
                    continue  # an earlier job's actions this tick may have stopped or suspended it
                self.step[jid] += 1
                s, total = self.step[jid], self.task.total_steps(job)
                if self.task.is_eval_step(job, s):
                    k = math.ceil(s / self.task.eval_every_steps(job)) - 1
                    v = self.losses[jid][min(k, len(self.losses[jid]) - 1)]
                    self.apply(self.ctl.on_event(StepReport(self.now, self.task.task_id, jid, s,
                                                            min(s * job.batch_size, self.task.samples_per_job), v, v)))
                if s >= total and self.state[jid] == "running":
                    self.state[jid] = "finished"
                    self.apply(self.ctl.on_event(JobFinished(self.now, self.task.task_id, jid)))
        raise AssertionError("the task never finished")


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 10))
    bs = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=n, max_size=n))
    losses = {f"j{i}": draw(st.lists(st.one_of(st.floats(0.1, 3.0), st.just(math.nan)), min_size=25, max_size=25))
              for i in range(n)}
    params = {"warmup_ratio": draw(st.sampled_from([0.05, 0.1, 0.3])),
              "select_ratio": draw(st.sampled_from([0.3, 0.5, 1.0])),
              "cuts": draw(st.integers(1, 3)), "cut_spacing": draw(st.sampled_from([2.0, 3.0])),
              "cut_groups": draw(st.sampled_from(["none", "batch", "batch+all"])), "hold_at_gate": True}
    cap = draw(st.one_of(st.none(), st.integers(1, 4)))
    return n, bs, losses, params, cap


def make_task(n: int, bs: list[int], samples: int = 40) -> TaskSpec:
    jobs = tuple(JobSpec(f"j{i}", "t", lr=1e-4, rank=8, batch_size=b) for i, b in enumerate(bs))
    return TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=samples, eval_every_samples=2)  # 20 evals


def drive(n, bs, losses, params, cap, hold=None) -> Lockstep:
    cfg = ControllerConfig(num_gpus=1, early_exit="alto", early_exit_params=params, inter_task="fifo",
                           max_jobs_per_group=cap, hold_at_gate=hold)
    sim = Lockstep(Controller(cfg, duration_for=lambda t: 1.0), make_task(n, bs), losses, cap,
                   check_gates=hold is not False)
    sim.run()
    return sim


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_hold_keeps_every_job_at_its_gate_until_the_cut_and_ends_every_job(sc):
    sim = drive(*sc)
    assert sim.finished_task
    assert set(sim.state.values()) <= {"stopped", "finished"}


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_without_hold_the_other_invariants_still_hold(sc):
    n, bs, losses, params, cap = sc
    sim = drive(n, bs, losses, {**params, "hold_at_gate": False}, cap, hold=False)
    assert sim.finished_task
    assert set(sim.state.values()) <= {"stopped", "finished"}


def test_hold_suspends_at_the_gate_and_resumes_survivors_after_the_cut():
    """4 jobs fit at once; the first three wait at their gate (Suspend) for the last one, then
    the cut keeps two (select 0.5) and the held survivors resume."""
    losses = {f"j{i}": [1.0 + i / 10] * 25 for i in range(4)}
    params = {"warmup_ratio": 0.1, "select_ratio": 0.5, "cuts": 1, "hold_at_gate": True, "tau_gap": math.inf}
    cfg = ControllerConfig(num_gpus=1, early_exit="alto", early_exit_params=params, inter_task="fifo")
    ctl = Controller(cfg, duration_for=lambda t: 1.0)
    task = make_task(4, [1, 1, 2, 4])
    log: list = []
    sim = Lockstep(ctl, task, losses, None, True)
    orig = sim.apply
    sim.apply = lambda acts: (log.extend(acts), orig(acts))[1]
    sim.run()
    suspended = [a.job_id for a in log if isinstance(a, Suspend)]
    # gate: 10% of the budget, 4 samples: batch 4 evaluates every step (j3: tick 1), batch 2
    # too (j2: tick 2), batch 1 every 2 steps (j0, j1: tick 4); j1, the last to get there, is
    # not held: its report makes the cut
    assert suspended == ["j3", "j2", "j0"]
    stops = {a.job_id: a.reason for a in log if isinstance(a, Stop)}
    assert stops == {"j2": "underperforming", "j3": "underperforming"}
    assert [a.job_id for a in log if isinstance(a, Admit) and a.resume] == ["j0"]
    assert sim.state == {"j0": "finished", "j1": "finished", "j2": "stopped", "j3": "stopped"}


def test_controller_config_overrides_the_policy_hold():
    losses = {f"j{i}": [1.0 + i / 10] * 25 for i in range(3)}
    params = {"warmup_ratio": 0.1, "select_ratio": 1.0, "cuts": 1, "hold_at_gate": True, "tau_gap": math.inf}
    log: list = []
    cfg = ControllerConfig(num_gpus=1, early_exit="alto", early_exit_params=params, inter_task="fifo",
                           hold_at_gate=False)
    sim = Lockstep(Controller(cfg, duration_for=lambda t: 1.0), make_task(3, [1, 2, 4]), losses, None, False)
    orig = sim.apply
    sim.apply = lambda acts: (log.extend(acts), orig(acts))[1]
    sim.run()
    assert not any(isinstance(a, Suspend) for a in log)
    with pytest.raises(ValueError, match="hold_at_gate"):
        ControllerConfig(num_gpus=1, hold_at_gate="yes")  # type: ignore[arg-type]


def test_later_cuts_keep_select_ratio_of_the_survivors_at_each_gate():
    """Three cuts keeping half: 8 -> 4 -> 2 -> 1 live jobs, best (lowest val) kept at each."""
    losses = {f"j{i}": [1.0 + i / 10] * 25 for i in range(8)}
    params = {"warmup_ratio": 0.05, "select_ratio": 0.5, "cuts": 3, "cut_spacing": 2.0, "hold_at_gate": True,
              "tau_gap": math.inf}
    cfg = ControllerConfig(num_gpus=1, early_exit="alto", early_exit_params=params, inter_task="fifo")
    sim = Lockstep(Controller(cfg, duration_for=lambda t: 1.0), make_task(8, [1] * 8), losses, None, True)
    log: list = []
    orig = sim.apply
    sim.apply = lambda acts: (log.extend(acts), orig(acts))[1]
    sim.run()
    cut = [a.job_id for a in log if isinstance(a, Stop) and a.reason == "underperforming"]
    assert cut == ["j4", "j5", "j6", "j7", "j2", "j3", "j1"]
    assert sim.state["j0"] == "finished"
    # gates at evaluations 1, 2, 4 (of 20): a job at 2 samples per eval stopped at those steps
    assert [sim.step[j] for j in ("j7", "j3", "j1")] == [2, 4, 8]
