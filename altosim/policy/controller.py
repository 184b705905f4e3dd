"""The Controller: events in, actions out, for the simulator and the GPU runtime alike.

It composes the three policies of the design: early exit (per task, on every StepReport), the
intra-task scheduler (which jobs share a task's group, backfill on exits) and the inter-task
scheduler (which waiting task starts on which GPUs, planned on arrivals and completions, a kept plan backfilled in between).
It is deterministic given its events: `alto replay` feeds an event log back through a fresh
Controller and must get the same actions.

The per-task part (job states, histories, warm-up rotation, hold at gate, the early-exit cuts,
backfill, the task's result) is a `TaskGroup` (`task_group.py`) per started task; the Controller
routes each event to its task's group, owns the GPUs and the queue, and re-plans between tasks.

Plans use predicted durations (`predict.py`): what the early-exit policy's cuts are expected to
keep, from each running task's own progress and cuts, calibrated by finished tasks, with their
spread so that the planner keeps uncertain long tasks off the end. The last full plan is kept
(`inter/incremental.py`): exactly while tasks end as planned, and as an order to backfill freed
GPUs from (EASY backfilling on predicted ends) once early exit or a wrong prediction moved its
times, until a share of the queue's worth of such changes calls for a full re-plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from altosim.policy.early_exit import build_early_exit
from altosim.policy import inter as _inter  # noqa: F401  (registers the inter-task schedulers)
from altosim.policy.inter import RunningTask, WaitingTask
from altosim.policy.inter.incremental import PlanCache
from altosim.policy.registry import INTER_TASK
from altosim.policy.memory import MemoryModel
from altosim.policy.predict import Calibration, expected_budgets, prior_fraction
from altosim.policy.task_group import TaskGroup
from altosim.policy.types import (
    Action,
    Event,
    FinishTask,
    JobFailed,
    JobFinished,
    StartTask,
    Stop,
    StepReport,
    TaskArrived,
    TasksAnnounced,
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
    plan_with_observed: bool = True  # plan with durations predicted from early exit's cuts, calibrated by finished tasks
    # re-plan after a cut when GPUs are free and the task's predicted end moved by more than
    # this share of the time it had left in the last plan
    replan_shift: float = 0.2
    # keep the last plan while nothing material changed (inter/incremental.py): a full re-plan
    # once this share of the queue (at least 8) in arrivals and off-plan ends has come since
    # the last one; in between, freed GPUs are backfilled in plan order
    resolve_share: float = 0.1
    # hold a job at its warm-up gate (Suspend) while others still warm up; None: the early-exit
    # policy decides (`policy.holds_at_gate()`, e.g. alto's `hold_at_gate` parameter)
    hold_at_gate: bool | None = None

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ValueError(f"num_gpus must be >= 1, got {self.num_gpus}")
        if not 0 <= self.replan_shift < math.inf:
            raise ValueError(f"replan_shift must be >= 0, got {self.replan_shift!r}")
        if not 0 <= self.resolve_share <= 1:
            raise ValueError(f"resolve_share must be in [0, 1], got {self.resolve_share!r}")
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
        # what early exit keeps: the cuts' rungs and keep share (or the policy's flat prior)
        self._rungs, self._keep = probe.rungs(), probe.keep_share()
        self._flat_prior = probe.expected_work_fraction()
        self._priors: dict[str, float] = {}  # task -> expected share of its samples trained
        self._calib = Calibration()
        self._planned_end: dict[str, float] = {}  # running task -> its end as the last plan predicted
        self._cache = PlanCache(config.resolve_share)
        self.waiting: dict[str, TaskSpec] = {}
        self.running: dict[str, TaskGroup] = {}
        self.done: dict[str, FinishTask] = {}
        self.free: set[int] = set(range(config.num_gpus))
        self._durations: dict[str, float] = {}
        self._waiting_gpus = 0  # GPUs the queue asks for in all
        self.plans: list[dict[str, Any]] = []  # one record per inter-task re-plan (for reports)
        self.future: dict[str, TaskSpec] = {}  # announced, not arrived yet (TasksAnnounced; offline studies)

    # ------------------------------------------------------------------ events
    def on_event(self, ev: Event) -> list[Action]:
        if isinstance(ev, StepReport):  # most events
            return self._on_report(ev)
        if isinstance(ev, TaskArrived):
            return self._on_arrival(ev)
        if isinstance(ev, (JobFinished, JobFailed)):
            return self._on_job_end(ev)
        if isinstance(ev, Tick):
            return self._replan(ev.now)
        if isinstance(ev, TasksAnnounced):
            return self._on_announced(ev)
        raise ValueError(f"unknown event {ev!r}")

    def _on_arrival(self, ev: TaskArrived) -> list[Action]:
        t = ev.task
        if t.task_id in self.waiting or t.task_id in self.running or t.task_id in self.done:
            raise ValueError(f"task {t.task_id!r} arrived twice")
        if t.gpus > self.cfg.num_gpus:
            raise ValueError(f"task {t.task_id!r} needs {t.gpus} GPUs, cluster has {self.cfg.num_gpus}")
        self.future.pop(t.task_id, None)
        self.waiting[t.task_id] = t
        self._waiting_gpus += t.gpus
        self._durations[t.task_id] = float(self.duration_for(t))
        cuts = bool(self._rungs) and self._keep < 1
        self._priors[t.task_id] = prior_fraction(self._rungs, self._keep, len(t.jobs)) if cuts else self._flat_prior
        if t.rigid:  # a fixed-duration job: early exit never shortens it
            self._priors[t.task_id] = 1.0
        self._cache.arrived(ev.now, WaitingTask(t.task_id, t.gpus, self._predicted(t), t.arrival))
        return [] if ev.more_coming else self._replan(ev.now)

    def _on_announced(self, ev: TasksAnnounced) -> list[Action]:
        """Remember tasks still to arrive; a scheduler that plans releases plans them from now on."""
        if not self.inter.plans_releases:
            return []
        cuts = bool(self._rungs) and self._keep < 1
        for t in ev.tasks:
            if t.task_id in self.waiting or t.task_id in self.running or t.task_id in self.done:
                continue
            self.future[t.task_id] = t
            self._durations[t.task_id] = float(self.duration_for(t))
            prior = prior_fraction(self._rungs, self._keep, len(t.jobs)) if cuts else self._flat_prior
            self._priors[t.task_id] = 1.0 if t.rigid else prior
        return self._replan(ev.now)

    def _plan_offline(self, now: float) -> list[Action]:
        """A plan of the waiting and the announced tasks (releases at their arrivals); start what it starts now."""
        running = [RunningTask(t, g.gpus, self._remaining(g, now)) for t, g in sorted(self.running.items())]
        waiting = [WaitingTask(t.task_id, t.gpus, self._predicted(t), t.arrival) for t in self.waiting.values()]
        future = [WaitingTask(t.task_id, t.gpus, self._predicted(t), t.arrival) for t in self.future.values()]
        plan = self.inter.plan_with_releases(now, self.cfg.num_gpus, running, waiting, future)
        self.plans.append(
            {"now": now, "waiting": len(waiting), "status": plan.status, "solve_s": plan.solve_s,
             "makespan": plan.makespan, "lower_bound": plan.lower_bound, "gap": plan.gap}
        )
        self._cache.invalidate()  # the online plan cache knows nothing of this plan
        return self._start_ids([a.task_id for a in plan.starts_now(now)], now)

    def _on_report(self, ev: StepReport) -> list[Action]:
        group = self.running.get(ev.task_id)
        return [] if group is None else self._after(group, group.on_report(ev), ev.now)

    def _on_job_end(self, ev: JobFinished | JobFailed) -> list[Action]:
        group = self.running.get(ev.task_id)
        return [] if group is None else self._after(group, group.on_job_end(ev), ev.now)

    def _after(self, group: TaskGroup, acts: list[Action], now: float) -> list[Action]:
        """A group's actions; once its last job ended (it said FinishTask): its GPUs freed, re-plan."""
        if group.result is None:
            if not acts:  # most reports
                return acts
            cut = any(isinstance(a, Stop) and a.reason == "underperforming" for a in acts)
            if cut and self.waiting and self.free and self._moved(group, now):
                # a cut moved the task's predicted end: GPUs may free sooner (backfill with it)
                self._cache.moved(group.task.task_id, now + self._remaining(group, now))
                return acts + self._replan(now)
            return acts
        tid = group.task.task_id
        if not group.task.rigid:  # rigid tasks say nothing about what early exit keeps
            self._calib.add(now - group.started, self._durations[tid] * self._priors[tid])
        self._planned_end.pop(tid, None)
        self._cache.finished(now, tid)
        del self.running[group.task.task_id]
        self.done[group.task.task_id] = group.result
        self.free.update(group.gpus)
        return acts + self._replan(now)

    def _moved(self, group: TaskGroup, now: float) -> bool:
        """The task's predicted end moved materially since the last plan (or none saw it)."""
        old = self._planned_end.get(group.task.task_id)
        if old is None:
            return True
        return abs(now + self._remaining(group, now) - old) > self.cfg.replan_shift * max(old - now, 0.0)

    # ------------------------------------------------------------------ inter-task
    def _replan(self, now: float) -> list[Action]:
        if not self.waiting:
            return []
        if self.future:  # known arrivals (offline study): plan them with release times
            return self._plan_offline(now)
        if self._waiting_gpus <= len(self.free):
            # everything waiting fits now: every planner (FIFO, SJF, a left-shifted optimum)
            # starts it all at once, so skip the planner call
            return self._start_ids(list(self.waiting), now)
        quick = self.inter.starts_now(
            len(self.free), (WaitingTask(t.task_id, t.gpus, self._durations[t.task_id], t.arrival)
                             for t in self.waiting.values()))
        if quick is not None:  # the scheduler knows what starts now without a full plan
            return self._start_ids(quick, now)
        exact = self._cache.exact
        due = self._cache.next_starts(now, len(self.free))
        if due is not None:  # the kept plan still holds (its times, or its order): start what it says
            acts = self._start_ids(due, now)
            late = [t for t in due if t in self.waiting]
            if late and exact:  # a planned start found its GPUs busy: wait for simultaneous ends, else backfill
                self._cache.postpone(now, late, list(self.running))
                if not self._cache.exact:
                    return acts + self._replan(now)
            elif late:  # cannot happen (backfilling counts free GPUs); never leave a task unplanned
                self._cache.invalidate()
                return acts + self._replan(now)
            return acts
        running = [RunningTask(t, g.gpus, self._remaining(g, now)) for t, g in sorted(self.running.items())]
        self._planned_end.update((r.task_id, now + r.remaining) for r in running)
        spread = self._calib.spread if self.cfg.plan_with_observed and self._flat_prior < 1 else 0.0
        waiting = [WaitingTask(t.task_id, t.gpus, self._predicted(t), t.arrival, 0.0 if t.rigid else spread)
                   for t in self.waiting.values()]
        plan = self.inter.plan(now, self.cfg.num_gpus, running, waiting)
        self.plans.append(
            {"now": now, "waiting": len(waiting), "status": plan.status, "solve_s": plan.solve_s,
             "makespan": plan.makespan, "lower_bound": plan.lower_bound, "gap": plan.gap}
        )
        self._cache.keep(plan, now, self.cfg.num_gpus, running, waiting)
        due = self._cache.due(now) or []
        acts = self._start_ids(due, now)
        late = [t for t in due if t in self.waiting]
        if late:  # GPUs of a task ending at this instant, whose end is not delivered yet: keep them due
            self._cache.postpone(now, late, list(self.running))
        return acts

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

    def _predicted(self, task: TaskSpec) -> float:
        """A waiting task's expected duration: its worst case times the share of samples its
        early-exit policy is expected to keep, calibrated by finished tasks (at most the worst
        case). Planning with the worst case under early exit packs for durations that never
        happen."""
        worst = self._durations[task.task_id]
        if not self.cfg.plan_with_observed or task.rigid:
            return worst
        return min(worst, worst * self._priors[task.task_id] * self._calib.factor)

    def _remaining(self, group: TaskGroup, now: float) -> float:
        """A running task's expected time left: the per-job budgets its live jobs are expected
        to still train (predict.expected_budgets, from its cuts so far and how far each job
        got), calibrated like `_predicted`; at most what the worst case leaves (exactly that
        without early exit)."""
        task = group.task
        worst = self._durations[task.task_id]
        left = max(0.0, group.started + worst - now)
        if task.rigid or (self._flat_prior >= 1 and not (self._rungs and self._keep < 1)):
            return left  # no early exit (or a rigid task): the worst case is what the task takes
        progress = group.live_progress()
        if self._rungs and self._keep < 1:
            budgets = expected_budgets(self._rungs, self._keep, group.cuts_done, progress)
        else:
            budgets = sum(1.0 - p for p in progress)
        calib = self._calib.factor if self.cfg.plan_with_observed else 1.0
        return min(left, worst * budgets / max(len(task.jobs), 1) * calib)

    def _start(self, task: TaskSpec, now: float) -> list[Action]:
        """Start a task just popped from the queue on the lowest free GPU ids."""
        self._waiting_gpus -= task.gpus
        self._cache.started(task.task_id, now)
        gpus = tuple(sorted(self.free)[: task.gpus])
        self.free.difference_update(gpus)
        exit_name, exit_params = ("none", {}) if task.rigid else (self.cfg.early_exit, dict(self.cfg.early_exit_params))
        group = TaskGroup(task, gpus, now, build_early_exit(exit_name, exit_params),
                          memory=self.memory_for(task),
                          max_jobs=self.cfg.max_jobs_per_group if self.cfg.batching else 1,
                          hold_at_gate=self.cfg.hold_at_gate)
        self.running[task.task_id] = group
        acts: list[Action] = [StartTask(task.task_id, gpus)]
        return self._after(group, acts + group.start(), now)
