"""The single-process runtime engine: executes Controller actions with real trainers in one loop.

The same loop shape as the simulator: events go to `controller.on_event`, the returned actions
are executed at once (a task's start builds its `TaskRunner`; the runner carries out the rest),
then every running task takes one fused step in turn (altoruntime/task_runner.py says what a step
reports). Events follow the backend contract (`altosim.policy.event_order.feed_batch`): the
arrivals due at once are one batch, and so are the events of one fused step, fed in the
contract's order with the later events of a job the Controller takes out mid-batch dropped. The
Ray engine (altoruntime/cluster/) steps the same runners concurrently, one per actor. Time is the
wall clock relative to the run start (injectable, so tests can fix it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from altosim.policy.event_order import EVENT_ORDER, feed_batch
from altosim.policy.types import (
    Action, Event, FinishTask, JobFailed, JobFinished, StartTask, StepReport, Stop, TaskArrived, TaskSpec, Tick,
)
from altoruntime.checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from altoruntime.protocol import Trainer
from altoruntime.runlog import ACTION_PHASES, PHASES, RunLog  # noqa: F401 (re-exported)
from altoruntime.task_data import SplitData, TaskData  # noqa: F401 (SplitData re-exported)
from altoruntime.task_runner import Finished, TaskRunner


_EVENTS = (TaskArrived, StepReport, JobFinished, JobFailed, Tick)


class Policy(Protocol):
    def on_event(self, event: Event) -> list[Action]: ...


class RuntimeBackend:
    """Drives `controller` over `tasks` on real trainers made by `make_trainer(task, gpus)`."""

    def __init__(
        self,
        controller: Policy,
        make_trainer: Callable[[TaskSpec, tuple[int, ...]], Trainer],
        data_for: Callable[[TaskSpec], TaskData],
        out_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Callable[[str, dict[str, float]], None] | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 50,
        eval_rows: int = 256,
        checkpoint_extra: dict[str, Any] | None = None,
        base_models: dict[str, str] | None = None,
        on_samples: Callable[[int, int], None] | None = None,
        save_adapters: str = "best",
    ) -> None:
        """base_models: task id -> the backbone's path or hub id, written into exported adapters."""
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: must be >= 1 loop iterations, got {checkpoint_every}")
        self.ctl, self.make_trainer, self.data_for = controller, make_trainer, data_for
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.clock, self.sleep, self.on_step = clock, sleep, on_step
        self.tasks: dict[str, TaskRunner] = {}
        self.specs: dict[str, TaskSpec] = {}
        self.log = RunLog()
        self._t0 = 0.0
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = checkpoint_every
        self.eval_rows = eval_rows
        self.checkpoint_extra = dict(checkpoint_extra or {})  # saved with each checkpoint (the run's key)
        self.base_models = dict(base_models or {})
        if save_adapters not in ("best", "survivors"):
            raise ValueError(f"save_adapters: best or survivors, got {save_adapters!r}")
        # progress in samples: (trained, budget left to train); a stop takes the job's rest off the budget
        self.on_samples, self.save_adapters = on_samples, save_adapters
        self.samples_done, self.samples_total = 0, 0

    def now(self) -> float:
        return self.clock() - self._t0

    # ------------------------------------------------------------------ the loop
    def run(self, tasks: Iterable[TaskSpec]) -> RunLog:
        pending = sorted(tasks, key=lambda t: (t.arrival, t.task_id))
        self.specs = {t.task_id: t for t in pending}
        self.samples_total = sum(t.samples_per_job * len(t.jobs) for t in pending)
        self._t0 = self.clock()
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            arrived = self._restore(self.checkpoint_path)
            pending = [t for t in pending if t.task_id not in arrived]
        iteration = 0
        while pending or self.tasks:
            iteration += 1
            if self.checkpoint_path is not None and iteration % self.checkpoint_every == 0:
                self._save(self.checkpoint_path)
            due = []
            while pending and pending[0].arrival <= self.now():
                due.append(TaskArrived(0.0, pending.pop(0)))
            if due:
                feed_batch(due, self._send, EVENT_ORDER, now=self.now())
            stepping = [tr for tr in self.tasks.values() if tr.active]
            for tr in stepping:
                events: list[Event] = []
                self.samples_done += tr.step(self.now, events.append, self.on_step)
                if self.on_samples is not None:
                    self.on_samples(self.samples_done, self.samples_total)
                t0 = time.perf_counter()
                feed_batch(events, self._send, EVENT_ORDER)  # (one step: one time already)
                self.log.add_phase("policy", t0)  # the Controller's decisions, less their actions
            if stepping:
                continue
            if pending:  # idle until the next arrival
                self.sleep(max(0.0, pending[0].arrival - self.now()))
            elif self.tasks:  # started tasks with nothing to run: let the policy re-plan
                before = len(self.log.actions)
                self._send(Tick(self.now()))
                if len(self.log.actions) == before and not any(t.active for t in self.tasks.values()):
                    raise RuntimeError(f"controller left tasks {sorted(self.tasks)} with no job to run")
        return self.log

    # ------------------------------------------------------------------ checkpoint / resume
    def _save(self, path: Path) -> None:
        """Trainers, job progress, the event/action trace and the clock, in one atomic file."""
        tasks = {tid: {"gpus": tr.gpus, "jobs": tr.progress()}
                 for tid, tr in self.tasks.items()}
        extra = {**self.checkpoint_extra, "now": self.now(), "trace": list(self.log.trace), "tasks": tasks,
                 "results": dict(self.log.results), "exported": dict(self.log.exported)}
        save_checkpoint(path, {tid: tr.trainer for tid, tr in self.tasks.items()}, extra)

    def _restore(self, path: Path) -> set[str]:
        """Rebuild the run from a checkpoint; the controller (fresh) gets the logged events
        replayed and must take the logged actions again (it is deterministic). Returns the ids
        of the tasks that had arrived."""
        payload = read_checkpoint(path)
        extra = payload["extra"]
        replayed: list[Event | Action] = []
        for item in extra["trace"]:
            if isinstance(item, _EVENTS):
                replayed.append(item)
                replayed.extend(self.ctl.on_event(item))
        if replayed != extra["trace"]:
            raise RuntimeError("checkpoint: the controller's replayed actions differ from the logged ones")
        self.log.trace = list(extra["trace"])
        self.log.events = [e for e in self.log.trace if isinstance(e, _EVENTS)]
        self.log.actions = [a for a in self.log.trace if not isinstance(a, _EVENTS)]
        self.log.results, self.log.exported = dict(extra["results"]), dict(extra["exported"])
        for tid, t in extra["tasks"].items():
            task = self.specs[tid]
            tr = self._runner(task, tuple(t["gpus"]))
            tr.load_progress(t["jobs"])
            self.tasks[tid] = tr
        apply_checkpoint(payload, {tid: tr.trainer for tid, tr in self.tasks.items()})
        # progress resumes where it was: samples trained (running jobs' own counts, else their last
        # report), and each stopped job's rest off the budget
        seen: dict[str, int] = {}
        for item in self.log.trace:
            if isinstance(item, StepReport):
                seen[item.job_id] = item.samples
            elif isinstance(item, Stop):
                self.samples_total -= max(0, self.specs[item.task_id].samples_per_job - seen.get(item.job_id, 0))
        seen.update({j: r.samples for tr in self.tasks.values() for j, r in tr.jobs.items()})
        self.samples_done = sum(seen.values())
        self._t0 = self.clock() - extra["now"]
        return {e.task.task_id for e in self.log.events if isinstance(e, TaskArrived)}

    def _send(self, event: Event) -> list[Action]:
        """One event to the Controller (a JobFinished frees the job's slot first); its actions
        logged after it and carried out; returns them."""
        if isinstance(event, JobFinished) and event.task_id in self.tasks:
            self.tasks[event.task_id].finish(event.job_id)
        self.log.events.append(event)
        self.log.trace.append(event)
        actions = self.ctl.on_event(event)
        for runner in self.tasks.values():  # what comes next, ahead (each runner keeps its own)
            runner.expect(actions)
        for i, action in enumerate(actions):
            self.log.actions.append(action)
            self.log.trace.append(action)
            self._execute(action)
            if isinstance(action, StartTask):  # a runner made by this batch hears the rest of it
                self.tasks[action.task_id].expect(actions[i + 1:])
        return actions

    # ------------------------------------------------------------------ actions
    def _execute(self, a: Action) -> None:
        if not isinstance(a, StartTask):
            runner = self.tasks[a.task_id]
            cut = runner.budget_cut
            result = runner.apply(a)  # timed under its kind by the runner
            self.samples_total -= runner.budget_cut - cut
            if isinstance(a, FinishTask):
                record_finish(self.log, a, result)
                del self.tasks[a.task_id]
            return
        t0 = time.perf_counter()
        try:
            self.tasks[a.task_id] = self._runner(self.specs[a.task_id], a.gpus)
        finally:
            self.log.add_action(a.kind, t0)

    def _runner(self, task: TaskSpec, gpus: tuple[int, ...]) -> TaskRunner:
        return TaskRunner(task, gpus, self.make_trainer(task, gpus), self.data_for(task), self.log,
                          out_dir=self.out_dir, eval_rows=self.eval_rows, base_model=self.base_models.get(task.task_id),
                          save_adapters=self.save_adapters)


def record_finish(log: RunLog, a: FinishTask, result: Finished | None) -> None:
    """A task's FinishTask and what carrying it out produced, into the run's log (both engines)."""
    if result is not None:
        if result.exported is not None:
            log.exported[a.task_id] = result.exported
        if result.metric is not None:
            log.metrics[a.task_id] = result.metric
        if result.scores is not None:
            log.job_metrics[a.task_id] = result.scores
            log.objectives[a.task_id], log.minimize[a.task_id] = result.objective or "", result.minimize
    log.results[a.task_id] = a
