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
from altosim.policy.types import event_from_dict, to_dict


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


def replay_records(records: list[dict[str, Any]], file: str = "<log>") -> ReplayResult:
    if not records or "meta" not in records[0]:
        raise InputError(file, "line 1", "expected a {\"meta\": ...} header written by `alto simulate`")
    ctl = controller_from_meta(records[0]["meta"])
    mismatches = []
    n_actions = 0
    for i, rec in enumerate(records[1:], start=2):
        try:
            ev = event_from_dict(rec["event"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(file, f"line {i}.event", str(e)) from None
        got = json.loads(json.dumps([to_dict(a) for a in ctl.on_event(ev)]))  # tuples -> lists
        n_actions += len(got)
        if got != rec.get("actions", []):
            mismatches.append((i, rec.get("actions", []), got))
    return ReplayResult(len(records) - 1, n_actions, mismatches)


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
