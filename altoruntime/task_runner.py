"""One started task on its trainer: the runtime's action executor and fused step, shared by both engines.

The single-process engine (altoruntime/backend.py) holds one `TaskRunner` per started task and
steps them in turn; the Ray engine (altoruntime/cluster/) hosts one in each task worker actor.
A step's events go to `send` in the trainer's slot order; both engines collect them and feed them
to the Controller as one batch in the backend contract's order (altosim/policy/event_order.py).
At a job's evaluation steps (`TaskSpec.is_eval_step`) the runner sends a StepReport with the mean
train loss since the previous report and the validation loss; at its last step a JobFinished
(`finish` frees the job's slot: the engine calls it as that event is fed, or a worker at once); a
NaN loss becomes a JobFailed, and the task goes on.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from altosim.ids import task_dir
from altosim.policy.types import (
    Action, Admit, Event, FinishTask, JobFailed, JobFinished, JobSpec, Stop, StepReport, Suspend, TaskSpec,
)
from altosim.report import write_csv
from altoruntime.actions import carry_out
from altoruntime.batching import Batch
from altoruntime.export import export_peft
from altoruntime.protocol import Trainer
from altoruntime.runlog import RunLog
from altoruntime.task_data import TaskData


def train_knobs(task: TaskSpec, job: JobSpec) -> dict[str, Any]:
    """`admit`'s lr-schedule and clipping arguments for a job of `task`; none at their defaults
    (constant lr, no clipping), so a trainer without these knobs still admits such jobs."""
    schedule, warmup, clip = task.knobs(job)
    if schedule == "constant" and not warmup and clip is None:
        return {}
    return {"lr_schedule": schedule, "warmup_steps": task.warmup_steps(job),
            "total_steps": task.total_steps(job), "max_grad_norm": clip}


def split_micro(batch: Batch, k: int) -> Batch | list[Batch]:
    """A step's batch as k micro-batches of consecutive rows (k = 1: the batch itself)."""
    if k == 1:
        return batch
    rows = int(batch[0].shape[0])
    if rows % k:
        raise ValueError(f"grad_accum_steps: {rows} rows do not split into {k} equal micro-batches")
    m = rows // k
    return [tuple(t[i * m:(i + 1) * m] for t in batch) for i in range(k)]  # type: ignore[misc]


@dataclass
class JobProgress:
    """A job's place in its task's stream: steps, samples, the loss sum since its last report."""

    spec: JobSpec
    step: int = 0
    samples: int = 0
    position: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    best_val: float = math.inf
    state: str = "running"  # running | suspended | stopped | discarded (diverged, no snapshot)


@dataclass(frozen=True)
class Finished:
    """What a task's FinishTask produced: its best adapter's PEFT folder and task metric, if any;
    with a task objective (TaskData.objective), every scored config and the objective's name and direction."""

    exported: Path | None = None
    metric: float | None = None
    scores: dict[str, float] | None = None
    objective: str | None = None
    minimize: bool = True


class TaskRunner:
    """A task's trainer, data and job progress; `apply` carries out the Controller's actions on it
    (all but StartTask, which builds the runner), `step` takes one fused step."""

    def __init__(self, task: TaskSpec, gpus: tuple[int, ...], trainer: Trainer, data: TaskData, log: RunLog,
                 out_dir: Path | None = None, eval_rows: int = 256, base_model: str | None = None,
                 save_adapters: str = "best") -> None:
        """base_model: the backbone's path or hub id, written into the exported adapters;
        save_adapters: 'best', or 'survivors' (also every job that ran to the end)."""
        if save_adapters not in ("best", "survivors"):
            raise ValueError(f"save_adapters: best or survivors, got {save_adapters!r}")
        self.task, self.gpus, self.trainer, self.data = task, gpus, trainer, data
        self.log, self.out_dir, self.eval_rows = log, out_dir, eval_rows
        self.base_model, self.save_adapters = base_model, save_adapters
        self.jobs: dict[str, JobProgress] = {}
        self.budget_cut = 0  # samples the stops took off the task's budget (progress in samples)
        self._prefetch = getattr(trainer, "prefetch_inits", None)  # an optional speed-up
        if self._prefetch is not None:
            self._prefetch([(j.rank, j.seed) for j in task.jobs])

    def expect(self, actions: list[Action]) -> None:
        """The actions about to be carried out: the stacks grow at most once for the admits among
        them, and the fresh admits get their initial weights drawn
        first, in their order (then the task's other jobs not admitted yet), so an admit waits
        for no draw of a job that comes later (a burst of admits is in the policy's order, not
        the task's)."""
        mine = [a for a in actions if getattr(a, "task_id", None) == self.task.task_id]
        incoming = [a.job_id for a in mine if isinstance(a, Admit)
                    and (a.job_id not in self.jobs or self.jobs[a.job_id].state == "suspended")]
        reserve = getattr(self.trainer, "reserve", None)  # optional: grow the stacks once for the burst
        if reserve is not None and incoming:
            reserve([self.task.job(j).rank for j in incoming])
        first = [j for j in incoming if j not in self.jobs]
        if self._prefetch is None or not first:
            return
        rest = [j.job_id for j in self.task.jobs if j.job_id not in self.jobs]
        order = list(dict.fromkeys(first + rest))
        self._prefetch([(self.task.job(j).rank, self.task.job(j).seed) for j in order])

    @property
    def active(self) -> bool:
        """Some job trains at the next step."""
        return bool(self.trainer.active)

    # ------------------------------------------------------------------ checkpoint state
    def progress(self) -> dict[str, dict[str, Any]]:
        """Each job's progress as plain data (for a checkpoint's `extra`)."""
        return {j: asdict(r) for j, r in self.jobs.items()}

    def load_progress(self, jobs: dict[str, dict[str, Any]]) -> None:
        self.jobs = {j: JobProgress(**{**r, "spec": JobSpec(**r["spec"])}) for j, r in jobs.items()}

    # ------------------------------------------------------------------ actions
    def apply(self, a: Action) -> Finished | None:
        """Carry out one action of this task, timed under its kind; a FinishTask returns its result."""
        t0 = time.perf_counter()
        try:
            return self._apply(a)
        finally:
            self.log.add_action(a.kind, t0)

    def _apply(self, a: Action) -> Finished | None:
        if isinstance(a, FinishTask):
            return self._finish(a.best_job)
        if not isinstance(a, (Admit, Suspend, Stop)):
            raise ValueError(f"task {self.task.task_id!r}: a runner cannot carry out {a.kind!r}")
        spec = self.task.job(a.job_id)
        t = self.trainer
        resumes = isinstance(a, Admit) and a.resume and a.job_id in t and t.status(a.job_id) == "suspended"
        state = carry_out(t, a, spec, train_knobs(self.task, spec) if isinstance(a, Admit) else None)
        if state == "unknown":
            return None
        if state == "dropped":
            del self.jobs[a.job_id]
            return None
        if isinstance(a, Admit) and not resumes:
            self.jobs[a.job_id] = JobProgress(spec)
        job = self.jobs[a.job_id]
        job.state = state
        if isinstance(a, Stop):
            self.budget_cut += max(0, self.task.samples_per_job - job.samples)
        return None

    def _finish(self, best: str | None) -> Finished:
        t = self.trainer
        calls = getattr(t, "calls", None)
        if calls and self.out_dir is not None:  # ALTO_CALL_LOG=1: every fused call of the task's run
            folder = task_dir(self.out_dir, self.task.task_id)
            folder.mkdir(parents=True, exist_ok=True)
            write_csv(pd.DataFrame(calls), folder / "fused_calls.csv")
        scores, name, minimize = None, None, True
        objective = getattr(self.data, "objective", None)
        if objective is not None:  # the task's objective picks the result, not validation loss
            name, minimize, score = objective
            scores = self._score_all(score)
            if scores:
                best = sorted(scores, key=lambda j: ((scores[j] if minimize else -scores[j]), j))[0]
        if best is None or best not in t or t.status(best) == "failed":
            return Finished(scores=scores, objective=name, minimize=minimize)
        if t.has_best(best):
            t.restore_best(best)  # the result is the best-validation snapshot
        exported = None
        if self.out_dir is not None:
            path = task_dir(self.out_dir, self.task.task_id) / "best_adapter"  # never outside out_dir
            exported = export_peft(t, best, path, base_model_name_or_path=self.base_model)
            if self.save_adapters == "survivors":
                self._export_survivors()
        metric = None
        final_metric = getattr(self.data, "final_metric", None)
        if final_metric is not None:
            if t.status(best) == "suspended":
                t.resume(best)
            with t.applied(best) as model:
                metric = float(final_metric(model))
        return Finished(exported, metric, scores, name, minimize)

    def _score_all(self, score: Callable[[Any], float]) -> dict[str, float]:
        """Every config that reported a validation loss, scored at its best-validation snapshot."""
        t, scores = self.trainer, {}
        for job_id, job in sorted(self.jobs.items()):
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

    def _export_survivors(self) -> None:
        """Every job that ran to the end, at its best-validation snapshot: <task>/adapters/<job>."""
        folder = task_dir(self.out_dir, self.task.task_id) / "adapters"
        for job_id, job in sorted(self.jobs.items()):
            finished = job.step >= self.task.total_steps(job.spec)
            if finished and job_id in self.trainer and self.trainer.status(job_id) != "failed":
                name = job_id.rsplit("/", 1)[-1]  # job ids are '<task>/jNNN'
                export_peft(self.trainer, job_id, folder / name, best=self.trainer.has_best(job_id),
                            base_model_name_or_path=self.base_model)

    # ------------------------------------------------------------------ one fused step
    def step(self, now: Callable[[], float], send: Callable[[Event], None],
             on_step: Callable[[str, dict[str, float]], None] | None = None) -> int:
        """One fused step of every active job; its events go to `send` in slot order (each job's
        report, then its JobFinished at its last step; the failures last), all stamped with the
        time the step ended. Returns the samples trained."""
        log, tr, task_id = self.log, self.trainer, self.task.task_id
        log.begin_step()
        t = time.perf_counter()
        batches, nxt = {}, {}
        for job_id in tr.active:
            job = self.jobs[job_id]
            batches[job_id], nxt[job_id] = self.data.train_batch(job.spec, job.position)
        # gradient accumulation: a job's step batch goes to the trainer as its micro-batches
        feed = {j: split_micro(b, self.jobs[j].spec.grad_accum_steps) for j, b in batches.items()}
        t = log.add_phase("data", t)
        losses = tr.step(feed)
        t = log.add_phase("step", t)
        if on_step is not None:
            on_step(task_id, losses)
        stamp = now()
        reports, failed, trained = [], [], 0
        for job_id, loss in losses.items():
            job = self.jobs[job_id]
            if tr.status(job_id) == "failed":
                failed.append(JobFailed(stamp, task_id, job_id, tr.failure(job_id) or "failed"))
                continue
            job.step += 1
            job.samples += int(batches[job_id][0].shape[0])
            trained += int(batches[job_id][0].shape[0])
            job.position = nxt[job_id]
            job.loss_sum += loss
            job.loss_n += 1
            if self.task.is_eval_step(job.spec, job.step):
                reports.append(job_id)
        t = log.add_phase("policy", t)  # the progress callback and the bookkeeping above
        vals = self.validate(reports) if reports else {}
        t = log.add_phase("validate", t)
        for job_id in reports:
            job = self.jobs[job_id]
            val, acc = vals[job_id]
            if val < job.best_val:
                job.best_val = val
                t = log.add_phase("policy", t)
                tr.snapshot_best(job_id)
                t = log.add_phase("snapshot", t)
            train = job.loss_sum / job.loss_n
            job.loss_sum, job.loss_n = 0.0, 0
            send(StepReport(stamp, task_id, job_id, job.step, job.samples, train, val, acc))
            if job.step >= self.task.total_steps(job.spec):
                send(JobFinished(stamp, task_id, job_id))
        for ev in failed:
            send(ev)
        log.add_phase("policy", t)  # the reports' bookkeeping (the engine times the Controller's part)
        return trained

    def finish(self, job_id: str) -> None:
        """A job that ran all its steps leaves its slot (timed as the action `job_finished`): it
        never trains again, so the weights stay for the result and the AdamW moments are dropped
        (copying them to the host was ~2 s of a 78-s H200 run's 24 finishes). Nothing to do for a
        job the Controller stopped or suspended meanwhile (a Stop frees the slot itself)."""
        job = self.jobs[job_id]
        if job.state != "running":
            return
        t0 = time.perf_counter()
        self.trainer.suspend(job_id, keep_optimizer=False)
        self.log.add_action("job_finished", t0)
        job.state = "stopped"

    def validate(self, job_ids: list[str]) -> dict[str, tuple[float, float]]:
        """Each job's token-weighted mean validation loss and teacher-forced answer-token
        accuracy (the StepReport metric); jobs share fused forwards of at most `eval_rows` rows."""
        loss = {j: 0.0 for j in job_ids}
        hits = {j: 0 for j in job_ids}
        count = 0
        for batch in self.data.val_batches():
            per_call = max(1, self.eval_rows // int(batch[0].shape[0]))
            for i in range(0, len(job_ids), per_call):
                res = self.trainer.evaluate_tokens({j: batch for j in job_ids[i:i + per_call]})
                for j, r in res.items():
                    loss[j] += r.loss_sum
                    hits[j] += r.correct
            count += r.tokens
        return {j: (loss[j] / count, hits[j] / count) for j in job_ids}
