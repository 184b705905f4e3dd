"""One started task's jobs: their states, histories and the early-exit cuts between them.

The Controller routes a task's StepReports and job ends here and gets the task's actions back
(Admit, Suspend, Stop and, when no job is left, FinishTask); GPUs and the queue stay its own.

Warm-up with rotation (our reading of the paper, which leaves it open): a job that reaches the end
of its warm-up while never-started jobs of its task still wait is *suspended* (state kept, slot
freed) so every config gets warmed up; once every job has warmed up or exited, the early-exit
policy's cohort cut keeps the best and the suspended survivors are resumed as slots allow.
With hold at gate (`hold_at_gate`, else the policy's `holds_at_gate()`: alto's default) a job
that reaches its gate is suspended too while any other job still warms up, so the cut compares
jobs at equal samples and no sample is trained past a gate before its cut. A policy may make
several cuts (its `rungs`, budget fractions; a job's gate is its first evaluation at or past the
rung): after each, the next gates are set and the same wait-hold-cut repeats with the survivors.
"""

from __future__ import annotations

import math
from typing import Literal

from altosim.policy.early_exit import EarlyExitPolicy
from altosim.policy.early_exit.base import gate_step
from altosim.policy.intra import pick_admissions
from altosim.policy.memory import MemoryModel
from altosim.policy.types import (
    Action, Admit, FinishTask, JobFailed, JobFinished, JobHistory, JobSpec, StepReport, Stop, Suspend, TaskSpec,
)

_NO_RESULT = ("failed", "no_fit")  # such jobs never count as a task's result
# nor does a job stopped as diverging without keeping its best snapshot (the paper's rule); one
# that keeps it (`restore_best`) competes with that snapshot's val loss
JobState = Literal["pending", "running", "suspended", "stopped", "finished"]
_LIVE = ("pending", "running", "suspended")


class TaskGroup:
    """A started task: `start()` admits its first jobs; `on_report` and `on_job_end` take its
    events and return its actions; `result` is its FinishTask once every job has ended.

    `max_jobs` caps the running group (None: memory alone limits it); `hold_at_gate` None lets
    the policy decide (`policy.holds_at_gate()`).
    """

    def __init__(self, task: TaskSpec, gpus: tuple[int, ...], started: float, policy: EarlyExitPolicy,
                 memory: MemoryModel | None = None, max_jobs: int | None = None,
                 hold_at_gate: bool | None = None) -> None:
        self.task, self.gpus, self.started, self.policy = task, gpus, started, policy
        self._memory, self._max_jobs = memory, max_jobs
        self._hold = policy.holds_at_gate() if hold_at_gate is None else hold_at_gate
        self._state: dict[str, JobState] = {j.job_id: "pending" for j in task.jobs}
        # jobs per state, kept with `_state` by `_set` (the hot path asks counts, not lists)
        self._count: dict[JobState, int] = {"pending": len(self._state), "running": 0, "suspended": 0,
                                            "stopped": 0, "finished": 0}
        self._hist = {j.job_id: JobHistory(j, task.total_steps(j)) for j in task.jobs}
        self._rungs = policy.rungs()
        self._gate = {j.job_id: self._gate_for(j, 0) for j in task.jobs}
        self._gated = any(g is not None for g in self._gate.values())  # some job has a gate to reach
        self._warmed: set[str] = set()  # reached the gate of the next cut (or finished)
        self._unwarmed = len(self._state)  # live jobs not in _warmed (kept by `_set` and `_warm`)
        self._reasons: dict[str, str] = {}
        self._discarded: set[str] = set()  # diverged without keeping a best snapshot
        self.cuts_done = 0
        self.result: FinishTask | None = None

    # ------------------------------------------------------------------ what others read
    @property
    def cut_done(self) -> bool:
        """Every cohort cut is behind (jobs train freely to the end)."""
        return self.cuts_done >= len(self._rungs)

    def state(self, job_id: str) -> JobState:
        return self._state[job_id]

    def history(self, job_id: str) -> JobHistory:
        return self._hist[job_id]

    def samples_owed(self) -> int:
        """Samples the live jobs still have to train, at most (no early exit from here on)."""
        return sum(self.task.samples_per_job - (h.samples[-1] if h.samples else 0)
                   for j, h in self._hist.items() if self._state[j] in _LIVE)

    def live_progress(self) -> list[float]:
        """The share of its budget each live job has trained (for duration predictions)."""
        spj = max(self.task.samples_per_job, 1)
        return [min(1.0, (h.samples[-1] if h.samples else 0) / spj)
                for j, h in self._hist.items() if self._state[j] in _LIVE]

    # ------------------------------------------------------------------ events
    def start(self) -> list[Action]:
        """Admit the first jobs (or stop them all when none fits even alone)."""
        return self._settle(prefer_batch=None)

    def on_report(self, ev: StepReport) -> list[Action]:
        if self._state.get(ev.job_id) != "running":
            return []  # a stopped job's late report changes nothing
        h = self._hist[ev.job_id]
        h.add(ev)
        verdict = self.policy.on_report(h, self.task)
        if verdict.stop:  # the early-exit decision, in one line
            return self._stop(h.job, verdict.reason or "pruned", verdict.restore_best)
        gate = self._gate[ev.job_id]
        if gate is None or ev.step < gate or self.cut_done or ev.job_id in self._warmed:
            return []
        self._warm(ev.job_id)
        acts: list[Action] = []
        if ev.step < h.total_steps and (self._count["pending"] or (self._hold and self._warming())):
            # rotate: give the slot to a config not yet tried; or hold: train no sample past
            # the gate while other jobs are still warming up
            self._set(ev.job_id, "suspended")
            acts.append(Suspend(self.task.task_id, ev.job_id))
        return acts + self._settle(prefer_batch=h.job.batch_size)

    def on_job_end(self, ev: JobFinished | JobFailed) -> list[Action]:
        if self._state.get(ev.job_id) != "running":
            return []
        job = self.task.job(ev.job_id)
        if isinstance(ev, JobFailed):
            return self._stop(job, "failed", False)
        self._set(ev.job_id, "finished")
        self._warm(ev.job_id)
        return self._settle(prefer_batch=job.batch_size)

    # ------------------------------------------------------------------ machinery
    def _gate_for(self, job: JobSpec, cut: int) -> int | None:
        """The step where `job` waits for cut number `cut`; None past the policy's last cut."""
        return gate_step(self.task, job, self._rungs[cut]) if cut < len(self._rungs) else None

    def _set(self, job_id: str, state: JobState) -> None:
        count, old = self._count, self._state[job_id]
        count[old] -= 1
        count[state] += 1
        self._state[job_id] = state
        if job_id not in self._warmed and (old in _LIVE) != (state in _LIVE):
            self._unwarmed += 1 if state in _LIVE else -1

    def _warm(self, job_id: str) -> None:
        if job_id not in self._warmed:
            self._warmed.add(job_id)
            if self._state[job_id] in _LIVE:
                self._unwarmed -= 1

    def _live(self) -> int:
        count = self._count
        return count["pending"] + count["running"] + count["suspended"]

    def _jobs_in(self, *states: JobState) -> list[JobSpec]:
        return [j for j in self.task.jobs if self._state[j.job_id] in states]

    def _warming(self) -> bool:
        """Some live job has not reached its gate yet (the cut is still to come)."""
        return self._unwarmed > 0

    def _stop(self, job: JobSpec, reason: str, restore: bool) -> list[Action]:
        self._set(job.job_id, "stopped")
        self._reasons[job.job_id] = reason
        if reason == "diverging" and not restore:
            self._discarded.add(job.job_id)
        acts: list[Action] = [Stop(self.task.task_id, job.job_id, reason, restore)]  # type: ignore[arg-type]
        return acts + self._settle(prefer_batch=job.batch_size)

    def _settle(self, prefer_batch: int | None) -> list[Action]:
        """After any change: cut if warm-up is complete, backfill free slots, finish if empty."""
        acts = self._maybe_cut()
        admitted = self._backfill(prefer_batch=None if acts else prefer_batch)
        acts += admitted
        live = self._live() > 0
        if live and any(isinstance(a, Stop) for a in admitted):
            # the jobs left wait at a gate for a cut that no running job will bring: cut now
            return acts + self._settle(prefer_batch=None)
        if not live:
            acts.append(self._finish())
        return acts

    def _maybe_cut(self) -> list[Action]:
        """The underperforming rule: once every live job reached the gate of the next cut (or
        finished), keep the policy's top; then set the gates of the cut after it, if any."""
        acts: list[Action] = []
        while not self.cut_done and self._gated and not self._warming():
            alive = {j: self._hist[j] for j, s in self._state.items() if s in ("running", "suspended")}
            keep = set(self.policy.select(alive, self.task, self.cuts_done)) if alive else set()
            self.cuts_done += 1
            for job_id in sorted(alive):
                if job_id not in keep:
                    self._set(job_id, "stopped")
                    self._reasons[job_id] = "underperforming"
                    acts.append(Stop(self.task.task_id, job_id, "underperforming", False))
            # the next rung: finished jobs stay warmed; a job already past its next gate is there
            self._warmed = {j for j, s in self._state.items() if s == "finished"}
            self._unwarmed = self._live()
            if self.cut_done:
                break
            for j in self.task.jobs:
                g = self._gate[j.job_id] = self._gate_for(j, self.cuts_done)
                h = self._hist[j.job_id]
                if self._state[j.job_id] in ("running", "suspended") and g is not None and h.steps and h.steps[-1] >= g:
                    self._warmed.add(j.job_id)
            self._gated = any(g is not None for g in self._gate.values())
            self._unwarmed = sum(s in _LIVE and j not in self._warmed for j, s in self._state.items())
        return acts

    def _backfill(self, prefer_batch: int | None) -> list[Action]:
        """Admit suspended survivors (after the cut) or never-started jobs while they fit."""
        if not self._count["pending"] and not self._count["suspended"]:
            return []  # no candidate
        # suspended jobs wait for a cut only while they sit at its gate (warmed); after the cut
        # the survivors resume, before the first cut no job is suspended but at its gate
        candidates = self._jobs_in("pending") if self._count["pending"] else []
        if self._count["suspended"]:
            candidates += [j for j in self._jobs_in("suspended") if j.job_id not in self._warmed]
        if not candidates:
            return []
        running = self._jobs_in("running")
        picked = pick_admissions(running, candidates, self._memory, self.task.seq_len, self._max_jobs, prefer_batch)
        acts: list[Action] = []
        for job in picked:
            resume = self._state[job.job_id] == "suspended"
            self._set(job.job_id, "running")
            acts.append(Admit(self.task.task_id, job.job_id, resume))
        if not running and not picked:  # nothing runs and nothing fits, even alone
            for job in candidates:
                self._set(job.job_id, "stopped")
                self._reasons[job.job_id] = "no_fit"
                acts.append(Stop(self.task.task_id, job.job_id, "no_fit", False))
        return acts

    def _finish(self) -> FinishTask:
        """The task's result: the job with the lowest best-val loss."""
        best, best_val = None, math.inf
        for job in self.task.jobs:
            if self._reasons.get(job.job_id) in _NO_RESULT or job.job_id in self._discarded:
                continue
            v = self._hist[job.job_id].best_val()
            if v is not None and v < best_val:
                best, best_val = job.job_id, v
        self.result = FinishTask(self.task.task_id, self.gpus, best, None if best is None else best_val)
        return self.result
