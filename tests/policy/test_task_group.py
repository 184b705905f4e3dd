"""A TaskGroup driven on its own, without a Controller, by a tiny lockstep backend.

The backend advances every running job one step per tick, reports at the task's eval steps
(random losses, NaN now and then), fails a job now and then, sends JobFinished at a job's last
step, and executes the group's actions. Properties (hypothesis): every job ends stopped or
finished, FinishTask comes once, last, and names the lowest best-val loss among the jobs that
count; the group's view of each job matches the backend's; and one task alone on a Controller
gets exactly the group's actions (after its StartTask).
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.early_exit import build_early_exit
from altosim.policy.memory import MemoryModel
from altosim.policy.task_group import TaskGroup
from altosim.policy.types import (
    Admit, FinishTask, JobFailed, JobFinished, JobSpec, StartTask, StepReport, Stop, Suspend, TaskArrived, TaskSpec,
)

SEQ = 512


def make_task(bs: list[int], samples: int = 40) -> TaskSpec:
    jobs = tuple(JobSpec(f"j{i}", "t", lr=1e-4, rank=8, batch_size=b) for i, b in enumerate(bs))
    return TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=samples, eval_every_samples=2, seq_len=SEQ)


def memory(fit_batch: int | None) -> MemoryModel | None:
    """A model under which groups of up to `fit_batch` summed batch fit (None: no limit)."""
    return None if fit_batch is None else MemoryModel(k0=0.0, k1=1.0, capacity=fit_batch * SEQ + 1.0, margin=0.0)


class Backend:
    """Runs one task's jobs in lockstep on whatever `handle(event) -> actions` decides."""

    def __init__(self, task: TaskSpec, losses: dict[str, list[float]], fail_at: dict[str, int]) -> None:
        self.task, self.losses, self.fail_at = task, losses, fail_at
        self.state = {j.job_id: "pending" for j in task.jobs}
        self.step = {j.job_id: 0 for j in task.jobs}
        self.vals: dict[str, list[float]] = {j.job_id: [] for j in task.jobs}
        self.log: list = []

    def apply(self, acts: list) -> None:
        for a in acts:
            assert not any(isinstance(b, FinishTask) for b in self.log), f"{a} after FinishTask"
            self.log.append(a)
            if isinstance(a, Admit):
                assert self.state[a.job_id] in ("pending", "suspended") and a.resume == (self.state[a.job_id] == "suspended")
                self.state[a.job_id] = "running"
            elif isinstance(a, Suspend):
                assert self.state[a.job_id] == "running"
                self.state[a.job_id] = "suspended"
            elif isinstance(a, Stop):
                assert self.state[a.job_id] not in ("stopped", "finished")
                self.state[a.job_id] = "stopped"

    def run(self, handle, first: list) -> list:
        self.apply(first)
        for tick in range(1, 10_000):
            if any(isinstance(a, FinishTask) for a in self.log):
                return self.log
            for job in self.task.jobs:
                jid = job.job_id
                if self.state[jid] != "running":
                    continue
                self.step[jid] += 1
                s = self.step[jid]
                if s == self.fail_at.get(jid):
                    self.apply(handle(JobFailed(float(tick), "t", jid, "nan")))
                    assert self.state[jid] == "stopped"
                    continue
                if self.task.is_eval_step(job, s):
                    k = math.ceil(s / self.task.eval_every_steps(job)) - 1
                    v = self.losses[jid][min(k, len(self.losses[jid]) - 1)]
                    self.vals[jid].append(v)
                    samples = min(s * job.batch_size, self.task.samples_per_job)
                    self.apply(handle(StepReport(float(tick), "t", jid, s, samples, v, v)))
                if s >= self.task.total_steps(job) and self.state[jid] == "running":
                    self.state[jid] = "finished"
                    self.apply(handle(JobFinished(float(tick), "t", jid)))
        raise AssertionError("the task never finished")


POLICIES = st.one_of(
    st.tuples(st.just("alto"), st.fixed_dictionaries({
        "warmup_ratio": st.sampled_from([0.05, 0.1, 0.3]), "select_ratio": st.sampled_from([0.3, 0.5, 1.0]),
        "cuts": st.integers(1, 3), "cut_spacing": st.sampled_from([2.0, 3.0]),
        "hold_at_gate": st.booleans()})),
    st.tuples(st.sampled_from(["asha", "median", "none"]), st.just({})),
)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    bs = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=n, max_size=n))
    losses = {f"j{i}": draw(st.lists(st.one_of(st.floats(0.1, 3.0), st.just(math.nan)), min_size=25, max_size=25))
              for i in range(n)}
    fail_at = draw(st.dictionaries(st.sampled_from(sorted(losses)), st.integers(1, 40), max_size=2))
    name, params = draw(POLICIES)
    return dict(bs=bs, losses=losses, fail_at=fail_at, name=name, params=params,
                cap=draw(st.one_of(st.none(), st.integers(1, 4))), fit=draw(st.one_of(st.none(), st.integers(0, 10))),
                hold=draw(st.one_of(st.none(), st.booleans())))


def drive_group(sc, group_class: type[TaskGroup] = TaskGroup) -> tuple[TaskGroup, Backend]:
    task = make_task(sc["bs"])
    group = group_class(task, (0,), 0.0, build_early_exit(sc["name"], sc["params"]), memory=memory(sc["fit"]),
                        max_jobs=sc["cap"], hold_at_gate=sc["hold"])
    backend = Backend(task, sc["losses"], sc["fail_at"])

    def handle(ev):
        return group.on_job_end(ev) if isinstance(ev, (JobFinished, JobFailed)) else group.on_report(ev)

    backend.run(handle, group.start())
    return group, backend


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_a_group_alone_ends_every_job_and_names_the_best_that_counts(sc):
    group, backend = drive_group(sc)
    fins = [a for a in backend.log if isinstance(a, FinishTask)]
    assert len(fins) == 1 and backend.log[-1] is fins[0] is group.result and fins[0].gpus == (0,)
    assert set(backend.state.values()) <= {"stopped", "finished"}
    for jid, s in backend.state.items():
        assert group.state(jid) == s
        assert list(map(repr, group.history(jid).val)) == list(map(repr, backend.vals[jid]))
    stops = {a.job_id: a for a in backend.log if isinstance(a, Stop)}
    counts = {jid for jid in backend.state
              if stops.get(jid) is None
              or (stops[jid].reason not in ("failed", "no_fit")
                  and not (stops[jid].reason == "diverging" and not stops[jid].restore_best))}
    best = {jid: min((v for v in group.history(jid).val if math.isfinite(v)), default=math.inf) for jid in counts}
    low = min(best.values(), default=math.inf)
    if low == math.inf:
        assert fins[0].best_job is None and fins[0].best_val_loss is None
    else:
        assert fins[0].best_val_loss == low and best[fins[0].best_job] == low
        assert fins[0].best_job == min(j for j in best if best[j] == low)  # ties: first in task order
    if sc["fit"] == 0:  # nothing fits even alone: every job stopped at start
        assert [(type(a), getattr(a, "reason", None)) for a in backend.log[:-1]] == [(Stop, "no_fit")] * len(sc["bs"])
    assert group.samples_owed() == 0


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_a_controller_with_one_task_gives_the_group_s_actions(sc):
    _, alone = drive_group(sc)
    cfg = ControllerConfig(num_gpus=1, early_exit=sc["name"], early_exit_params=sc["params"], inter_task="fifo",
                           max_jobs_per_group=sc["cap"], hold_at_gate=sc["hold"])
    ctl = Controller(cfg, duration_for=lambda t: 1.0, memory_for=lambda t: memory(sc["fit"]))
    task = make_task(sc["bs"])
    first = ctl.on_event(TaskArrived(0.0, task))
    assert first[0] == StartTask("t", (0,))
    routed = Backend(task, sc["losses"], sc["fail_at"]).run(ctl.on_event, first[1:])
    assert routed == alone.log
    assert not ctl.running and ctl.done["t"] == alone.log[-1] and ctl.free == {0}


def test_late_events_of_an_ended_job_change_nothing():
    task = make_task([1, 1])
    group = TaskGroup(task, (0,), 0.0, build_early_exit("none"))
    assert group.start() == [Admit("t", "j0"), Admit("t", "j1")]
    assert group.on_job_end(JobFailed(1.0, "t", "j0", "oom")) == [Stop("t", "j0", "failed")]
    assert group.on_report(StepReport(2.0, "t", "j0", 2, 2, 1.0, 1.0)) == []
    assert group.on_job_end(JobFinished(2.0, "t", "j0")) == []
    assert group.history("j0").steps == [] and group.state("j0") == "stopped"
    assert group.result is None and group.samples_owed() == 40
    assert group.on_report(StepReport(40.0, "t", "j1", 40, 40, 0.5, 0.5)) == []
    assert group.on_job_end(JobFinished(40.0, "t", "j1")) == [FinishTask("t", (0,), "j1", 0.5)]
    assert group.result == FinishTask("t", (0,), "j1", 0.5)


def test_a_job_held_at_a_gate_is_not_left_waiting_when_the_rest_fit_nowhere():
    """j0 (batch 1) is suspended at its gate so that j1 can warm up, but j1 (batch 2) does not
    fit even alone: j1 stops (no_fit) and the cut comes at once, resuming j0 (before, the group
    waited for a report no running job could send)."""
    task = make_task([1, 2])
    group = TaskGroup(task, (0,), 0.0, build_early_exit("alto", {"warmup_ratio": 0.1, "hold_at_gate": False}),
                      memory=memory(1))
    assert group.start() == [Admit("t", "j0")]
    assert group.on_report(StepReport(2.0, "t", "j0", 2, 2, 1.0, 1.0)) == []
    assert group.on_report(StepReport(4.0, "t", "j0", 4, 4, 1.0, 1.0)) == [
        Suspend("t", "j0"), Stop("t", "j1", "no_fit"), Admit("t", "j0", resume=True)]
    assert group.cuts_done == 1 and group.state("j0") == "running"


class ScanningGroup(TaskGroup):
    """The TaskGroup as it was before it kept counts: who is live, and whether some live job
    has yet to reach its gate, found by scanning every job's state at each question."""

    def _live(self) -> int:
        return sum(s in ("pending", "running", "suspended") for s in self._state.values())

    def _warming(self) -> bool:
        return any(s in ("pending", "running", "suspended") and j not in self._warmed for j, s in self._state.items())

    def _set(self, job_id: str, state: str) -> None:
        super()._set(job_id, state)
        assert self._count == {k: sum(s == k for s in self._state.values()) for k in self._count}


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_counts_kept_per_event_give_the_decisions_of_a_full_scan(sc):
    """The counts that spare the replay's hot path a scan of the task's jobs per report decide
    exactly what scanning decides (same actions in the same order)."""
    _, counted = drive_group(sc)
    _, scanned = drive_group(sc, ScanningGroup)
    assert counted.log == scanned.log
