"""`alto replay`: feed a run's event log back through a fresh Controller, compare decisions.

The log's first line holds what the Controller was built with (policy names, each task's
worst-case duration and memory model), so a replay needs neither the cost model nor the traces:
the decisions must follow from the events alone (ARCHITECTURE rule 1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from altosim.errors import InputError, from_validation_error
from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.memory import MemoryModel
from altosim.ids import id_problem
from altosim.schemas.limits import MAX_LOG_SECONDS
from altosim.policy.types import ACTION_KINDS, EVENT_KINDS, StepReport, TaskArrived, TasksAnnounced, Tick, event_from_dict, to_dict


@dataclass
class ReplayResult:
    events: int
    actions: int
    mismatches: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]]  # (line, logged, replayed)

    @property
    def identical(self) -> bool:
        return not self.mismatches


def controller_from_meta(meta: dict[str, Any]) -> Controller:
    durations = meta["durations"]
    memory = {k: MemoryModel(**v) for k, v in meta.get("memory", {}).items()}
    return Controller(ControllerConfig(**meta["controller"]),
                      duration_for=lambda t: durations[t.task_id],
                      memory_for=lambda t: memory.get(t.task_id))


def _grouped(records: list[Any], file: str) -> list[tuple[int, dict[str, Any], list[Any]]]:
    """(line, event, logged actions) per event. `alto simulate` writes one {"event", "actions"}
    record per event; `alto run` writes events and actions as they happened, one per line, each
    action after the event that caused it."""
    out: list[tuple[int, dict[str, Any], list[Any]]] = []
    for i, rec in enumerate(records[1:], start=2):
        if not isinstance(rec, dict):
            raise InputError(file, f"line {i}", f"expected a JSON object, got {type(rec).__name__}")
        if "event" in rec:
            if not isinstance(rec["event"], dict) or not isinstance(rec.get("actions", []), list):
                raise InputError(file, f"line {i}", "expected {\"event\": {...}, \"actions\": [...]}")
            out.append((i, rec["event"], list(rec.get("actions", []))))
        elif rec.get("kind") in EVENT_KINDS:
            out.append((i, rec, []))
        elif rec.get("kind") in ACTION_KINDS and out:
            out[-1][2].append(rec)
        else:
            raise InputError(file, f"line {i}", "expected an event or an action (a record with a known \"kind\")")
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def event_problem(ev: Any, jobs_of: dict[str, set[str]]) -> str | None:
    """Why an event cannot come from a real run (a replay of it would prove nothing), or None, as
    "<field>: <problem>". Records each arriving task's jobs in `jobs_of`. Every reader of event logs
    (replay, check-fidelity, profile-from-run) holds each event to it."""
    if not _number(ev.now) or not 0 <= ev.now <= MAX_LOG_SECONDS:  # NaN is in no range
        return f"now: expected a time in [0, {MAX_LOG_SECONDS:.0e}] seconds, got {ev.now!r}"
    if isinstance(ev, TaskArrived):
        tid = ev.task.task_id
        problem = id_problem(tid)
        if problem:
            return f"task_id: {problem}"
        if tid in jobs_of:
            return f"task {tid!r} arrives twice"
        jobs_of[tid] = {j.job_id for j in ev.task.jobs}
        return None
    if isinstance(ev, Tick):
        return None
    if isinstance(ev, TasksAnnounced):  # tasks still to arrive: each id must be well formed
        for t in ev.tasks:
            problem = id_problem(t.task_id)
            if problem:
                return f"tasks.task_id: {problem}"
        return None
    task_id = ev.task_id
    if not isinstance(task_id, str) or task_id not in jobs_of:
        return f"task_id: task {task_id!r} never arrived earlier in the log"
    if not isinstance(ev.job_id, str) or ev.job_id not in jobs_of[task_id]:
        return f"job_id: task {task_id!r} has no job {ev.job_id!r}"
    if isinstance(ev, StepReport):
        for name in ("step", "samples"):
            v = getattr(ev, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                return f"{name}: expected an integer >= 0, got {v!r}"
        for name in ("train_loss", "val_loss", "metric"):
            v = getattr(ev, name, None)
            if v is not None and not _number(v):
                return f"{name}: expected a number, got {v!r}"
    return None


def replay_records(records: list[Any], file: str = "<log>") -> ReplayResult:
    if not records or not isinstance(records[0], dict) or not isinstance(records[0].get("meta"), dict):
        raise InputError(file, "line 1", "expected a {\"meta\": ...} header written by `alto simulate` or `alto run`")
    meta = records[0]["meta"]
    missing = [k for k in ("controller", "durations") if k not in meta]
    if missing:
        raise InputError(file, f"line 1.meta.{missing[0]}", "missing: this log was written without the Controller's "
                         "settings (an `alto run` older than the replayable header); rerun to get a replayable log")
    if isinstance(meta["controller"], dict):  # each field's type, named (the Controller compares them later)
        from pydantic import TypeAdapter, ValidationError

        try:
            TypeAdapter(ControllerConfig).validate_python(meta["controller"])
        except ValidationError as e:
            raise from_validation_error(e, file, prefix="line 1.meta.controller") from None
    try:
        ctl = controller_from_meta(meta)
    except (TypeError, ValueError, AttributeError, ArithmeticError) as e:
        raise InputError(file, "line 1.meta", f"cannot rebuild the Controller: {e}") from None
    mismatches = []
    n_actions = 0
    steps = _grouped(records, file)
    jobs_of: dict[str, set[str]] = {}  # the tasks that arrived so far and their jobs
    for i, event, logged in steps:
        try:
            ev = event_from_dict(event)
            problem = event_problem(ev, jobs_of)
            if problem:
                raise InputError(file, f"line {i}.event", problem)
            got = json.loads(json.dumps([to_dict(a) for a in ctl.on_event(ev)]))  # tuples -> lists
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
            raise InputError(file, f"line {i}.event", f"{type(e).__name__}: {e}") from None
        n_actions += len(got)
        if got != logged:
            mismatches.append((i, logged, got))
    return ReplayResult(len(steps), n_actions, mismatches)


def replay_file(path: str | Path) -> ReplayResult:
    from altosim.files import check_nesting, read_text

    path = Path(path)
    text = read_text(path)  # missing, unreadable, not UTF-8: one line naming the file
    records = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        check_nesting(line, f"{path}: line {i}")
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InputError(str(path), f"line {i}", f"invalid JSON: {e.msg}") from None
        except ValueError as e:  # an integer of more than 4300 digits
            raise InputError(str(path), f"line {i}", f"invalid JSON: {e}") from None
    return replay_records(records, str(path))
