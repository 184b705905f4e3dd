"""A run folder's event log read back: decisions, completion times, the logged losses as
curves the simulator replays exactly, and the step times the run measured per group.

`alto run` writes events.jsonl flat (a {"meta": ...} line, then each event followed by the
actions it caused); `alto simulate` writes {"event": ..., "actions": [...]} records. Both are read
into the flat form; an action takes the time of the event that caused it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from altosim.errors import InputError, from_validation_error
from altosim.files import check_nesting, check_regular, loads_json, read_text
from altosim.policy.types import JobSpec, TaskSpec, action_from_dict, event_from_dict
from altosim.replay import event_problem
from altosim.schemas import LossCurve, LossTraceSet, RunConfig, load_config
from altosim.schemas.limits import MAX_LOG_SECONDS, MAX_ROWS, Int

EVENT_KINDS = ("task_arrived", "step_report", "job_finished", "job_failed", "tick")
ACTION_KINDS = ("start_task", "admit", "suspend", "stop", "finish_task")


@dataclass
class RunFolder:
    """A run's event log, flat: each event (it has `now`) followed by the actions it caused."""

    folder: Path
    meta: dict[str, Any]
    trace: list[dict[str, Any]]
    protocol: str  # "runtime" (alto run) or "sim" (alto simulate)

    @cached_property
    def tasks(self) -> list[TaskSpec]:
        return [event_from_dict(r).task for r in self.trace if r["kind"] == "task_arrived"]  # type: ignore[union-attr]

    @property
    def device(self) -> str:
        return str(self.meta.get("device") or "sim")


def run_phases(folder: str | Path) -> dict[str, float]:
    """Host seconds per phase of a run (`<folder>/summary.csv`, columns `<phase>_s`, as `alto run`
    writes it); {} when the run has no summary."""
    import csv

    p = Path(folder) / "summary.csv"
    if not p.is_file():
        return {}
    rows = list(csv.DictReader(read_text(p).splitlines()))
    if not rows:
        return {}
    out = {}
    for k, v in rows[0].items():
        if k and k.endswith("_s") and k != "wall_s" and v not in ("", None):
            try:
                x = float(v)
            except ValueError:
                x = math.nan
            if not 0 <= x <= MAX_LOG_SECONDS:  # NaN is in no range
                raise InputError(str(p), k, f"expected seconds in [0, {MAX_LOG_SECONDS:.0e}], got {v!r}", 2)
            out[k[:-2]] = x
    return out


def read_run(folder: str | Path, flag: str = "--run") -> RunFolder:
    """Read and check `<folder>/events.jsonl` (given as `flag`); bad input is one InputError naming the line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(str(folder), flag, "no such run folder")
    path = folder / "events.jsonl"
    if not path.exists():
        raise InputError(str(folder), "events.jsonl", "missing: not a folder written by `alto run`")
    check_regular(path)  # a folder or a FIFO: say which
    lines = [(i, s) for i, s in enumerate(read_text(path).splitlines(), start=1) if s.strip()]
    recs = []
    for i, s in lines:
        check_nesting(s, f"{path}: line {i}")
        try:
            recs.append((i, json.loads(s)))
        except json.JSONDecodeError as e:
            raise InputError(str(path), "<json>", str(e), i) from None
        except ValueError as e:  # an integer of more than 4300 digits
            raise InputError(str(path), "<json>", str(e), i) from None
    if not recs or not isinstance(recs[0][1], dict) or not isinstance(recs[0][1].get("meta"), dict):
        raise InputError(str(path), "meta", "line 1 must be a {\"meta\": {...}} header", 1)
    meta, trace, protocol = recs[0][1]["meta"], [], "runtime"
    jobs_of: dict[str, set[str]] = {}  # the tasks that arrived so far and their jobs (event_problem)
    for i, rec in recs[1:]:
        if isinstance(rec, dict) and "event" in rec:  # alto simulate: {"event": ..., "actions": [...]}
            protocol = "sim"
            if not isinstance(rec.get("actions", []), list):
                raise InputError(str(path), "actions", "expected a list of actions", i)
            items = [rec["event"], *rec.get("actions", [])]
        else:
            items = [rec]
        for d in items:
            try:
                kind = d.get("kind") if isinstance(d, dict) else None
                if kind in EVENT_KINDS:  # held to what `alto replay` holds them to (a time of null was a traceback)
                    problem = event_problem(event_from_dict(d), jobs_of)
                    if problem:
                        field, _, why = problem.partition(": ")
                        raise InputError(str(path), field, why, i)
                elif kind in ACTION_KINDS:
                    action_from_dict(d)
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except InputError:
                raise
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(str(path), "kind" if "kind" in str(e) else "<record>", str(e), i) from None
            trace.append(d)
    if not any(d["kind"] == "task_arrived" for d in trace):
        raise InputError(str(path), "task_arrived", "the log has no task arrivals")
    return RunFolder(folder, meta, trace, protocol)


def run_val_rows(folder: Path) -> int:
    """Validation examples per evaluation, from <run>/run_args.json (experiments/fidelity.py writes
    it; `alto run --n-val` is not in the log); 0 when unknown."""
    p = folder / "run_args.json"
    if not p.is_file():
        return 0
    data = loads_json(read_text(p), str(p))
    if not isinstance(data, dict):
        raise InputError(str(p), "<root>", f"expected a JSON object of the run's arguments, got {type(data).__name__}")
    try:
        return _RunArgs.model_validate(data).n_val
    except ValidationError as e:
        raise from_validation_error(e, str(p)) from None


class _RunArgs(BaseModel):
    """The part of run_args.json a replay reads: `alto run --n-val`, bounded as the flag is."""

    model_config = ConfigDict(extra="ignore")
    n_val: Annotated[Int, Field(ge=0, le=MAX_ROWS)] = 0


def run_config_for(folder: Path) -> RunConfig | None:
    """The config a run folder carries (config.json / config.yaml, as experiments/fidelity.py writes)."""
    for name in ("config.json", "config.yaml", "config.yml"):
        if (folder / name).is_file():
            return load_config(folder / name)
    return None


def timed(trace: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(time, item) pairs: an action takes the time of the event that caused it."""
    out, now = [], 0.0
    for d in trace:
        now = float(d.get("now", now))
        out.append((now, d))
    return out


def decisions(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in trace if d["kind"] in ACTION_KINDS]


def completion_times(trace: list[dict[str, Any]]) -> dict[str, float]:
    """Task -> time of the event whose actions finished it."""
    return {d["task_id"]: t for t, d in timed(trace) if d["kind"] == "finish_task"}


# ------------------------------------------------------------------------------ inputs from the run
def job_curves(run: RunFolder) -> dict[str, LossCurve]:
    """Job -> its logged StepReports as a LossCurve (as experiments/e2e_sweep.py builds traces)."""
    reps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in run.trace:
        if d["kind"] == "step_report":
            reps[d["job_id"]].append(d)
    nan = lambda x: math.nan if x is None else float(x)  # noqa: E731
    out = {}
    for task in run.tasks:
        for j in task.jobs:
            rs = reps.get(j.job_id)
            if rs:
                out[j.job_id] = LossCurve(
                    lr=j.lr, rank=j.rank, batch_size=j.batch_size, alpha=j.alpha, samples=[r["samples"] for r in rs],
                    train=[r["train_loss"] for r in rs], val=[nan(r.get("val_loss")) for r in rs],
                    metric=[nan(r.get("metric")) for r in rs], steps=[r["step"] for r in rs])
    return out


def loss_traces(run: RunFolder) -> dict[str, LossTraceSet]:
    """One LossTraceSet per task from the run's StepReports (real loss trajectories to keep)."""
    curves = job_curves(run)
    return {t.task_id: LossTraceSet(
        name=f"{t.model}__{t.task_id}", model=t.model, dataset=t.dataset, synthetic=False,
        source=f"StepReports of {run.folder}", curves=[curves[j.job_id] for j in t.jobs if j.job_id in curves],
        meta={"device": run.device}) for t in run.tasks if any(j.job_id in curves for j in t.jobs)}


@dataclass
class ReportedCurve:
    """A job's logged reports, replayed exactly: at a logged step the simulator gets the logged
    train loss, val loss and metric; elsewhere (a job the replay runs longer) the LossCurve's
    interpolation, constant past its last point."""

    curve: LossCurve
    total: int
    _at: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self._at = {int(s): i for i, s in enumerate(self.curve.steps)}

    def _i(self, f: float) -> int | None:
        return self._at.get(round(f * self.total))

    def train_mean(self, f0: float, f1: float) -> float:
        i = self._i(f1)
        return float(self.curve.train[i]) if i is not None else self.curve.train_mean(f0, f1)

    def val_at(self, f: float) -> float | None:
        i = self._i(f)
        v = float(self.curve.val[i]) if i is not None else self.curve.val_at(f)
        return None if math.isnan(v) else v

    def metric_at(self, f: float) -> float | None:
        if self.curve.metric is None:
            return None
        i = self._i(f)
        return float(self.curve.metric[i]) if i is not None else self.curve.metric_at(f)


def flat_curve(job: JobSpec) -> LossCurve:
    """For a job the run never reported (admitted in the replay only): a flat, unremarkable curve."""
    return LossCurve(lr=job.lr, rank=job.rank, batch_size=job.batch_size, alpha=job.alpha,
                     samples=[1.0], train=[math.inf], val=[math.inf])


def measured_step_times(run: RunFolder) -> dict[tuple[str, frozenset[str]], tuple[float, int]]:
    """(task, running jobs) -> (seconds, fused steps) spent in that group composition.

    A task's fused-step index is known at each StepReport (the job's step plus the index at which
    it joined); between two consecutive indices the group was constant, so the wall time between
    them over the steps taken is that composition's step time (evaluation time included)."""
    return _walk(run)[0]


def failure_steps(run: RunFolder) -> dict[str, tuple[int, str]]:
    """Job -> (its step number that failed, reason), for each JobFailed of the log. The runtime
    sends JobFailed after the reports of the fused step that failed; without such a report the
    step is estimated from the time since the task's last report at its mean step time."""
    return _walk(run)[1]


def _walk(run: RunFolder) -> tuple[dict[tuple[str, frozenset[str]], tuple[float, int]], dict[str, tuple[int, str]]]:
    spent: dict[tuple[str, frozenset[str]], list[float]] = defaultdict(lambda: [0.0, 0])
    active: dict[str, set[str]] = defaultdict(set)
    idx: dict[str, int] = {}
    joined: dict[str, int] = {}  # job -> task index minus job step while running
    paused: dict[str, int] = {}  # job -> its step when suspended
    anchor: dict[str, tuple[float, int, frozenset[str]]] = {}
    failed: dict[str, tuple[int, str]] = {}
    for now, d in timed(run.trace):
        k, tid, job = d["kind"], d.get("task_id"), d.get("job_id")
        if k == "step_report" and job in joined:
            i = joined[job] + d["step"]
            t0, i0, comp = anchor[tid]
            if i > i0:
                s = spent[(tid, comp)]
                s[0] += now - t0
                s[1] += i - i0
                anchor[tid] = (now, i, comp)
            idx[tid] = max(idx.get(tid, 0), i)
        elif k == "start_task":
            idx[tid] = 0
            anchor[tid] = (now, 0, frozenset())
        elif k == "admit":
            joined[job] = idx.get(tid, 0) - (paused.get(job, 0) if d.get("resume") else 0)
            active[tid].add(job)
        elif k == "suspend" and job in joined:
            paused[job] = idx.get(tid, 0) - joined[job]
            active[tid].discard(job)
        elif k == "job_failed" and job in joined and tid in anchor:
            t0, i0, _ = anchor[tid]
            secs = sum(v[0] for (t, _c), v in spent.items() if t == tid)
            steps = sum(v[1] for (t, _c), v in spent.items() if t == tid)
            i = i0 if now == t0 and i0 > 0 else i0 + max(1, round((now - t0) * steps / secs) if secs > 0 else 1)
            failed[job] = (i - joined[job], d.get("reason", "failed"))
            active[tid].discard(job)
        elif k in ("stop", "job_finished"):
            active[tid].discard(job)
        if tid in anchor and k in ACTION_KINDS + ("job_finished", "job_failed"):
            t0, i0, _ = anchor[tid]
            anchor[tid] = (t0, i0, frozenset(active[tid]))
    return {key: (v[0], int(v[1])) for key, v in spent.items()}, failed


def job_intervals(trace: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(task, job, start, end): each stretch a job spent in its task's running group."""
    open_: dict[str, tuple[str, float]] = {}
    out = []
    for now, d in timed(trace):
        k, job = d["kind"], d.get("job_id")
        if k == "admit":
            open_.setdefault(job, (d["task_id"], now))
        elif k in ("suspend", "stop", "job_finished", "job_failed") and job in open_:
            tid, t0 = open_.pop(job)
            out.append((tid, job, t0, now))
        elif k == "finish_task":
            for j in [j for j, (tid, _) in open_.items() if tid == d["task_id"]]:
                out.append((d["task_id"], j, open_.pop(j)[1], now))
    return out
