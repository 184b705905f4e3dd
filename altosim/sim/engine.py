"""The SimPy backend: a virtual cluster that executes the Controller's actions.

One SimPy process per running task (its executor). An executor advances its whole group to the
next point where something can happen (some job's evaluation or last step) in a single timeout,
so the simulator costs one event per group step *span*, not one per step; step times come from
the cost model and losses are replayed from LossTraces at the job's progress fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import simpy

from altosim.cost import StepCost
from altosim.policy.controller import Controller
from altosim.policy.types import (
    Action,
    Admit,
    Event,
    FinishTask,
    JobFinished,
    JobSpec,
    StartTask,
    Stop,
    StepReport,
    Suspend,
    TaskArrived,
    TasksAnnounced,
    TaskSpec,
    to_dict,
)


class Curve(Protocol):
    """What the simulator reads from a LossTrace curve (progress fraction f in [0, 1])."""

    def train_mean(self, f0: float, f1: float) -> float: ...
    def val_at(self, f: float) -> float: ...
    def metric_at(self, f: float) -> float | None: ...


@dataclass
class JobRun:
    """A job's place in its executor: steps done and where its last report left off."""

    job: JobSpec
    total: int
    every: int
    step: int = 0
    reported_frac: float = 0.0


@dataclass
class JobOutcome:
    task_id: str
    job_id: str
    status: str  # finished | stopped reason
    steps: int
    samples: int
    end: float
    best_val: float | None
    restore_best: bool = False


@dataclass
class TaskOutcome:
    task_id: str
    arrival: float
    gpus: int
    start: float | None = None
    finish: float | None = None
    gpu_ids: tuple[int, ...] = ()
    best_job: str | None = None
    best_val: float | None = None
    best_found_at: float | None = None


@dataclass
class Executor:
    task: TaskSpec
    gpus: tuple[int, ...]
    group: dict[str, JobRun] = field(default_factory=dict)
    parked: dict[str, JobRun] = field(default_factory=dict)
    done: bool = False
    wake: simpy.Event | None = None
    jobs: dict[str, JobSpec] = field(init=False)  # the task's jobs by id (TaskSpec.job scans them)

    def __post_init__(self) -> None:
        self.jobs = {j.job_id: j for j in self.task.jobs}


@dataclass
class SimResult:
    tasks: dict[str, TaskOutcome]
    jobs: dict[str, JobOutcome]
    log: list[dict[str, Any]]
    busy_gpu_s: float
    samples_trained: int
    samples_full: int
    num_gpus: int
    makespan: float
    sim_events: int
    gantt: list[tuple[str, int, float, float]]  # (task, gpu, start, end)
    plans: list[dict[str, Any]]


class Simulator:
    """Replays a workload: arrivals, fused group steps, evaluations, the Controller's actions."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        controller: Controller,
        cost: StepCost,
        curves: Callable[[JobSpec], Curve],
        *,
        time_scale: Callable[[TaskSpec], float] = lambda task: 1.0,
        record_log: bool = True,
        sparse_reports: bool = False,
        on_progress: Callable[[int], None] | None = None,
        announce: bool = False,
    ) -> None:
        self.env = simpy.Environment()
        self.tasks = sorted(tasks, key=lambda t: (t.arrival, t.task_id))
        self.by_id = {t.task_id: t for t in self.tasks}
        self.ctl = controller
        self.cost = cost
        self.curves = curves
        self.time_scale = time_scale
        self.record_log = record_log
        # True: when the early-exit policy reads no intermediate reports, report a job only at its
        # last step (its result is then its final val loss); for replaying huge traces fast
        self.sparse_reports = sparse_reports
        self.on_progress = on_progress
        self.announce = announce  # tell the Controller every task ahead (TasksAnnounced at t=0)
        self.log: list[dict[str, Any]] = []
        self.executors: dict[str, Executor] = {}
        self.owner: dict[int, str] = {}
        self.task_out = {t.task_id: TaskOutcome(t.task_id, t.arrival, t.gpus) for t in self.tasks}
        self.job_out: dict[str, JobOutcome] = {}
        self.busy_gpu_s = 0.0
        self.samples = 0
        self.gantt: list[tuple[str, int, float, float]] = []
        self.sim_events = 0
        self._curve_cache: dict[str, Curve] = {}
        self._best_val: dict[str, float] = {}
        self._finished = 0

    # ------------------------------------------------------------------ driver
    def run(self) -> SimResult:
        self.env.process(self._arrivals())
        self.env.run()
        unfinished = [t for t, o in self.task_out.items() if o.finish is None]
        if unfinished:
            raise RuntimeError(f"simulation ended with unfinished tasks: {unfinished[:5]}")
        makespan = max((o.finish or 0.0) for o in self.task_out.values()) if self.task_out else 0.0
        return SimResult(
            tasks=self.task_out, jobs=self.job_out, log=self.log, busy_gpu_s=self.busy_gpu_s,
            samples_trained=self.samples,
            samples_full=sum(t.samples_per_job * len(t.jobs) for t in self.tasks if not t.rigid),
            num_gpus=self.ctl.cfg.num_gpus, makespan=makespan, sim_events=self.sim_events,
            gantt=self.gantt, plans=list(self.ctl.plans),
        )

    def _arrivals(self):
        if self.announce:
            self._deliver(TasksAnnounced(self.env.now, tuple(self.tasks)))
        for i, task in enumerate(self.tasks):
            if task.arrival > self.env.now:
                yield self.env.timeout(task.arrival - self.env.now)
            nxt = self.tasks[i + 1].arrival if i + 1 < len(self.tasks) else None
            self._deliver(TaskArrived(self.env.now, task, more_coming=nxt == task.arrival))

    def _deliver(self, ev: Event) -> None:
        self.sim_events += 1
        actions = self.ctl.on_event(ev)
        if self.record_log:
            self.log.append({"event": to_dict(ev), "actions": [to_dict(a) for a in actions]})
        for a in actions:
            self._apply(a)

    # ------------------------------------------------------------------ actions
    def _apply(self, a: Action) -> None:
        now = self.env.now
        if isinstance(a, StartTask):
            for g in a.gpus:
                if g in self.owner:
                    raise RuntimeError(f"GPU {g} double-booked: {self.owner[g]} and {a.task_id}")
                self.owner[g] = a.task_id
            ex = Executor(self.by_id[a.task_id], a.gpus)
            self.executors[a.task_id] = ex
            out = self.task_out[a.task_id]
            out.start, out.gpu_ids = now, a.gpus
            self.env.process(self._execute(ex))
        elif isinstance(a, Admit):
            ex = self.executors[a.task_id]
            if a.job_id in self.job_out:
                raise RuntimeError(f"job {a.job_id} admitted after it ended")
            if a.resume:
                run = ex.parked.pop(a.job_id)
            else:
                job = ex.jobs[a.job_id]
                total = ex.task.total_steps(job)
                sparse = self.sparse_reports and not self.ctl.needs_reports
                run = JobRun(job, total, total if sparse else ex.task.eval_every_steps(job))
            ex.group[a.job_id] = run
            self._wake(ex)
        elif isinstance(a, Suspend):
            ex = self.executors[a.task_id]
            ex.parked[a.job_id] = ex.group.pop(a.job_id)
        elif isinstance(a, Stop):
            ex = self.executors[a.task_id]
            run = ex.group.pop(a.job_id, None) or ex.parked.pop(a.job_id, None)
            self._job_end(ex, a.job_id, run, a.reason, a.restore_best)
        elif isinstance(a, FinishTask):
            ex = self.executors.pop(a.task_id)
            ex.done = True
            self._wake(ex)
            for g in a.gpus:
                del self.owner[g]
                self.gantt.append((a.task_id, g, self.task_out[a.task_id].start or 0.0, now))
            out = self.task_out[a.task_id]
            out.finish, out.best_job, out.best_val = now, a.best_job, a.best_val_loss
            self._finished += 1
            if self.on_progress:
                self.on_progress(self._finished)

    def _job_end(self, ex: Executor, job_id: str, run: JobRun | None, status: str, restore: bool) -> None:
        steps = run.step if run else 0
        job = ex.jobs[job_id]
        self.job_out[job_id] = JobOutcome(
            ex.task.task_id, job_id, status, steps, min(steps * job.batch_size, ex.task.samples_per_job), self.env.now,
            self._best_val.get(job_id), restore,
        )

    def _wake(self, ex: Executor) -> None:
        if ex.wake is not None and not ex.wake.triggered:
            ex.wake.succeed()

    # ------------------------------------------------------------------ executor
    def _curve(self, job: JobSpec) -> Curve:
        c = self._curve_cache.get(job.job_id)
        if c is None:
            c = self._curve_cache[job.job_id] = self.curves(job)
        return c

    def _execute(self, ex: Executor):
        task = ex.task
        scale = self.time_scale(task)
        while not ex.done:
            if not ex.group:
                ex.wake = self.env.event()
                yield ex.wake
                continue
            runs = list(ex.group.values())
            k = task.samples_per_job + 1  # more steps than any job has
            for r in runs:  # steps to the next point where some job reports
                k = min(k, r.every - r.step % r.every, r.total - r.step)
            dt = k * self.cost.step_time(task, [r.job for r in runs]) * scale
            yield self.env.timeout(dt)
            self.busy_gpu_s += dt * len(ex.gpus)
            due: list[JobRun] = []
            cap = task.samples_per_job
            trained = 0
            for r in runs:
                bs = r.job.batch_size
                before = r.step * bs
                r.step += k
                after = r.step * bs
                if after > cap:  # the last batch may be partial
                    after = cap
                    before = min(before, cap)
                trained += after - before
                if r.step % r.every == 0 or r.step >= r.total:
                    due.append(r)
            if not task.rigid:  # a rigid task's placeholder step trains nothing
                self.samples += trained
            if len(due) > 1:
                due.sort(key=lambda r: r.job.job_id)
            for r in due:
                if ex.group.get(r.job.job_id) is not r:
                    continue  # stopped or suspended by an earlier report at this instant
                self._report(task, r)
                if r.step >= r.total and ex.group.get(r.job.job_id) is r:
                    ex.group.pop(r.job.job_id)
                    self._job_end(ex, r.job.job_id, r, "finished", False)
                    self._deliver(JobFinished(self.env.now, task.task_id, r.job.job_id))

    def _report(self, task: TaskSpec, r: JobRun) -> None:
        curve = self._curve_cache.get(r.job.job_id)
        if curve is None:
            curve = self._curve(r.job)
        f = min(1.0, r.step / r.total)
        train = curve.train_mean(r.reported_frac, f)
        val = curve.val_at(f)
        metric = curve.metric_at(f)
        r.reported_frac = f
        if val is not None and math.isfinite(val) and val < self._best_val.get(r.job.job_id, math.inf):
            self._best_val[r.job.job_id] = float(val)
        if metric is not None and not math.isfinite(metric):
            metric = None
        self._deliver(
            StepReport(
                self.env.now, task.task_id, r.job.job_id, r.step, min(r.step * r.job.batch_size, task.samples_per_job),
                float(train), None if val is None else float(val), None if metric is None else float(metric),
            )
        )
