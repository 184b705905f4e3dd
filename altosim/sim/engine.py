"""The SimPy backend: a virtual cluster that executes the Controller's actions.

One SimPy process per running task (its executor). An executor advances its whole group to the
next point where something can happen (some job's evaluation or last step) in a single timeout,
so the simulator costs one event per group step *span*, not one per step; step times come from
the cost model and losses are replayed from LossTraces at the job's progress fraction.

Events reach the Controller through the backend contract (`altosim.policy.event_order.feed_batch`):
simultaneous arrivals as one batch, a step's reports, JobFinished and JobFailed as one batch, in
`event_order` (the contract, or the legacy slot order an older `alto run` log was written in). A
replay of a real run adds the runtime's host costs (`RuntimeCosts`) and the failures it logged.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import simpy

from altosim.cost import StepCost
from altosim.policy.controller import Controller
from altosim.policy.event_order import EVENT_ORDER, LEGACY_ORDER, ORDERS, feed_batch
from altosim.policy.types import (
    Action,
    Admit,
    Event,
    FinishTask,
    JobFailed,
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
from altosim.sim.records import Curve, Executor, JobOutcome, JobRun, SimResult, TaskOutcome
from altosim.sim.runtime_costs import RuntimeCosts

LOSS_MEMO_SIZE = 1 << 16  # memoized report queries a Simulator keeps at most (about 20 MB)

__all__ = ["Curve", "Executor", "JobOutcome", "JobRun", "SimResult", "Simulator", "TaskOutcome"]


class Simulator:
    """Replays a workload: arrivals, fused group steps, evaluations, the Controller's actions.

    `event_order`: the order a step's events are fed in (altosim.policy.event_order: the contract,
    or LEGACY_ORDER for an `alto run` log written before it). `costs`: the runtime's host costs
    to charge (a replay of a real run; None: steps only). `failures`: job -> (its step that fails,
    reason), as a real run logged them (JobFailed after that step's reports; the step not counted).
    """

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
        event_order: int = EVENT_ORDER,
        costs: RuntimeCosts | None = None,
        failures: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        if event_order not in ORDERS:
            raise ValueError(f"event_order: unknown {event_order!r}; known: {ORDERS}")
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
        self.event_order, self.costs, self.failures = event_order, costs, dict(failures or {})
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
        self._loss_memo: dict[tuple[int, float, float], tuple[float, float | None, float | None]] = {}
        self._best_val: dict[str, float] = {}
        self._slot: dict[str, int] = {}  # job -> its first admission's rank (the legacy order)
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
        for arrival, group in itertools.groupby(self.tasks, key=lambda t: t.arrival):
            same = list(group)
            if arrival > self.env.now:
                yield self.env.timeout(arrival - self.env.now)
            feed_batch([TaskArrived(self.env.now, t) for t in same], self._deliver, self.event_order)

    def _deliver(self, ev: Event) -> list[Action]:
        self.sim_events += 1
        actions = self.ctl.on_event(ev)
        if self.record_log:
            self.log.append({"event": to_dict(ev), "actions": [to_dict(a) for a in actions]})
        for a in actions:
            self._apply(a)
        return actions

    # ------------------------------------------------------------------ actions
    def _apply(self, a: Action) -> None:
        now = self.env.now
        if isinstance(a, Admit) and not a.resume:
            self._slot.setdefault(a.job_id, len(self._slot))
        if self.costs is not None and self._costs_host_time(a):  # run inline: they hold up the next step
            self.costs.action(self.by_id[a.task_id].model, a)
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

    def _costs_host_time(self, a: Action) -> bool:
        """A Stop frees a slot only for a job in the group (the runtime does nothing for one never
        admitted, finished or suspended, and drops a failed one)."""
        if isinstance(a, Stop):
            ex = self.executors.get(a.task_id)
            return ex is not None and a.job_id in ex.group
        return True

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
        task, costs = ex.task, self.costs
        scale = self.time_scale(task)
        while not ex.done:
            if not ex.group:
                ex.wake = self.env.event()
                yield ex.wake
                continue
            runs = list(ex.group.values())
            fail_at = {r.job.job_id: max(self.failures[r.job.job_id][0], r.step + 1)
                       for r in runs if r.job.job_id in self.failures} if self.failures else {}
            k = min(min(r.every - r.step % r.every, r.total - r.step, fail_at.get(r.job.job_id, r.total) - r.step)
                    for r in runs)
            dt = k * self.cost.step_time(task, [r.job for r in runs]) * scale
            if costs is not None:
                costs.charge("step", dt)
                if costs.before_steps is not None:
                    dt += costs.charge("new_shape", costs.before_steps(task, [r.job for r in runs]) * scale)
                dt += costs.pay_debt(scale)
            yield self.env.timeout(dt)
            self.busy_gpu_s += dt * len(ex.gpus)
            due: list[JobRun] = []
            failing: list[JobRun] = []
            cap = task.samples_per_job
            trained = 0
            for r in runs:
                fails = bool(fail_at) and r.step + k == fail_at.get(r.job.job_id)
                bs = r.job.batch_size
                before = r.step * bs
                r.step += k - fails  # a failed step does not count (altoruntime/task_runner.py)
                after = r.step * bs
                if after > cap:  # the last batch may be partial
                    after, before = cap, min(before, cap)
                trained += after - before
                if fails:
                    failing.append(r)
                elif r.step % r.every == 0 or r.step >= r.total:
                    due.append(r)
            if not task.rigid:  # a rigid task's placeholder step trains nothing
                self.samples += trained
            improved = self._emit(ex, due, failing)
            if costs is not None and due and (not ex.done or costs.overheads is not None):
                # the runtime stamps a step's reports before validating them (and snapshotting the
                # improved ones): the validation delays the next step, not these reports
                ev = 0.0
                if costs.eval_time is not None:
                    ev += costs.charge("validate", costs.eval_time(task, [r.job for r in due]) * scale)
                if costs.overheads is not None and improved:
                    ev += costs.charge("snapshot", improved * costs.overheads.snapshot_s(task.model) * scale)
                if ex.done:  # the task ended with these reports: its host thread still spent the time
                    costs.debt += ev
                    continue
                if ev > 0:
                    yield self.env.timeout(ev)
                self.busy_gpu_s += ev * len(ex.gpus)

    def _emit(self, ex: Executor, due: list[JobRun], failing: list[JobRun]) -> int:
        """The one point where a step's events go out: each due job's StepReport (and JobFinished
        at its last step), each failing job's JobFailed, fed as one batch in `event_order`.
        Returns how many reports improved their job's best validation loss (the runtime
        snapshots each; counted only when host costs are charged, else 0)."""
        task, now = ex.task, self.env.now
        if self.event_order == LEGACY_ORDER:  # the trainer's slots: first admission first
            due = sorted(due, key=lambda r: self._slot[r.job.job_id])
            failing = sorted(failing, key=lambda r: self._slot[r.job.job_id])
        events: list[Event] = []
        improved = 0
        for r in due:
            rep = self._report(task, r)
            events.append(rep)
            if self.costs is not None:
                v = rep.val_loss
                improved += v is not None and math.isfinite(v) and v < self._best_val.get(r.job.job_id, math.inf)
            if r.step >= r.total:
                events.append(JobFinished(now, task.task_id, r.job.job_id))
        events += [JobFailed(now, task.task_id, r.job.job_id, self.failures[r.job.job_id][1]) for r in failing]
        if events:
            feed_batch(events, lambda e: self._step_event(ex, e), self.event_order)
        return improved

    def _step_event(self, ex: Executor, ev: Event) -> list[Action]:
        """One event of a step to the Controller, after its bookkeeping (a report's best value; a
        finished job leaves the group; a failed one is parked, as the trainer drops it)."""
        job_id = getattr(ev, "job_id")
        if isinstance(ev, StepReport):
            v = ev.val_loss
            if v is not None and math.isfinite(v) and v < self._best_val.get(job_id, math.inf):
                self._best_val[job_id] = float(v)
        elif isinstance(ev, JobFinished):
            r = ex.group.pop(job_id, None)
            if r is None:  # (feed_batch drops the JobFinished of a job taken out earlier)
                return []
            if self.costs is not None:  # the runtime frees its slot as a stop does
                self.costs.job_finished(ex.task.model)
            self._job_end(ex, job_id, r, "finished", False)
        elif job_id in ex.group:  # JobFailed: the trainer drops it from the group at once
            ex.parked[job_id] = ex.group.pop(job_id)
        return self._deliver(ev)

    def _report(self, task: TaskSpec, r: JobRun) -> StepReport:
        f = min(1.0, r.step / r.total)
        train, val, metric = self._losses(self._curve(r.job), r.reported_frac, f)
        r.reported_frac = f
        return StepReport(self.env.now, task.task_id, r.job.job_id, r.step,
                          min(r.step * r.job.batch_size, task.samples_per_job), train, val, metric)

    def _losses(self, curve: Curve, f0: float, f1: float) -> tuple[float, float | None, float | None]:
        """A report's (mean train loss over f0..f1, val at f1, finite metric at f1), memoized:
        curve queries are pure, and the jobs of a workload share few curves and eval grids, so
        most reports repeat an earlier query (the bench's 10,000 jobs: 2,831 distinct queries for
        256,756 reports). Keyed by the curve's id; `_curve_cache` keeps every curve alive, so no
        id is reused within a run. Emptied when full: a replay whose jobs share no curve and
        budget (each query new) keeps memory bounded."""
        key = (id(curve), f0, f1)
        hit = self._loss_memo.get(key)
        if hit is None:
            if len(self._loss_memo) >= LOSS_MEMO_SIZE:
                self._loss_memo.clear()
            train, val, metric = curve.train_mean(f0, f1), curve.val_at(f1), curve.metric_at(f1)
            if metric is not None and not math.isfinite(metric):
                metric = None
            hit = self._loss_memo[key] = (float(train), None if val is None else float(val),
                                          None if metric is None else float(metric))
        return hit
