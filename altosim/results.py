"""Results a person reads: one row per config of a task (its hyperparameters, how far it trained,
why it stopped, its best validation loss and metric, its rank by the task's objective).

Built from the policy core's event/action trace alone, so `alto run`, `alto simulate` and
`alto replay-curves` write the same table. The figure is `altosim.report.plot_losses`, labelled
by config.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from altosim.policy.types import JobFailed, JobFinished, JobSpec, StepReport, Stop, TaskSpec

NO_RESULT = ("failed", "no_fit")  # stop reasons that never make a task's result (altosim/policy/controller.py)
COLUMNS = ("rank_by_objective", "config", "lr", "lora_rank", "alpha", "batch_size", "grad_accum_steps", "dropout",
           "weight_decay", "seed",
           "lr_schedule", "warmup_ratio", "max_grad_norm", "samples_trained", "stop_reason", "stopped_at_samples", "best_val_loss", "best_val_at_samples",
           "val_accuracy", "metric")


def label(job: JobSpec) -> str:
    """A config named by its hyperparameters: 'lr=0.0002 r=16 a=32 b=4' (+ dropout and searched
    training knobs when set; a batch of 2 accumulated 4 times reads b=2x4)."""
    alpha = job.alpha if job.alpha is not None else 2.0 * job.rank
    text = f"lr={job.lr:.4g} r={job.rank} a={alpha:g} b={job.micro_batch}"
    if job.grad_accum_steps > 1:
        text += f"x{job.grad_accum_steps}"
    if job.dropout:
        text += f" do={job.dropout:g}"
    for key, v in (("sched", job.lr_schedule), ("wu", job.warmup_ratio), ("clip", job.max_grad_norm)):
        if v is not None:  # searched knobs only (a task-wide one names no config)
            text += f" {key}={v:g}" if isinstance(v, float) else f" {key}={v}"
    return text


def hyperparameters(job: JobSpec) -> dict[str, Any]:
    return {"lr": job.lr, "lora_rank": job.rank, "alpha": job.alpha if job.alpha is not None else 2.0 * job.rank,
            "batch_size": job.micro_batch, "grad_accum_steps": job.grad_accum_steps, "dropout": job.dropout,
            "weight_decay": job.weight_decay, "seed": job.seed}


def config_table(task: TaskSpec, trace: Iterable[Any], metrics: dict[str, float] | None = None,
                 minimize: bool = True) -> pd.DataFrame:
    """One row per job of `task`, ranked by `metrics` (job -> objective value) when given, else by
    best validation loss (`minimize` says which way is better); jobs without a value, or that
    cannot be a result (failed, no fit, diverged without a snapshot), are unranked and last."""
    seen: dict[str, dict[str, Any]] = {j.job_id: {"samples": 0, "stop": "", "at": None, "best": math.inf,
                                                   "best_at": None, "acc": None} for j in task.jobs}
    for item in trace:
        job_id = getattr(item, "job_id", None)
        if job_id not in seen or getattr(item, "task_id", None) != task.task_id:
            continue
        s = seen[job_id]
        if isinstance(item, StepReport):
            s["samples"] = max(s["samples"], item.samples)
            if item.val_loss is not None and item.val_loss < s["best"]:
                s["best"], s["best_at"], s["acc"] = item.val_loss, item.samples, item.metric
        elif isinstance(item, Stop) and not s["stop"]:
            s["stop"], s["at"] = item.reason, s["samples"]
            # as the Controller's result: a failed, unfit or discarded (diverged, no snapshot) job is none
            s["no_result"] = item.reason in NO_RESULT or (item.reason == "diverging" and not item.restore_best)
        elif isinstance(item, JobFinished) and not s["stop"]:
            s["stop"], s["at"] = "ran to the end", s["samples"]
        elif isinstance(item, JobFailed) and not s["stop"]:
            s["stop"], s["at"], s["no_result"] = f"failed: {item.reason}", s["samples"], True
    rows = []
    for j in task.jobs:
        s = seen[j.job_id]
        schedule, warmup, clip = task.knobs(j)
        rows.append({"config": j.job_id, **hyperparameters(j), "lr_schedule": schedule,
                     "warmup_ratio": warmup, "max_grad_norm": clip,
                     "samples_trained": s["samples"],
                     "stop_reason": s["stop"] or "not started", "stopped_at_samples": s["at"],
                     "best_val_loss": None if math.isinf(s["best"]) else s["best"],
                     "best_val_at_samples": s["best_at"], "val_accuracy": s["acc"],
                     "metric": None if s.get("no_result") else (metrics or {}).get(j.job_id),
                     "_key": s.get("no_result", False)})
    df = pd.DataFrame(rows, columns=[*(c for c in COLUMNS if c != "rank_by_objective"), "_key"])
    key = pd.to_numeric(df["metric" if metrics else "best_val_loss"], errors="coerce").mask(df.pop("_key").astype(bool))
    order = sorted(range(len(df)), key=lambda i: (math.isnan(key[i]), (key[i] if minimize else -key[i])
                                                  if not math.isnan(key[i]) else 0.0, df["config"][i]))
    ranks = pd.Series(pd.NA, index=df.index, dtype="Int64")
    ranks[order] = range(1, len(df) + 1)
    ranks[key.isna()] = pd.NA
    df.insert(0, "rank_by_objective", ranks)
    return df.sort_values(["rank_by_objective", "config"], na_position="last").reset_index(drop=True)


def reports_frame(trace: Iterable[Any]) -> pd.DataFrame:
    """Every StepReport of a trace plus each job's stop reason: what `plot_losses` draws."""
    rows, stops = [], {}
    for item in trace:
        if isinstance(item, StepReport):
            rows.append({"now": item.now, "task_id": item.task_id, "job_id": item.job_id, "step": item.step,
                         "samples": item.samples, "train_loss": item.train_loss, "val_loss": item.val_loss})
        elif isinstance(item, Stop):
            stops[item.job_id] = item.reason
    df = pd.DataFrame(rows, columns=["now", "task_id", "job_id", "step", "samples", "train_loss", "val_loss"])
    df["exit"] = [stops.get(j, "") for j in df["job_id"]]
    return df


def best_line(task: TaskSpec, table: pd.DataFrame, objective: str = "val_loss") -> str:
    """'t1: best lr=0.01 r=4 a=8 b=2 (t1/j001): val loss 1.234 ...' from a ranked table."""
    ranked = table.dropna(subset=["rank_by_objective"])
    if ranked.empty:
        return f"{task.task_id}: no config reported a validation loss"
    top = ranked.iloc[0]
    text = f"{task.task_id}: best {label(task.job(top['config']))} ({top['config']}): val loss {top['best_val_loss']:.4g}"
    if objective != "val_loss" and pd.notna(top["metric"]):
        text += f", {objective} {top['metric']:.4g}"
    return text + f"; {len(table)} configs, {int(table['samples_trained'].sum())} samples trained"
