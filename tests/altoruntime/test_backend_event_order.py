"""The single-process runtime feeds the Controller by the backend contract (altosim/policy/event_order.py):
simultaneous arrivals as one batch, each fused step's events sorted by `order_events` whatever slot
order the trainer holds the jobs in, and a job's later events dropped once the Controller stops it."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.policy.event_order import order_events
from altosim.policy.types import (
    Admit, FinishTask, JobFailed, JobFinished, JobSpec, StartTask, StepReport, Stop, TaskArrived, TaskSpec,
)
from altoruntime.backend import RuntimeBackend


class FakeTrainer:
    """The Trainer calls TaskRunner makes, on no model: slots in admission order, a job whose id is
    in `fail_at` gets a NaN loss at that step of its own (and is then 'failed')."""

    def __init__(self, fail_at: dict[str, int]):
        self.state: dict[str, str] = {}  # job -> active | suspended | failed, in slot (admission) order
        self.trained: dict[str, int] = {}
        self.fail_at = fail_at

    @property
    def active(self) -> list[str]:
        return [j for j, s in self.state.items() if s == "active"]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.state

    def admit(self, job_id: str, **kw) -> None:
        self.state[job_id], self.trained[job_id] = "active", 0

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        self.state[job_id] = "suspended"

    def resume(self, job_id: str) -> None:
        self.state[job_id] = "active"

    def drop(self, job_id: str) -> None:
        del self.state[job_id]

    def status(self, job_id: str) -> str:
        return self.state[job_id]

    def failure(self, job_id: str) -> str:
        return "non-finite loss"

    def has_best(self, job_id: str) -> bool:
        return False

    def snapshot_best(self, job_id: str) -> None:
        pass

    def step(self, batches) -> dict[str, float]:
        out = {}
        for j in self.active:
            self.trained[j] += 1
            if self.fail_at.get(j) == self.trained[j]:
                self.state[j] = "failed"
                out[j] = float("nan")
            else:
                out[j] = 1.0 / self.trained[j]
        return out

    def evaluate_tokens(self, batches) -> dict[str, SimpleNamespace]:
        return {j: SimpleNamespace(loss_sum=float(len(j)), correct=0, tokens=1) for j in batches}


class Data:
    def train_batch(self, job: JobSpec, position: int):
        return (torch.zeros(job.batch_size, 1),), position + 1

    def val_batches(self):
        return [(torch.zeros(1, 1),)]


class RecordingController:
    """Starts each task with its jobs admitted in `admit_order`; on the n-th report it stops the
    jobs `stops[n]` names (its cohort cut); finishes a task once its jobs have all ended."""

    def __init__(self, admit_order: list[int], stops: dict[int, list[int]]):
        self.admit_order, self.stops = admit_order, stops
        self.fed: list = []
        self.live: dict[str, list[str]] = {}
        self.finished: set[str] = set()
        self.reports = 0

    def on_event(self, ev) -> list:
        self.fed.append(ev)
        if isinstance(ev, TaskArrived):
            jobs = [ev.task.jobs[i].job_id for i in self.admit_order]
            self.live[ev.task.task_id] = list(jobs)
            return [StartTask(ev.task.task_id, (0,)), *(Admit(ev.task.task_id, j) for j in jobs)]
        if isinstance(ev, StepReport):
            self.reports += 1
            live = self.live[ev.task_id]
            names = sorted(live)
            gone = [names[i % len(names)] for i in self.stops.get(self.reports, [])] if names else []
            acts = [Stop(ev.task_id, j, "pruned") for j in dict.fromkeys(gone)]
            return self._end(ev.task_id, [a.job_id for a in acts], acts)
        if isinstance(ev, (JobFinished, JobFailed)):
            return self._end(ev.task_id, [ev.job_id], [])
        return []

    def _end(self, task_id: str, jobs: list[str], acts: list) -> list:
        live = self.live[task_id]
        for j in jobs:
            if j in live:
                live.remove(j)
        if not live and task_id not in self.finished:
            self.finished.add(task_id)
            acts.append(FinishTask(task_id, (0,), None, None))
        return acts


def _tasks(batches: list[int]) -> list[TaskSpec]:
    out = []
    for t in ("b", "a"):  # listed out of id order: the arrival batch sorts them
        jobs = tuple(JobSpec(f"{t}/j{i}", t, 1e-3, 2, b) for i, b in enumerate(batches))
        out.append(TaskSpec(t, 0.0, "tiny", "d", 1, jobs, samples_per_job=8, eval_every_samples=4))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([1, 2, 4]), min_size=2, max_size=5).flatmap(
    lambda bs: st.tuples(st.just(bs), st.permutations(range(len(bs))),
                         st.dictionaries(st.integers(1, 30), st.lists(st.integers(0, 4), max_size=2), max_size=6),
                         st.dictionaries(st.integers(0, len(bs) - 1), st.integers(1, 8), max_size=1))))
def test_fed_order_is_order_events_of_each_batch(case):
    batches, admit_order, stops, fail = case
    tasks = _tasks(batches)
    trainers: dict[str, FakeTrainer] = {}

    def make(task, gpus):
        trainers[task.task_id] = FakeTrainer({f"{task.task_id}/j{i}": s for i, s in fail.items()})
        return trainers[task.task_id]

    ctl = RecordingController(list(admit_order), stops)
    clock = itertools.count()
    log = RuntimeBackend(ctl, make, lambda t: Data(), clock=lambda: float(next(clock)), sleep=lambda s: None).run(tasks)
    fed = log.events
    assert fed == ctl.fed
    assert set(log.results) == {"a", "b"}

    arrivals = [e for e in fed if isinstance(e, TaskArrived)]
    assert fed[:2] == arrivals == order_events(arrivals)  # one batch: a then b, one time
    assert [e.more_coming for e in arrivals] == [True, False] and arrivals[0].now == arrivals[1].now

    # each fused step's events (one task, one time) come in the contract's order
    steps = itertools.groupby(fed[2:], key=lambda e: (e.task_id, e.now))
    stopped_at: dict[str, float] = {}
    for (task_id, now), group in steps:
        batch = list(group)
        assert batch == order_events(batch)
        out: set[str] = set()
        for e in batch:
            assert e.job_id not in out  # nothing of a job after the Controller stopped it
            out |= {a.job_id for a in _actions_after(log.trace, e) if isinstance(a, Stop)}
        for j in out:
            stopped_at.setdefault(j, now)

    # nothing else is dropped: each job reports at each of its evaluation steps it trained, and
    # finishes or fails where it did, unless it was stopped in that very batch
    for task in tasks:
        tr = trainers[task.task_id]
        for job in task.jobs:
            j = job.job_id
            got = [e.step for e in fed if isinstance(e, StepReport) and e.job_id == j]
            failed = tr.state.get(j) == "failed" or (j in tr.fail_at and tr.trained.get(j, 0) >= tr.fail_at[j])
            done = tr.trained.get(j, 0) - (1 if failed else 0)
            want = [s for s in range(1, done + 1) if task.is_eval_step(job, s)]
            assert got == want or (got == want[:-1] and j in stopped_at), (j, got, want)
            ends = [type(e) for e in fed if isinstance(e, (JobFinished, JobFailed)) and e.job_id == j]
            if failed:
                assert ends == [JobFailed] or (not ends and j in stopped_at)
            elif done >= task.total_steps(job):
                assert ends == [JobFinished] or (not ends and j in stopped_at)
            else:
                assert not ends


def _actions_after(trace: list, ev) -> list:
    """The actions the Controller took on `ev` (they follow it in the trace, up to the next event)."""
    i = next(k for k, x in enumerate(trace) if x is ev)
    out = []
    for x in trace[i + 1:]:
        if isinstance(x, (TaskArrived, StepReport, JobFinished, JobFailed)):
            break
        out.append(x)
    return out
