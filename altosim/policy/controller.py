"""The Controller: events in, actions out, for the simulator and the GPU runtime alike.

It composes the three policies of the design: early exit (per task, on every StepReport), the
intra-task scheduler (which jobs share a task's group, backfill on exits) and the inter-task
scheduler (which waiting task starts on which GPUs, re-planned on every arrival and completion).
It is deterministic given its events: `alto replay` feeds an event log back through a fresh
Controller and must get the same actions.

Warm-up with rotation (our reading of the paper, which leaves it open): a job that reaches the end
of its warm-up while never-started jobs of its task still wait is *suspended* (state kept, slot
freed) so every config gets warmed up; once every job has warmed up or exited, the early-exit
policy's cohort cut keeps the best and the suspended survivors are resumed as slots allow.
With hold at gate (`ControllerConfig.hold_at_gate`, else the policy's `holds_at_gate()`: alto's
default) a job that reaches its gate is suspended too while any other job still warms up, so
the cut compares jobs at equal samples and no sample is trained past a gate before its cut.
A policy may make several cuts (its `rungs`, budget fractions; a job's gate is its first
evaluation at or past the rung): after each, the next gates are set and the same wait-hold-cut
repeats with the survivors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from altosim.policy.early_exit import EarlyExitPolicy, build_early_exit
from altosim.policy.early_exit.base import gate_step
from altosim.policy import inter as _inter  # noqa: F401  (registers the inter-task schedulers)
from altosim.policy.inter import RunningTask, WaitingTask
from altosim.policy.registry import INTER_TASK
from altosim.policy.intra import pick_admissions
from altosim.policy.memory import MemoryModel
from altosim.policy.types import (
    Action,
    Admit,
    Event,
    FinishTask,
    JobFailed,
    JobFinished,
    JobHistory,
    JobSpec,
    StartTask,
    Stop,
    StepReport,
    Suspend,
    TaskArrived,
    TaskSpec,
    Tick,
)

_NO_RESULT = ("failed", "no_fit")  # such jobs never count as a task's result
# nor does a job stopped as diverging without keeping its best snapshot (the paper's rule); one
# that keeps it (`restore_best`) competes with that snapshot's val loss
JobState = Literal["pending", "running", "suspended", "stopped", "finished"]


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


@dataclass
class TaskState:
    """A started task: its GPUs, early-exit policy, job states and histories."""

    task: TaskSpec
    gpus: tuple[int, ...]
    started: float
    policy: EarlyExitPolicy
    memory: MemoryModel | None
    state: dict[str, JobState]
    hist: dict[str, JobHistory]
    warmed: set[str] = field(default_factory=set)  # reached the gate of the next cut (or finished)
    cuts_done: int = 0
    n_cuts: int = 1
    gate: dict[str, int | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    discarded: set[str] = field(default_factory=set)  # diverged without keeping a best snapshot

    @property
    def cut_done(self) -> bool:
        """Every cohort cut is behind (jobs train freely to the end)."""
        return self.cuts_done >= self.n_cuts

    def jobs_in(self, *states: JobState) -> list[JobSpec]:
        return [j for j in self.task.jobs if self.state[j.job_id] in states]

    def alive(self) -> bool:
        return any(s in ("pending", "running", "suspended") for s in self.state.values())


def _gate(policy: EarlyExitPolicy, task: TaskSpec, job: JobSpec, cut: int) -> int | None:
    """The step where `job` waits for cut number `cut`; None past the policy's last cut."""
    rungs = policy.rungs()
    return gate_step(task, job, rungs[cut]) if cut < len(rungs) else None


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
        self.running: dict[str, TaskState] = {}
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
        ts = self.running.get(ev.task_id)
        if ts is None or ts.state.get(ev.job_id) != "running":
            return []  # a stopped job's late report changes nothing
        h = ts.hist[ev.job_id]
        h.add(ev)
        verdict = ts.policy.on_report(h, ts.task)
        if verdict.stop:  # the early-exit decision, in one line
            return self._stop(ts, h.job, verdict.reason or "pruned", verdict.restore_best, ev.now)
        gate = ts.gate[ev.job_id]
        if gate is None or ts.cut_done or ev.job_id in ts.warmed or ev.step < gate:
            return []
        ts.warmed.add(ev.job_id)
        acts: list[Action] = []
        if ev.step < h.total_steps and (ts.jobs_in("pending") or (self._holds(ts) and self._warming(ts))):
            # rotate: give the slot to a config not yet tried; or hold: train no sample past
            # the gate while other jobs are still warming up
            ts.state[ev.job_id] = "suspended"
            acts.append(Suspend(ts.task.task_id, ev.job_id))
        return acts + self._settle(ts, ev.now, prefer_batch=h.job.batch_size)

    def _on_job_end(self, ev: JobFinished | JobFailed) -> list[Action]:
        ts = self.running.get(ev.task_id)
        if ts is None or ts.state.get(ev.job_id) != "running":
            return []
        job = ts.task.job(ev.job_id)
        if isinstance(ev, JobFailed):
            return self._stop(ts, job, "failed", False, ev.now)
        ts.state[ev.job_id] = "finished"
        ts.warmed.add(ev.job_id)
        return self._settle(ts, ev.now, prefer_batch=job.batch_size)

    # ------------------------------------------------------------------ intra-task
    def _holds(self, ts: TaskState) -> bool:
        return ts.policy.holds_at_gate() if self.cfg.hold_at_gate is None else self.cfg.hold_at_gate

    @staticmethod
    def _warming(ts: TaskState) -> bool:
        """Some live job has not reached its gate yet (the cut is still to come)."""
        return any(s in ("pending", "running", "suspended") and j not in ts.warmed for j, s in ts.state.items())

    def _stop(self, ts: TaskState, job: JobSpec, reason: Any, restore: bool, now: float) -> list[Action]:
        ts.state[job.job_id] = "stopped"
        ts.reasons[job.job_id] = reason
        if reason == "diverging" and not restore:
            ts.discarded.add(job.job_id)
        acts: list[Action] = [Stop(ts.task.task_id, job.job_id, reason, restore)]
        return acts + self._settle(ts, now, prefer_batch=job.batch_size)

    def _settle(self, ts: TaskState, now: float, prefer_batch: int | None) -> list[Action]:
        """After any change: cut if warm-up is complete, backfill free slots, finish if empty."""
        acts = self._maybe_cut(ts)
        acts += self._backfill(ts, prefer_batch=None if acts else prefer_batch)
        if not ts.alive():
            acts += self._finish(ts, now)
        return acts

    def _maybe_cut(self, ts: TaskState) -> list[Action]:
        """The underperforming rule: once every live job reached the gate of the next cut (or
        finished), keep the policy's top; then set the gates of the cut after it, if any."""
        acts: list[Action] = []
        while not ts.cut_done and not all(g is None for g in ts.gate.values()) and not self._warming(ts):
            alive = {j: ts.hist[j] for j, s in ts.state.items() if s in ("running", "suspended")}
            keep = set(ts.policy.select(alive, ts.task, ts.cuts_done)) if alive else set()
            ts.cuts_done += 1
            for job_id in sorted(alive):
                if job_id not in keep:
                    ts.state[job_id] = "stopped"
                    ts.reasons[job_id] = "underperforming"
                    acts.append(Stop(ts.task.task_id, job_id, "underperforming", False))
            # the next rung: finished jobs stay warmed; a job already past its next gate is there
            ts.warmed = {j for j, s in ts.state.items() if s == "finished"}
            if ts.cut_done:
                break
            for j in ts.task.jobs:
                ts.gate[j.job_id] = _gate(ts.policy, ts.task, j, ts.cuts_done)
                h, g = ts.hist[j.job_id], ts.gate[j.job_id]
                if ts.state[j.job_id] in ("running", "suspended") and g is not None and h.steps and h.steps[-1] >= g:
                    ts.warmed.add(j.job_id)
        return acts

    def _backfill(self, ts: TaskState, prefer_batch: int | None) -> list[Action]:
        """Admit suspended survivors (after the cut) or never-started jobs while they fit."""
        max_jobs = self.cfg.max_jobs_per_group if self.cfg.batching else 1
        running = ts.jobs_in("running")
        # suspended jobs wait for a cut only while they sit at its gate (warmed); after the cut
        # the survivors resume, before the first cut no job is suspended but at its gate
        candidates = ts.jobs_in("pending") + [j for j in ts.jobs_in("suspended") if j.job_id not in ts.warmed]
        if not candidates:
            return []
        picked = pick_admissions(running, candidates, ts.memory, ts.task.seq_len, max_jobs, prefer_batch)
        acts: list[Action] = []
        for job in picked:
            resume = ts.state[job.job_id] == "suspended"
            ts.state[job.job_id] = "running"
            acts.append(Admit(ts.task.task_id, job.job_id, resume))
        if not running and not picked:  # nothing runs and nothing fits, even alone
            for job in candidates:
                ts.state[job.job_id] = "stopped"
                ts.reasons[job.job_id] = "no_fit"
                acts.append(Stop(ts.task.task_id, job.job_id, "no_fit", False))
        return acts

    def _finish(self, ts: TaskState, now: float) -> list[Action]:
        """Release the task's GPUs; its result is the job with the lowest best-val loss."""
        best, best_val = None, math.inf
        for job in ts.task.jobs:
            if ts.reasons.get(job.job_id) in _NO_RESULT or job.job_id in ts.discarded:
                continue
            v = ts.hist[job.job_id].best_val()
            if v is not None and v < best_val:
                best, best_val = job.job_id, v
        fin = FinishTask(ts.task.task_id, ts.gpus, best, None if best is None else best_val)
        worst = self._durations[ts.task.task_id]
        if worst > 0:
            self._shrinks.append(min(1.0, (now - ts.started) / worst))
        del self.running[ts.task.task_id]
        self.done[ts.task.task_id] = fin
        self.free.update(ts.gpus)
        return [fin] + self._replan(now)

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
        running = [RunningTask(t, ts.gpus, self._remaining(ts, now)) for t, ts in sorted(self.running.items())]
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

    def _remaining(self, ts: TaskState, now: float) -> float:
        """Expected time left: the worst case, shrunk to the samples its live jobs still owe.

        Early exit makes tasks end well before their worst case; planning with what is left
        of the survivors (rather than the paper's worst case for running tasks) lets the
        inter-task plan use GPUs that are about to be freed.
        """
        worst = max(0.0, ts.started + self._durations[ts.task.task_id] - now)
        total = ts.task.samples_per_job * len(ts.task.jobs)
        owed = sum(
            ts.task.samples_per_job - (h.samples[-1] if h.samples else 0)
            for j, h in ts.hist.items() if ts.state[j] in ("pending", "running", "suspended")
        )
        return min(worst, self._durations[ts.task.task_id] * owed / max(total, 1))

    def _start(self, task: TaskSpec, now: float) -> list[Action]:
        """Start a task just popped from the queue on the lowest free GPU ids."""
        self._waiting_gpus -= task.gpus
        gpus = tuple(sorted(self.free)[: task.gpus])
        self.free.difference_update(gpus)
        policy = build_early_exit(self.cfg.early_exit, dict(self.cfg.early_exit_params))
        ts = TaskState(
            task=task,
            gpus=gpus,
            started=now,
            policy=policy,
            memory=self.memory_for(task),
            state={j.job_id: "pending" for j in task.jobs},
            hist={j.job_id: JobHistory(j, task.total_steps(j)) for j in task.jobs},
            gate={j.job_id: _gate(policy, task, j, 0) for j in task.jobs},
            n_cuts=len(policy.rungs()),
        )
        self.running[task.task_id] = ts
        acts: list[Action] = [StartTask(task.task_id, gpus)]
        return acts + self._settle(ts, now, prefer_batch=None)
