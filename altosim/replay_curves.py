"""Replay an early-exit policy on loss curves a user brings (`alto replay-curves CURVES.csv`).

The CSV has one row per evaluation point: `config, samples, train_loss, val_loss`, and optional
hyperparameter columns (`lr, rank, alpha, batch_size, dropout, weight_decay, seed`) that the
policies which read them see. Every config's curve must end at the same sample count (the
budget a full run trains). The curves become one task of the simulator, alone on one GPU,
evaluated at the CSV's own sample points, and the policy decides exactly as in `alto simulate`
(time is not modelled here: only samples and decisions are reported). The result: samples
saved, the config the policy keeps, and that config's rank among all configs by their best and
by their final validation loss.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from altosim.errors import InputError, from_validation_error, one_line
from altosim.files import check_columns, read_text
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import LossCurve, PolicyRef, SearchSpace, TaskRecord, WorkloadTrace
from altosim.schemas.limits import MAX_CONFIGS, MAX_SAMPLES

REQUIRED = ("config", "samples", "train_loss", "val_loss")
HYPER = {"lr": float, "rank": int, "alpha": float, "batch_size": int, "dropout": float, "weight_decay": float,
         "seed": int}
DEFAULTS = {"lr": 1e-4, "rank": 16, "alpha": None, "batch_size": 1, "dropout": 0.0, "weight_decay": 0.01, "seed": 0}
MODEL = "SmolLM2-135M"  # a model the cost model knows: replays report samples, not time
TASK = "curves"


@dataclass
class Curves:
    """A CSV's curves as one simulator task: `names` maps job id -> the CSV's config name."""

    task: TaskSpec
    curves: dict[str, LossCurve]
    names: dict[str, str]


def _number(text: str, kind: type, file: str, field: str, line: int) -> Any:
    try:
        value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except (TypeError, ValueError):
        raise InputError(file, field, f"expected {'an integer' if kind is int else 'a number'}, got {one_line(text, 40)!r}",
                         line) from None
    if kind is float and math.isinf(value):
        raise InputError(file, field, "must be finite", line)
    return value


def read_curves(path: str | Path) -> Curves:
    """Parse and check the CSV (InputError naming the file, line and column on any problem)."""
    file = str(path)
    text = read_text(Path(path))
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(c.strip() for c in rows[0]):
        raise InputError(file, "<header>", f"empty file: expected columns {', '.join(REQUIRED)}", 1)
    header = [c.strip() for c in rows[0]]
    check_columns(header, file)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(file, missing[0], f"missing column (have: {', '.join(header)})", 1)
    unknown = [c for c in header if c not in REQUIRED and c not in HYPER]
    if unknown:
        raise InputError(file, unknown[0], f"unknown column; known: {', '.join((*REQUIRED, *HYPER))}", 1)
    points: dict[str, list[tuple[int, float, float]]] = {}
    hyper: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(file, "<row>", f"{len(row)} cells, header has {len(header)}", n)
        rec = dict(zip(header, (c.strip() for c in row)))
        name = rec["config"]
        if not name:
            raise InputError(file, "config", "empty config name", n)
        samples = _number(rec["samples"], int, file, "samples", n)
        train = _number(rec["train_loss"], float, file, "train_loss", n) if rec["train_loss"] else math.nan
        val = _number(rec["val_loss"], float, file, "val_loss", n) if rec["val_loss"] else math.nan
        if not 0 < samples <= MAX_SAMPLES:
            raise InputError(file, "samples", f"must be in [1, {MAX_SAMPLES}], got {one_line(rec['samples'], 40)}", n)
        prev = points.setdefault(name, [])
        if prev and samples <= prev[-1][0]:
            raise InputError(file, "samples", f"config {one_line(name, 60)!r}: samples must increase "
                             f"({samples} after {prev[-1][0]})", n)
        prev.append((samples, train, val))
        hp = {k: _number(rec[k], kind, file, k, n) for k, kind in HYPER.items() if rec.get(k)}
        if bad := next((k for k, v in hp.items() if not math.isfinite(v)), None):
            raise InputError(file, bad, f"must be a finite number, got {one_line(rec[bad], 40)}", n)
        if hyper.setdefault(name, hp) != hp:
            raise InputError(file, next(k for k in HYPER if hyper[name].get(k) != hp.get(k)),
                             f"config {one_line(name, 60)!r} changes its hyperparameters between rows", n)
    if not points:
        raise InputError(file, "<rows>", "no curves: the file has a header only")
    if len(points) > MAX_CONFIGS:
        raise InputError(file, "config", f"{len(points)} configs; at most {MAX_CONFIGS}")
    ends = {name: p[-1][0] for name, p in points.items()}
    budget = max(ends.values())
    short = [name for name, end in ends.items() if end != budget]
    if short:
        raise InputError(file, "samples", f"config {one_line(short[0], 60)!r} ends at {ends[short[0]]} samples, others "
                         f"at {budget}: a replay needs every config's full curve")
    for name, p in points.items():
        if all(math.isnan(v) for _, _, v in p):
            raise InputError(file, "val_loss", f"config {one_line(name, 60)!r} has no validation loss")
    return _as_task(points, hyper, budget, file)


def _as_task(points: dict[str, list[tuple[int, float, float]]], hyper: dict[str, dict[str, Any]], budget: int,
             file: str) -> Curves:
    jobs, curves, names = [], {}, {}
    for i, (name, p) in enumerate(points.items()):
        hp = {**DEFAULTS, **hyper[name]}
        try:  # the same bounds a search space holds its values to
            SearchSpace.model_validate({"lr": [hp["lr"]], "rank": [hp["rank"]], "batch_size": [hp["batch_size"]],
                                        "alpha": None if hp["alpha"] is None else [hp["alpha"]],
                                        "dropout": [hp["dropout"]], "weight_decay": hp["weight_decay"]})
        except ValidationError as e:
            err = from_validation_error(e, file)
            field = err.field.split(".")[0]  # the search-space axis: the CSV column
            raise InputError(file, field, f"config {one_line(name, 60)!r}: {err.problem}") from None
        job_id = f"{TASK}/j{i:03d}"
        jobs.append(JobSpec(job_id, TASK, lr=hp["lr"], rank=hp["rank"], batch_size=hp["batch_size"], alpha=hp["alpha"],
                            dropout=hp["dropout"], weight_decay=hp["weight_decay"], seed=hp["seed"]))
        arr = np.array(p, dtype=np.float64)
        curves[job_id] = LossCurve(lr=hp["lr"], rank=hp["rank"], batch_size=hp["batch_size"], alpha=hp["alpha"],
                                   samples=arr[:, 0], train=arr[:, 1], val=arr[:, 2])
        names[job_id] = name
    first = np.array([s for s, _, _ in next(iter(points.values()))])
    gaps = np.diff(np.concatenate([[0], first]))
    every = int(max(1, gaps.min()))  # the CSV's own evaluation spacing
    task = TaskSpec(TASK, 0.0, MODEL, "curves", 1, tuple(jobs), samples_per_job=budget, eval_every_samples=every)
    return Curves(task, curves, names)


def replay(curves: Curves, early_exit: PolicyRef) -> dict[str, Any]:
    """Run the policy on the curves; samples saved, the chosen config and its ranks."""
    from altosim.simulate import Inputs, simulate
    from altosim.tuning import study_config

    rec = TaskRecord(id=TASK, arrival=0.0, model=MODEL, dataset="curves", gpus=1,
                     search_space={"lr": [1e-4], "rank": [16], "batch_size": [1]},
                     samples_per_job=curves.task.samples_per_job)
    inputs = Inputs(WorkloadTrace(name="curves", synthetic=False, tasks=[rec]), [curves.task], curves.curves,
                    {TASK: None})
    run = simulate(study_config(early_exit), inputs)
    row = run.tasks_df.iloc[0]
    chosen = row["best_job"]
    best = {j: float(np.nanmin(c.val)) for j, c in curves.curves.items()}
    final = {j: float(c.val[~np.isnan(c.val)][-1]) for j, c in curves.curves.items()}
    out = {"policy": early_exit.name, "configs": len(curves.task.jobs), "samples_trained": int(row["samples_trained"]),
           "samples_full": int(row["samples_full"]), "samples_saved": float(row["samples_saved"]),
           "chosen": curves.names.get(chosen) if chosen else None, "chosen_val": row["best_val"]}
    if chosen:
        out["rank_by_best_val"] = 1 + sum(v < best[chosen] for v in best.values())
        out["rank_by_final_val"] = 1 + sum(v < final[chosen] for v in final.values())
        out["best_by_best_val"] = curves.names[min(best, key=lambda j: (best[j], j))]
    stopped = {j.job_id: r.status for j in curves.task.jobs for r in [run.result.jobs.get(j.job_id)] if r is not None}
    out["table"] = pd.DataFrame([{"config": curves.names[j], "status": stopped.get(j, "never run"),
                                  "samples_trained": run.result.jobs[j].samples if j in run.result.jobs else 0,
                                  "best_val": best[j], "final_val": final[j]} for j in curves.curves])
    return out


def summary_lines(res: dict[str, Any]) -> list[str]:
    lines = [f"{res['policy']}: {res['samples_trained']} of {res['samples_full']} samples trained "
             f"({res['samples_saved']:.1%} saved) over {res['configs']} configs"]
    if res["chosen"] is None:
        lines.append("chosen: none (no config kept a result)")
    else:
        lines.append(f"chosen: {res['chosen']} (val {res['chosen_val']:.4g}): rank {res['rank_by_best_val']} of "
                     f"{res['configs']} by best val loss, rank {res['rank_by_final_val']} by final val loss "
                     f"(the best by best val loss: {res['best_by_best_val']})")
    return lines
