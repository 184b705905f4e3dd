"""`alto replay`: feed a run's event log back through a fresh Controller, compare decisions.

The log's first line holds what the Controller was built with (policy names, each task's
worst-case duration and memory model), so a replay needs neither the cost model nor the traces:
the decisions must follow from the events alone (ARCHITECTURE rule 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from altosim.errors import InputError
from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.memory import MemoryModel
from altosim.policy.types import ACTION_KINDS, EVENT_KINDS, event_from_dict, to_dict


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
            out.append((i, rec["event"], list(rec.get("actions", []))))
        elif rec.get("kind") in EVENT_KINDS:
            out.append((i, rec, []))
        elif rec.get("kind") in ACTION_KINDS and out:
            out[-1][2].append(rec)
        else:
            raise InputError(file, f"line {i}", "expected an event or an action (a record with a known \"kind\")")
    return out


def replay_records(records: list[Any], file: str = "<log>") -> ReplayResult:
    if not records or not isinstance(records[0], dict) or not isinstance(records[0].get("meta"), dict):
        raise InputError(file, "line 1", "expected a {\"meta\": ...} header written by `alto simulate` or `alto run`")
    meta = records[0]["meta"]
    missing = [k for k in ("controller", "durations") if k not in meta]
    if missing:
        raise InputError(file, f"line 1.meta.{missing[0]}", "missing: this log was written without the Controller's "
                         "settings (an `alto run` older than the replayable header); rerun to get a replayable log")
    try:
        ctl = controller_from_meta(meta)
    except (TypeError, ValueError, AttributeError) as e:
        raise InputError(file, "line 1.meta", f"cannot rebuild the Controller: {e}") from None
    mismatches = []
    n_actions = 0
    steps = _grouped(records, file)
    for i, event, logged in steps:
        try:
            ev = event_from_dict(event)
            got = json.loads(json.dumps([to_dict(a) for a in ctl.on_event(ev)]))  # tuples -> lists
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(file, f"line {i}.event", f"{type(e).__name__}: {e}") from None
        n_actions += len(got)
        if got != logged:
            mismatches.append((i, logged, got))
    return ReplayResult(len(steps), n_actions, mismatches)


def replay_file(path: str | Path) -> ReplayResult:
    from altosim.report import read_jsonl

    path = Path(path)
    if not path.exists():
        raise InputError(str(path), "<file>", "no such file")
    try:
        records = read_jsonl(path)
    except ValueError as e:
        raise InputError(str(path), "<json>", str(e)) from None
    return replay_records(records, str(path))
