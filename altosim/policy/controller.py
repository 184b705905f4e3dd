"""The Controller: events in, actions out, for the simulator and the GPU runtime alike.

It composes the three policies of the design: early exit (per task, on every StepReport), the
intra-task scheduler (which jobs share a task's group, backfill on exits) and the inter-task
scheduler (which waiting task starts on which GPUs, re-planned on every arrival and completion).
It is deterministic given its events: `alto replay` feeds an event log back through a fresh
Controller and must get the same actions.

The per-task part (job states, histories, warm-up rotation, hold at gate, the early-exit cuts,
backfill, the task's result) is a `TaskGroup` (`task_group.py`) per started task; the Controller
routes each event to its task's group, owns the GPUs and the queue, and re-plans between tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from altosim.policy.early_exit import build_early_exit
from altosim.policy import inter as _inter  # noqa: F401  (registers the inter-task schedulers)
from altosim.policy.inter import RunningTask, WaitingTask
from altosim.policy.registry import INTER_TASK
from altosim.policy.memory import MemoryModel
from altosim.policy.task_group import TaskGroup
from altosim.policy.types import (
    Action,
    Event,
    FinishTask,
    JobFailed,
    JobFinished,
    StartTask,
    StepReport,
    TaskArrived,
    TaskSpec,
    Tick,
)


@dataclass(frozen=True)
class ControllerConfig:
    """What a run's config decides about policy (built from RunConfig.policy)."""

    num_gpus: int
    early_exit: str = "alto"
    early_exit_params: dict[str, Any] = field(default_factory=dict)
    inter_task: str = "cpsat"
    inter_task_params: dict[str, Any] = field(default_factory=dict)
    batching: bool = True  # False: one job at a time per task (sequential training)
    max_jobs_per_group: int | None = None
    plan_with_observed: bool = True  # plan waiting tasks with the duration shrink seen so far
    # hold a job at its warm-up gate (Suspend) while others still warm up; None: the early-exit
    # policy decides (`policy.holds_at_gate()`, e.g. alto's `hold_at_gate` parameter)
    hold_at_gate: bool | None = None

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ValueError(f"num_gpus must be >= 1, got {self.num_gpus}")
        if self.hold_at_gate is not None and not isinstance(self.hold_at_gate, bool):
            raise ValueError(f"hold_at_gate must be true, false or null, got {self.hold_at_gate!r}")


class Controller:
    """Deterministic policy core. `on_event(event) -> list[Action]`.

    `duration_for(task)` gives a task's worst-case duration (no early exit) on its GPUs, for the
    inter-task planner; `memory_for(task)` its memory model (None = no memory limit). Both must
    be pure functions of the task so that replays reproduce decisions.
    """

    def __init__(
        self,
        config: ControllerConfig,
        duration_for: Callable[[TaskSpec], float],
        memory_for: Callable[[TaskSpec], MemoryModel | None] = lambda task: None,
    ) -> None:
        self.cfg = config
        self.duration_for = duration_for
        self.memory_for = memory_for
        self.inter = INTER_TASK.build(config.inter_task, **dict(config.inter_task_params))
        probe = build_early_exit(config.early_exit, dict(config.early_exit_params))  # fail fast on bad names
        self.needs_reports = probe.reads_reports  # False: backends may report only a job's last step
        self._prior_shrink = probe.expected_work_fraction()
        self.waiting: dict[str, TaskSpec] = {}
        self.running: dict[str, TaskGroup] = {}
        self.done: dict[str, FinishTask] = {}
        self.free: set[int] = set(range(config.num_gpus))
        self._durations: dict[str, float] = {}
        self._shrinks: list[float] = []
        self._waiting_gpus = 0  # GPUs the queue asks for in all
        self.plans: list[dict[str, Any]] = []  # one record per inter-task re-plan (for reports)

    # ------------------------------------------------------------------ events
    def on_event(self, ev: Event) -> list[Action]:
        if isinstance(ev, TaskArrived):
            return self._on_arrival(ev)
        if isinstance(ev, StepReport):
            return self._on_report(ev)
        if isinstance(ev, (JobFinished, JobFailed)):
            return self._on_job_end(ev)
        if isinstance(ev, Tick):
            return self._replan(ev.now)
        raise ValueError(f"unknown event {ev!r}")

    def _on_arrival(self, ev: TaskArrived) -> list[Action]:
        t = ev.task
        if t.task_id in self.waiting or t.task_id in self.running or t.task_id in self.done:
            raise ValueError(f"task {t.task_id!r} arrived twice")
        if t.gpus > self.cfg.num_gpus:
            raise ValueError(f"task {t.task_id!r} needs {t.gpus} GPUs, cluster has {self.cfg.num_gpus}")
        self.waiting[t.task_id] = t
        self._waiting_gpus += t.gpus
        self._durations[t.task_id] = float(self.duration_for(t))
        return [] if ev.more_coming else self._replan(ev.now)

    def _on_report(self, ev: StepReport) -> list[Action]:
        group = self.running.get(ev.task_id)
        return [] if group is None else self._after(group, group.on_report(ev), ev.now)

    def _on_job_end(self, ev: JobFinished | JobFailed) -> list[Action]:
        group = self.running.get(ev.task_id)
        return [] if group is None else self._after(group, group.on_job_end(ev), ev.now)

    def _after(self, group: TaskGroup, acts: list[Action], now: float) -> list[Action]:
        """A group's actions; once its last job ended (it said FinishTask): its GPUs freed, re-plan."""
        if group.result is None:
            return acts
        worst = self._durations[group.task.task_id]
        if worst > 0:
            self._shrinks.append(min(1.0, (now - group.started) / worst))
        del self.running[group.task.task_id]
        self.done[group.task.task_id] = group.result
        self.free.update(group.gpus)
        return acts + self._replan(now)

    # ------------------------------------------------------------------ inter-task
    def _replan(self, now: float) -> list[Action]:
        if not self.waiting:
            return []
        if self._waiting_gpus <= len(self.free):
            # everything waiting fits now: every planner (FIFO, SJF, a left-shifted optimum)
            # starts it all at once, so skip the planner call
            return self._start_ids(list(self.waiting), now)
        quick = self.inter.starts_now(
            len(self.free), (WaitingTask(t.task_id, t.gpus, self._durations[t.task_id], t.arrival)
                             for t in self.waiting.values()))
        if quick is not None:  # the scheduler knows what starts now without a full plan
            return self._start_ids(quick, now)
        running = [RunningTask(t, g.gpus, self._remaining(g, now)) for t, g in sorted(self.running.items())]
        shrink = self._observed_shrink()
        waiting = [
            WaitingTask(t.task_id, t.gpus, self._durations[t.task_id] * shrink, t.arrival)
            for t in self.waiting.values()
        ]
        plan = self.inter.plan(now, self.cfg.num_gpus, running, waiting)
        self.plans.append(
            {"now": now, "waiting": len(waiting), "status": plan.status, "solve_s": plan.solve_s,
             "makespan": plan.makespan, "lower_bound": plan.lower_bound, "gap": plan.gap}
        )
        due = [a.task_id for a in sorted(plan.assignments, key=lambda a: (a.start, a.task_id)) if a.start <= now + 1e-6]
        return self._start_ids(due, now)

    def _start_ids(self, task_ids: list[str], now: float) -> list[Action]:
        """Start these waiting tasks in order while their GPUs are free (a task that finished at
        once inside `_start` may already have re-planned and started some of them)."""
        acts: list[Action] = []
        for task_id in task_ids:
            task = self.waiting.get(task_id)
            if task is not None and task.gpus <= len(self.free):
                del self.waiting[task_id]
                acts += self._start(task, now)
        return acts

    def _observed_shrink(self) -> float:
        """Mean (actual / worst-case) duration of finished tasks; the policy's prior before any.

        With early exit, tasks end far before their worst case; planning waiting tasks with
        the shrink seen so far makes the makespan plan fit what will really happen.
        """
        if not self.cfg.plan_with_observed:
            return 1.0
        if not self._shrinks:
            return self._prior_shrink
        return sum(self._shrinks) / len(self._shrinks)

    def _remaining(self, group: TaskGroup, now: float) -> float:
        """Expected time left: the worst case, shrunk to the samples its live jobs still owe.

        Early exit makes tasks end well before their worst case; planning with what is left
        of the survivors (rather than the paper's worst case for running tasks) lets the
        inter-task plan use GPUs that are about to be freed.
        """
        task = group.task
        worst = max(0.0, group.started + self._durations[task.task_id] - now)
        total = task.samples_per_job * len(task.jobs)
        return min(worst, self._durations[task.task_id] * group.samples_owed() / max(total, 1))

    def _start(self, task: TaskSpec, now: float) -> list[Action]:
        """Start a task just popped from the queue on the lowest free GPU ids."""
        self._waiting_gpus -= task.gpus
        gpus = tuple(sorted(self.free)[: task.gpus])
        self.free.difference_update(gpus)
        group = TaskGroup(task, gpus, now, build_early_exit(self.cfg.early_exit, dict(self.cfg.early_exit_params)),
                          memory=self.memory_for(task),
                          max_jobs=self.cfg.max_jobs_per_group if self.cfg.batching else 1,
                          hold_at_gate=self.cfg.hold_at_gate)
        self.running[task.task_id] = group
        acts: list[Action] = [StartTask(task.task_id, gpus)]
        return self._after(group, acts + group.start(), now)
