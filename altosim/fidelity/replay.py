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
from dataclasses import dataclass, replace
from typing import Any, Callable

from altosim.errors import InputError
from altosim.fidelity.runlog import ReportedCurve, RunFolder, decisions, failure_steps, flat_curve, job_curves
from altosim.policy.types import Admit, JobFailed, JobFinished, JobSpec, TaskArrived, TaskSpec
from altosim.schemas import RunConfig
from altosim.sim.engine import Simulator
from altosim.simulate import runtime_controller  # noqa: F401  (re-exported: the same Controller as alto run)


class RuntimeOrderSimulator(Simulator):
    """The SimPy backend speaking the runtime's protocol (runtime/backend.py): tasks arrive one
    event each, a fused step's reports go out in first-admission order (the trainer's slot order),
    every report of the step is sent even when an earlier one stopped that job, and a job fails
    (JobFailed after the step's reports) at the step the run logged (`failures`). With
    `eval_time`, the validation behind a step's reports takes simulated time too (after the
    reports, which the runtime stamps with the time the step ended). With `before_steps`, each run
    of steps first takes the time it returns (a task's startup, autotuning at a new shape)."""

    def __init__(self, *args: Any, eval_time: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
                 failures: dict[str, tuple[int, str]] | None = None,
                 before_steps: Callable[[TaskSpec, list[JobSpec]], float] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.before_steps = before_steps
        self._order: dict[str, int] = {}
        self.eval_time = eval_time
        self.failures = failures or {}  # job -> (its step that fails, reason), as the run logged

    def _arrivals(self):
        for task in self.tasks:
            if task.arrival > self.env.now:
                yield self.env.timeout(task.arrival - self.env.now)
            self._deliver(TaskArrived(self.env.now, task))

    def _apply(self, a: Any) -> None:
        if isinstance(a, Admit) and not a.resume:
            self._order.setdefault(a.job_id, len(self._order))
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
            dt = k * self.cost.step_time(task, [r.job for r in runs]) * scale
            if self.before_steps is not None:
                dt += self.before_steps(task, [r.job for r in runs]) * scale
            yield self.env.timeout(dt)
            self.busy_gpu_s += dt * len(ex.gpus)
            cap = task.samples_per_job
            due, failing = [], []
            for r in runs:
                fails = r.step + k == fail_at.get(r.job.job_id)
                before = min(r.step * r.job.batch_size, cap)
                r.step += k - fails  # a failed step does not count (runtime/backend.py)
                self.samples += min(r.step * r.job.batch_size, cap) - before
                if fails:
                    failing.append(r)
                elif r.step % r.every == 0 or r.step >= r.total:
                    due.append(r)
            for r in sorted(due, key=lambda r: self._order[r.job.job_id]):
                self._report(task, r)
                if r.step >= r.total and ex.group.get(r.job.job_id) is r:
                    ex.group.pop(r.job.job_id)
                    self._job_end(ex, r.job.job_id, r, "finished", False)
                    self._deliver(JobFinished(self.env.now, task.task_id, r.job.job_id))
            for r in sorted(failing, key=lambda r: self._order[r.job.job_id]):
                if ex.group.get(r.job.job_id) is r:  # the trainer drops it from the group at once
                    ex.parked[r.job.job_id] = ex.group.pop(r.job.job_id)
                self._deliver(JobFailed(self.env.now, task.task_id, r.job.job_id, self.failures[r.job.job_id][1]))
            if due and self.eval_time is not None and not ex.done:
                # the runtime stamps a step's reports before validating them: the validation
                # delays the next step, not these reports
                ev = self.eval_time(task, [r.job for r in due]) * scale
                yield self.env.timeout(ev)
                self.busy_gpu_s += ev * len(ex.gpus)


@dataclass(frozen=True)
class ValidationCost:
    """Seconds of the runtime's validation of `jobs` (runtime/backend.py `_validate`): `val_rows`
    examples in batches of `val_batch`, jobs fused `eval_rows // val_batch` per forward; a
    forward is estimated as a third of a training step of the same rows (2NT of 6NT FLOPs)."""

    cost: Any
    val_rows: int
    val_batch: int = 16
    eval_rows: int = 256

    def __call__(self, task: TaskSpec, jobs: list[JobSpec]) -> float:
        b = min(self.val_batch, self.val_rows)
        batches = math.ceil(self.val_rows / b)
        per_call = max(1, self.eval_rows // b)
        t = 0.0
        for i in range(0, len(jobs), per_call):
            chunk = [replace(j, batch_size=b) for j in jobs[i:i + per_call]]
            t += batches * self.cost.step_time(task, chunk) / 3
        return t




def replay_run(run: RunFolder, cfg: RunConfig | None, cost: Any,
               eval_time: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
               before_steps: Callable[[TaskSpec, list[JobSpec]], float] | None = None) -> list[dict[str, Any]]:
    """The run replayed in the simulator with step costs `cost` (and validation costs
    `eval_time`, other time before a run of steps `before_steps`; runtime logs only); returns
    the flat trace."""
    if run.protocol == "sim":
        from altosim.replay import controller_from_meta

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

    kw = {"eval_time": eval_time, "failures": failure_steps(run), "before_steps": before_steps} if sim_cls is RuntimeOrderSimulator else {}
    res = sim_cls(tasks, ctl, cost, curve, **kw).run()
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
