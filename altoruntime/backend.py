"""The runtime backend: executes Controller actions with real trainers and reports real events.

The same loop shape as the simulator: events go to `controller.on_event`, the returned actions
are executed at once (admit, suspend, stop, finish), then every running task takes one fused
step. At a job's evaluation steps (`TaskSpec.is_eval_step`) it sends a StepReport with the mean
train loss since the previous report and the validation loss; at its last step a JobFinished; a
NaN loss or a job that cannot fit alone becomes a JobFailed, and the task goes on.
Time is the wall clock relative to the run start (injectable, so tests can fix it).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from altosim.ids import task_dir
from altosim.policy.types import (
    Action, Admit, Event, FinishTask, JobFailed, JobFinished, JobSpec, StartTask, Stop, StepReport,
    Suspend, TaskArrived, TaskSpec, Tick, to_dict,
)
from altoruntime.checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from altoruntime.export import export_peft
from altoruntime.task_data import SplitData, TaskData  # noqa: F401 (SplitData re-exported)
from altoruntime.protocol import Trainer


_EVENTS = (TaskArrived, StepReport, JobFinished, JobFailed, Tick)


class Policy(Protocol):
    def on_event(self, event: Event) -> list[Action]: ...


@dataclass
class _JobRun:
    spec: JobSpec
    step: int = 0
    samples: int = 0
    position: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    best_val: float = math.inf
    state: str = "running"  # running | suspended | stopped | discarded (diverged, no snapshot)


@dataclass
class _TaskRun:
    task: TaskSpec
    gpus: tuple[int, ...]
    trainer: Trainer
    data: TaskData
    jobs: dict[str, _JobRun] = field(default_factory=dict)


PHASES = ("data", "step", "validate", "snapshot", "policy")  # RunLog.phases, in step order
# timed apart from the phase they happen in: the Controller's actions, by kind (a task's start builds
# its trainer; its finish exports the best adapter), and a job's own finish (its slot freed as a
# stop frees it): what a simulator charges as action costs rather than as step time
ACTION_PHASES = ("start_task", "admit", "suspend", "stop", "finish_task", "job_finished")


@dataclass
class RunLog:
    """What a run did: every event sent and action taken, in order, and each task's result."""

    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    trace: list[Event | Action] = field(default_factory=list)  # both, interleaved in order
    results: dict[str, FinishTask] = field(default_factory=dict)
    exported: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # task -> best adapter's task metric
    job_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> job -> objective value
    objectives: dict[str, str] = field(default_factory=dict)  # task -> objective metric name (not val_loss)
    minimize: dict[str, bool] = field(default_factory=dict)  # task -> the objective's direction
    summary: dict[str, str] = field(default_factory=dict)  # task -> one line naming its best config
    # host wall seconds per phase of the fused steps (PHASES): where a run's time went, without a
    # calibration (step and validate end with a device sync)
    phases: dict[str, float] = field(default_factory=dict)
    _inside: float = 0.0  # action seconds since the last add_phase (charged to ACTION_PHASES already)

    def begin_step(self) -> None:
        """Start a step's phases: action time so far (a task's arrival between steps) is no phase's."""
        self._inside = 0.0

    def add_phase(self, name: str, t0: float) -> float:
        """Charge the time since `t0` to phase `name`, less the actions timed inside it; return now
        (the next phase's start)."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - t0 - self._inside
        self._inside = 0.0
        return now

    def add_action(self, name: str, t0: float) -> None:
        """Charge the time since `t0` to action phase `name` (and not to the phase around it)."""
        dt = time.perf_counter() - t0
        self.phases[name] = self.phases.get(name, 0.0) + dt
        self._inside += dt

    def write_events(self, path: str | Path) -> None:
        """events.jsonl: one event per line, each followed by the actions it caused."""
        tmp = Path(f"{path}.tmp")
        tmp.write_text("".join(json.dumps(to_dict(e)) + "\n" for e in self.trace))
        tmp.replace(path)


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
        self.tasks: dict[str, _TaskRun] = {}
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
            while pending and pending[0].arrival <= self.now():
                self._send(TaskArrived(self.now(), pending.pop(0)))
            stepping = [tr for tr in self.tasks.values() if tr.trainer.active]
            for tr in stepping:
                self._step(tr)
            if stepping:
                continue
            if pending:  # idle until the next arrival
                self.sleep(max(0.0, pending[0].arrival - self.now()))
            elif self.tasks:  # started tasks with nothing to run: let the policy re-plan
                before = len(self.log.actions)
                self._send(Tick(self.now()))
                if len(self.log.actions) == before and not any(t.trainer.active for t in self.tasks.values()):
                    raise RuntimeError(f"controller left tasks {sorted(self.tasks)} with no job to run")
        return self.log

    # ------------------------------------------------------------------ checkpoint / resume
    def _save(self, path: Path) -> None:
        """Trainers, job progress, the event/action trace and the clock, in one atomic file."""
        tasks = {tid: {"gpus": tr.gpus, "jobs": {j: asdict(r) for j, r in tr.jobs.items()}}
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
            tr = _TaskRun(task, tuple(t["gpus"]), self.make_trainer(task, tuple(t["gpus"])), self.data_for(task))
            tr.jobs = {j: _JobRun(**{**r, "spec": JobSpec(**r["spec"])}) for j, r in t["jobs"].items()}
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

    def _send(self, event: Event) -> None:
        self.log.events.append(event)
        self.log.trace.append(event)
        for action in self.ctl.on_event(event):
            self.log.actions.append(action)
            self.log.trace.append(action)
            self._execute(action)

    # ------------------------------------------------------------------ actions
    def _execute(self, a: Action) -> None:
        t0 = time.perf_counter()
        try:
            self._apply(a)
        finally:
            self.log.add_action(a.kind, t0)

    def _apply(self, a: Action) -> None:
        if isinstance(a, StartTask):
            task = self.specs[a.task_id]
            self.tasks[a.task_id] = _TaskRun(task, a.gpus, self.make_trainer(task, a.gpus), self.data_for(task))
            prefetch = getattr(self.tasks[a.task_id].trainer, "prefetch_inits", None)  # an optional speed-up
            if prefetch is not None:
                prefetch([(j.rank, j.seed) for j in task.jobs])
            return
        tr = self.tasks[a.task_id]
        if isinstance(a, Admit):
            job = tr.jobs.get(a.job_id)
            if a.resume and job is not None and job.state == "suspended":
                tr.trainer.resume(a.job_id)
            else:
                spec = tr.task.job(a.job_id)
                tr.trainer.admit(spec.job_id, rank=spec.rank, alpha=spec.alpha, lr=spec.lr,
                                 weight_decay=spec.weight_decay, dropout=spec.dropout, seed=spec.seed)
                job = tr.jobs[a.job_id] = _JobRun(spec)
            job.state = "running"
        elif isinstance(a, Suspend):
            tr.trainer.suspend(a.job_id)
            tr.jobs[a.job_id].state = "suspended"
        elif isinstance(a, Stop):
            job = tr.jobs.get(a.job_id)
            if job is None:  # never admitted (e.g. it fits nowhere): nothing to free
                return
            t = tr.trainer
            if t.status(a.job_id) == "failed":
                t.drop(a.job_id)
                del tr.jobs[a.job_id]
                return
            if t.status(a.job_id) == "active":
                # frees the slot; weights stay on the host for the result, the optimizer state is
                # dropped (a stopped job never trains again)
                t.suspend(a.job_id, keep_optimizer=False)
            if a.restore_best and t.has_best(a.job_id):
                t.restore_best(a.job_id)  # into the host copy: no write back into the freed slot
            # diverged without a snapshot: never a result (as the Controller decides), never scored
            job.state = "discarded" if a.reason == "diverging" and not a.restore_best else "stopped"
            self.samples_total -= max(0, tr.task.samples_per_job - job.samples)
        elif isinstance(a, FinishTask):
            t, best = tr.trainer, a.best_job
            objective = getattr(tr.data, "objective", None)
            if objective is not None:  # the task's objective picks the result, not validation loss
                name, minimize, score = objective
                scores = self._score_all(tr, score)
                self.log.job_metrics[a.task_id] = scores
                self.log.objectives[a.task_id], self.log.minimize[a.task_id] = name, minimize
                if scores:
                    ranked = sorted(scores, key=lambda j: ((scores[j] if minimize else -scores[j]), j))
                    best = ranked[0]
            if best is not None and best in t and t.status(best) != "failed":
                if t.has_best(best):
                    t.restore_best(best)  # the result is the best-validation snapshot
                if self.out_dir is not None:
                    path = task_dir(self.out_dir, a.task_id) / "best_adapter"  # never outside out_dir
                    self.log.exported[a.task_id] = export_peft(t, best, path, base_model_name_or_path=self.base_models.get(a.task_id))
                    if self.save_adapters == "survivors":
                        self._export_survivors(tr)
                final_metric = getattr(tr.data, "final_metric", None)
                if final_metric is not None:
                    if t.status(best) == "suspended":
                        t.resume(best)
                    with t.applied(best) as model:
                        self.log.metrics[a.task_id] = float(final_metric(model))
            self.log.results[a.task_id] = a
            del self.tasks[a.task_id]

    def _score_all(self, tr: _TaskRun, score: Callable[[Any], float]) -> dict[str, float]:
        """Every config that reported a validation loss, scored at its best-validation snapshot."""
        t, scores = tr.trainer, {}
        for job_id, job in sorted(tr.jobs.items()):
            if job_id not in t or t.status(job_id) == "failed" or math.isinf(job.best_val) or job.state == "discarded":
                continue
            if t.status(job_id) == "active":
                t.suspend(job_id, keep_optimizer=False)
            if t.has_best(job_id):
                t.restore_best(job_id)
            t.resume(job_id)
            with t.applied(job_id) as model:
                scores[job_id] = float(score(model))
            t.suspend(job_id, keep_optimizer=False)
        return scores

    def _export_survivors(self, tr: _TaskRun) -> None:
        """Every job that ran to the end, at its best-validation snapshot: <task>/adapters/<job>."""
        folder = task_dir(self.out_dir, tr.task.task_id) / "adapters"
        for job_id, job in sorted(tr.jobs.items()):
            finished = job.step >= tr.task.total_steps(job.spec)
            if finished and job_id in tr.trainer and tr.trainer.status(job_id) != "failed":
                name = job_id.rsplit("/", 1)[-1]  # job ids are '<task>/jNNN'
                export_peft(tr.trainer, job_id, folder / name, best=tr.trainer.has_best(job_id),
                            base_model_name_or_path=self.base_models.get(tr.task.task_id))

    # ------------------------------------------------------------------ one fused step
    def _step(self, tr: _TaskRun) -> None:
        self.log.begin_step()
        t = time.perf_counter()
        batches, nxt = {}, {}
        for job_id in tr.trainer.active:
            job = tr.jobs[job_id]
            batches[job_id], nxt[job_id] = tr.data.train_batch(job.spec, job.position)
        t = self.log.add_phase("data", t)
        losses = tr.trainer.step(batches)
        t = self.log.add_phase("step", t)
        if self.on_step is not None:
            self.on_step(tr.task.task_id, losses)
        now = self.now()
        reports, failed = [], []
        for job_id, loss in losses.items():
            job = tr.jobs[job_id]
            if tr.trainer.status(job_id) == "failed":
                failed.append(JobFailed(now, tr.task.task_id, job_id, tr.trainer.failure(job_id) or "failed"))
                continue
            job.step += 1
            job.samples += int(batches[job_id][0].shape[0])
            self.samples_done += int(batches[job_id][0].shape[0])
            job.position = nxt[job_id]
            job.loss_sum += loss
            job.loss_n += 1
            if tr.task.is_eval_step(job.spec, job.step):
                reports.append(job_id)
        t = self.log.add_phase("policy", t)  # the progress callback and the bookkeeping above
        vals = self._validate(tr, reports) if reports else {}
        t = self.log.add_phase("validate", t)
        for job_id in reports:
            job = tr.jobs[job_id]
            val, acc = vals[job_id]
            if val < job.best_val:
                job.best_val = val
                t = self.log.add_phase("policy", t)
                tr.trainer.snapshot_best(job_id)
                t = self.log.add_phase("snapshot", t)
            train = job.loss_sum / job.loss_n
            job.loss_sum, job.loss_n = 0.0, 0
            self._send(StepReport(now, tr.task.task_id, job_id, job.step, job.samples, train, val, acc))
            if job.state == "running" and job.step >= tr.task.total_steps(job.spec):
                t_fin = time.perf_counter()  # (t still times the policy phase around it)
                # it never trains again: free the slot, keep the weights for the result, drop the
                # AdamW moments (copying them to the host was ~2 s of a 78-s H200 run's 24 finishes)
                tr.trainer.suspend(job_id, keep_optimizer=False)
                self.log.add_action("job_finished", t_fin)
                job.state = "stopped"
                self._send(JobFinished(now, tr.task.task_id, job_id))
        for ev in failed:
            self._send(ev)
        if self.on_samples is not None:
            self.on_samples(self.samples_done, self.samples_total)
        self.log.add_phase("policy", t)  # reports sent: the Controller's decisions and their actions

    def _validate(self, tr: _TaskRun, job_ids: list[str]) -> dict[str, tuple[float, float]]:
        """Each job's token-weighted mean validation loss and teacher-forced answer-token
        accuracy (the StepReport metric); jobs share fused forwards of at most `eval_rows` rows."""
        loss = {j: 0.0 for j in job_ids}
        hits = {j: 0 for j in job_ids}
        count = 0
        for batch in tr.data.val_batches():
            per_call = max(1, self.eval_rows // int(batch[0].shape[0]))
            for i in range(0, len(job_ids), per_call):
                res = tr.trainer.evaluate_tokens({j: batch for j in job_ids[i:i + per_call]})
                for j, r in res.items():
                    loss[j] += r.loss_sum
                    hits[j] += r.correct
            count += r.tokens
        return {j: (loss[j] / count, hits[j] / count) for j in job_ids}
