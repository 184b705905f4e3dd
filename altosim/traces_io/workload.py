"""Workload traces as `.json` (header fields, then one task per line) or `.csv` (one row per task,
`search_space` as JSON, optional first line `# alto-workload {name, description, synthetic,
source, meta}`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from altosim.errors import InputError, from_validation_error
from altosim.schemas import TaskRecord, WorkloadTrace
from altosim.files import atomic_write, check_columns, loads_json, read_text


_WORKLOAD_HEAD = "# alto-workload "
_TASK_COLUMNS = ["id", "arrival", "model", "dataset", "gpus", "samples_per_job",
                 "eval_every_samples", "seq_len", "loss_trace", "duration_s", "search_space", "objective"]
_OPTIONAL_COLUMNS = ["rigid", "model_shape"]  # written only when some task sets them
_JSON_COLUMNS = ("search_space", "objective")


def read_workload(path: str | Path) -> WorkloadTrace:
    """A workload trace from `.json` or `.csv` (see the module doc for both formats)."""
    path = Path(path)
    if path.suffix == ".csv":
        return _read_workload_csv(path)
    data = loads_json(read_text(path), str(path))  # syntax, nesting, a key given twice: one line
    try:
        return WorkloadTrace.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e, str(path)) from None


def _read_workload_csv(path: Path) -> WorkloadTrace:
    try:
        return _parse_workload_csv(path)
    except csv.Error as e:  # e.g. a field over the csv module's 128 KB limit, a NUL byte
        raise InputError(str(path), "<csv>", str(e)) from None
    except RecursionError:
        raise InputError(str(path), "search_space", "nested too deeply") from None


def _parse_workload_csv(path: Path) -> WorkloadTrace:
    lines = read_text(path).splitlines(keepends=True)
    head: dict[str, Any] = {"name": path.stem, "synthetic": False, "source": str(path)}
    skip = 0
    if lines and lines[0].startswith(_WORKLOAD_HEAD):
        head = loads_json(lines[0][len(_WORKLOAD_HEAD):], str(path), "<header>", 1)
        if not isinstance(head, dict) or "tasks" in head:
            raise InputError(str(path), "<header>", "expected a JSON object without tasks", 1)
        skip = 1
    reader = csv.reader(lines[skip:])
    header = next(reader, None)
    if header is None:
        raise InputError(str(path), "<header>", "empty file: no column header", skip + 1)
    check_columns(header, str(path), skip + 1)
    missing = [c for c in ("id", "arrival", "model", "dataset", "gpus") if c not in header]
    if missing:
        raise InputError(str(path), missing[0], "missing column", skip + 1)
    tasks = []
    for row in reader:
        line = skip + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(str(path), "<row>", f"{len(row)} cells, header has {len(header)}", line)
        rec: dict[str, Any] = {k: v for k, v in zip(header, row) if v != ""}
        for col in _JSON_COLUMNS:
            if col in rec:
                rec[col] = loads_json(rec[col], str(path), col, line)
        if rec.get("model_shape", "").lstrip().startswith("{"):  # a shape as JSON (else a config.json path)
            rec["model_shape"] = loads_json(rec["model_shape"], str(path), "model_shape", line)
        try:
            tasks.append(TaskRecord.model_validate(rec))
        except ValidationError as e:
            raise from_validation_error(e, str(path), line) from None
    try:
        return WorkloadTrace.model_validate({**head, "tasks": tasks})
    except ValidationError as e:
        raise from_validation_error(e, str(path)) from None


def workload_csv_text(trace: WorkloadTrace) -> str:
    buf = io.StringIO()
    head = trace.model_dump(mode="json", exclude={"tasks"})
    buf.write(_WORKLOAD_HEAD + json.dumps(head, sort_keys=True) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    columns = _TASK_COLUMNS + [c for c in _OPTIONAL_COLUMNS
                               if any(getattr(t, c) != TaskRecord.model_fields[c].default for t in trace.tasks)]
    w.writerow(columns)
    for i, t in enumerate(trace.tasks):
        extra = sorted(t.run_fields_set())
        if extra:  # no CSV column holds them: write JSON rather than lose them
            raise ValueError(f"tasks[{i}].{extra[0]}: `alto run` task fields have no CSV column; write the workload as JSON")
        d = t.model_dump(mode="json")
        space = d["search_space"] or {}  # a rigid task has none
        if space.get("grad_accum_steps") == 1:  # left out at their defaults, as in JSON
            del space["grad_accum_steps"]
        for k in ("lr_schedule", "warmup_ratio", "max_grad_norm"):
            if k in space and space[k] is None:
                del space[k]
        for col in _JSON_COLUMNS:
            d[col] = "" if d[col] is None else json.dumps(d[col], separators=(",", ":"))
        if isinstance(d.get("model_shape"), dict):
            d["model_shape"] = json.dumps(d["model_shape"], separators=(",", ":"))
        w.writerow(["" if d[c] is None else d[c] for c in columns])
    return buf.getvalue()


def write_workload(trace: WorkloadTrace, path: str | Path) -> None:
    """Write `.csv` or (any other suffix) JSON, atomically."""
    path = Path(path)
    if path.suffix == ".csv":
        text = workload_csv_text(trace)
    else:
        text = workload_json_text(trace)
    atomic_write([(path, text)])


def workload_json_text(trace: WorkloadTrace) -> str:
    """Pretty header, then one task per line (readable diffs, small files for large traces)."""
    head = trace.model_dump(mode="json", exclude={"tasks"})
    parts = [f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in head.items()]
    tasks = ",\n  ".join(t.model_dump_json(exclude=_defaults_left_out(t)) for t in trace.tasks)
    return "{\n" + ",\n".join(parts) + f',\n "tasks": [\n  {tasks}\n ]\n}}\n'


def _defaults_left_out(t: TaskRecord) -> dict:
    """What a task's JSON leaves out at its defaults: the `alto run`-only fields, the default
    objective, the search space's unset sampler fields and unit gradient accumulation (so
    workloads written before these existed, the committed default among them, are written byte
    for byte as they were)."""
    out: dict = {k: True for k in set(t.RUN_FIELDS) - t.run_fields_set()}
    if t.objective == type(t).model_fields["objective"].default_factory():
        out["objective"] = True
    out.update((k, True) for k in ("rigid", "model_shape") if getattr(t, k) == type(t).model_fields[k].default)
    if t.search_space is None:  # a rigid task: nothing to tune, nothing to sample or replay
        out.update((k, True) for k in ("search_space", "samples_per_job", "eval_every_samples", "loss_trace"))
        return out
    unset = {k for k in ("sampler", "n_configs", "sampler_seed") if getattr(t.search_space, k) is None}
    if t.search_space.grad_accum_steps == 1:
        unset.add("grad_accum_steps")
    unset |= {k for k in ("lr_schedule", "warmup_ratio", "max_grad_norm") if getattr(t.search_space, k) is None}
    if unset:
        out["search_space"] = unset
    return out
