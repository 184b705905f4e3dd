"""The runtime's action executor: one Controller job action carried out on the trainer holding the job.

Every runtime path goes through here: a task's `TaskRunner` (the single-process engine, and each
Ray task worker, whose trainer may be a gang of AP ranks) and the AP coordinator's
`parallel.placement.apply_action` on the owning rank. Task-level actions are the engines' own:
StartTask builds a runner (or a worker), FinishTask ends it (`TaskRunner.apply`).
"""

from __future__ import annotations

from typing import Any, Mapping

from altosim.policy.types import Admit, JobSpec, Stop, Suspend

JobAction = Admit | Suspend | Stop


def carry_out(trainer: Any, a: JobAction, spec: JobSpec | None = None, knobs: Mapping[str, Any] | None = None) -> str:
    """Carry out `a` on `trainer` (`spec`: the job's, needed by an Admit); returns what the job is now: running,
    suspended, stopped, discarded (diverged without a snapshot: never a result, never scored),
    dropped (it had failed) or unknown (a Stop of a job never admitted, e.g. one that fits nowhere:
    nothing to free). `knobs`: admit's lr-schedule and clipping arguments
    (`task_runner.train_knobs`)."""
    job = a.job_id
    if isinstance(a, Admit):
        if a.resume and job in trainer and trainer.status(job) == "suspended":
            trainer.resume(job)
        elif spec is None:
            raise ValueError(f"spec: needed to admit {job!r}")
        else:
            trainer.admit(job, rank=spec.rank, alpha=spec.alpha, lr=spec.lr, weight_decay=spec.weight_decay,
                          dropout=spec.dropout, seed=spec.seed, **dict(knobs or {}))
        return "running"
    if isinstance(a, Suspend):
        trainer.suspend(job)
        return "suspended"
    if not isinstance(a, Stop):
        raise ValueError(f"a: not a job action: {a!r}")
    if job not in trainer:
        return "unknown"
    if trainer.status(job) == "failed":
        trainer.drop(job)
        return "dropped"
    if trainer.status(job) == "active":
        # frees the slot; weights stay on the host for the result, the optimizer state is dropped
        # (a stopped job never trains again)
        trainer.suspend(job, keep_optimizer=False)
    if a.restore_best and trainer.has_best(job):
        trainer.restore_best(job)  # into the host copy: no write back into the freed slot
    return "discarded" if a.reason == "diverging" and not a.restore_best else "stopped"
