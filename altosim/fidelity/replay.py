"""The run replayed in the SimPy backend, and its decisions compared with the run's.

The replay mirrors the runtime's event protocol where it differs from the simulator's (tasks
arrive one event each, a fused step's reports go out in admission order, and every report of
the step is sent even when an earlier one stopped that job), so that a difference in decisions
is a difference in what the policy saw, not in bookkeeping. A log written by `alto simulate` is
replayed with the simulator's own protocol and the Controller its header describes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from altosim.build import runtime_controller
from altosim.cost import HostOverheads, StepCost
from altosim.errors import InputError
from altosim.fidelity.runlog import ReportedCurve, RunFolder, decisions, failure_steps, flat_curve, job_curves
from altosim.policy.types import Admit, JobFailed, JobFinished, JobSpec, Stop, TaskArrived, TaskSpec
from altosim.replay import controller_from_meta
from altosim.schemas import RunConfig
from altosim.sim.engine import Simulator


class RuntimeOrderSimulator(Simulator):
    """The SimPy backend speaking the runtime's protocol (altoruntime/backend.py): tasks arrive one
    event each, a fused step's reports go out in first-admission order (the trainer's slot order),
    every report of the step is sent even when an earlier one stopped that job, and a job fails
    (JobFailed after the step's reports) at the step the run logged (`failures`). With
    `eval_time`, the validation behind a step's reports takes simulated time too (after the
    reports, which the runtime stamps with the time the step ended). With `before_steps`, each run
    of steps first takes the time it returns (a task's startup, autotuning at a new shape)."""

    def __init__(self, *args: Any, eval_time: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
                 failures: dict[str, tuple[int, str]] | None = None,
                 before_steps: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
                 overheads: HostOverheads | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.before_steps = before_steps
        self._order: dict[str, int] = {}
        self.eval_time = eval_time
        self.failures = failures or {}  # job -> (its step that fails, reason), as the run logged
        self.overheads = overheads
        # simulated seconds charged, by what they stand for (the run's summary.csv phases)
        self.charged: dict[str, float] = {}
        self._host_debt = 0.0  # action seconds not yet charged: the runtime is one host thread

    def _costs_host_time(self, a: Any) -> bool:
        """A Stop frees a slot only for a job in the group (the runtime does nothing for one never
        admitted, finished or suspended, and drops a failed one)."""
        if isinstance(a, Stop):
            ex = self.executors.get(a.task_id)
            return ex is not None and a.job_id in ex.group
        return True

    def _charge(self, what: str, seconds: float) -> float:
        self.charged[what] = self.charged.get(what, 0.0) + seconds
        return seconds

    def _arrivals(self):
        for task in self.tasks:
            if task.arrival > self.env.now:
                yield self.env.timeout(task.arrival - self.env.now)
            self._deliver(TaskArrived(self.env.now, task))

    def _apply(self, a: Any) -> None:
        if isinstance(a, Admit) and not a.resume:
            self._order.setdefault(a.job_id, len(self._order))
        if self.overheads is not None and self._costs_host_time(a):  # run inline: they hold up the next step
            self._host_debt += self._charge(a.kind, self.overheads.action_s(self.by_id[a.task_id].model, a))
        super()._apply(a)

    def _execute(self, ex):  # the engine's loop with the runtime's report order
        task = ex.task
        scale = self.time_scale(task)
        while not ex.done:
            if not ex.group:
                ex.wake = self.env.event()
                yield ex.wake
                continue
            runs = list(ex.group.values())
            fail_at = {r.job.job_id: max(self.failures[r.job.job_id][0], r.step + 1)
                       for r in runs if r.job.job_id in self.failures}
            k = min(min(r.every - r.step % r.every, r.total - r.step,
                        fail_at.get(r.job.job_id, r.total) - r.step) for r in runs)
            dt = self._charge("step", k * self.cost.step_time(task, [r.job for r in runs]) * scale)
            if self.before_steps is not None:
                dt += self._charge("new_shape", self.before_steps(task, [r.job for r in runs]) * scale)
            dt, self._host_debt = dt + self._host_debt * scale, 0.0
            yield self.env.timeout(dt)
            self.busy_gpu_s += dt * len(ex.gpus)
            cap = task.samples_per_job
            due, failing = [], []
            for r in runs:
                fails = r.step + k == fail_at.get(r.job.job_id)
                before = min(r.step * r.job.batch_size, cap)
                r.step += k - fails  # a failed step does not count (altoruntime/backend.py)
                self.samples += min(r.step * r.job.batch_size, cap) - before
                if fails:
                    failing.append(r)
                elif r.step % r.every == 0 or r.step >= r.total:
                    due.append(r)
            improved = 0
            for r in sorted(due, key=lambda r: self._order[r.job.job_id]):
                best = self._best_val.get(r.job.job_id)
                self._report(task, r)
                improved += self._best_val.get(r.job.job_id) != best  # the runtime snapshots it
                if r.step >= r.total and ex.group.get(r.job.job_id) is r:
                    ex.group.pop(r.job.job_id)
                    if self.overheads is not None:  # the runtime frees its slot as a stop does
                        self._host_debt += self._charge("job_finished", self.overheads.stop_s(task.model))
                    self._job_end(ex, r.job.job_id, r, "finished", False)
                    self._deliver(JobFinished(self.env.now, task.task_id, r.job.job_id))
            for r in sorted(failing, key=lambda r: self._order[r.job.job_id]):
                if ex.group.get(r.job.job_id) is r:  # the trainer drops it from the group at once
                    ex.parked[r.job.job_id] = ex.group.pop(r.job.job_id)
                self._deliver(JobFailed(self.env.now, task.task_id, r.job.job_id, self.failures[r.job.job_id][1]))
            if due and (not ex.done or self.overheads is not None):
                # the runtime stamps a step's reports before validating them (and snapshotting the
                # improved ones): the validation delays the next step, not these reports
                ev = 0.0
                if self.eval_time is not None:
                    ev += self._charge("validate", self.eval_time(task, [r.job for r in due]) * scale)
                if self.overheads is not None and improved:
                    ev += self._charge("snapshot", improved * self.overheads.snapshot_s(task.model) * scale)
                if ex.done:  # the task ended with these reports: its host thread still spent the time
                    self._host_debt += ev
                    continue
                if ev > 0:
                    yield self.env.timeout(ev)
                self.busy_gpu_s += ev * len(ex.gpus)


def replay_run(run: RunFolder, cfg: RunConfig | None, cost: StepCost,
               eval_time: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
               before_steps: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
               overheads: HostOverheads | None = None,
               charged: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The run replayed in the simulator with step costs `cost` (and validation costs
    `eval_time`, other time before a run of steps `before_steps`, the actions' host time
    `overheads`; runtime logs only); returns the flat trace. `charged`, when given, receives the
    simulated seconds by what they stand for (step, validate, new_shape, snapshot, action kinds)."""
    if run.protocol == "sim":
        if "controller" not in run.meta:
            raise InputError(str(run.folder / "events.jsonl"), "meta.controller",
                             "missing (needed to rebuild the policy)", 1)
        ctl, sim_cls = controller_from_meta(run.meta), Simulator
    else:
        if cfg is None:
            raise InputError(str(run.folder), "--config",
                             "needed to replay an `alto run` log (or put config.json in the run folder)")
        ctl, sim_cls = runtime_controller(cfg), RuntimeOrderSimulator
    tasks = run.tasks
    curves = job_curves(run)
    total = {j.job_id: t.total_steps(j) for t in tasks for j in t.jobs}
    cache: dict[str, Any] = {}

    def curve(job: JobSpec) -> Any:
        if job.job_id not in cache:
            c = curves.get(job.job_id)
            cache[job.job_id] = ReportedCurve(c, total[job.job_id]) if c is not None else flat_curve(job)
        return cache[job.job_id]

    kw = {"eval_time": eval_time, "failures": failure_steps(run), "before_steps": before_steps,
          "overheads": overheads} if sim_cls is RuntimeOrderSimulator else {}
    sim = sim_cls(tasks, ctl, cost, curve, **kw)
    res = sim.run()
    if charged is not None:
        charged.update(getattr(sim, "charged", {}))
    return [x for rec in res.log for x in (rec["event"], *rec["actions"])]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@dataclass
class DecisionDiff:
    real: int
    sim: int
    identical: int  # positions where both took the same decision
    first: int | None  # index of the first difference (None: identical sequences)
    real_at: dict[str, Any] | None
    sim_at: dict[str, Any] | None


def compare_decisions(real: list[dict[str, Any]], sim: list[dict[str, Any]]) -> DecisionDiff:
    """The two runs' actions, one by one in order."""
    a, b = decisions(real), decisions(json.loads(json.dumps(sim)))
    same = [_same(x, y) for x, y in zip(a, b)]
    first = next((i for i, s in enumerate(same) if not s), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    pick = lambda xs: xs[first] if first is not None and first < len(xs) else None  # noqa: E731
    return DecisionDiff(len(a), len(b), sum(same), first, pick(a), pick(b))
