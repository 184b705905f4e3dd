"""Readers and writers for workload traces, loss traces and cost profiles.

Every reader turns bad input into one `InputError` naming the file, the CSV line (header = line
1) and the field; every writer is atomic (temp file in the same folder + os.replace), so an error
never leaves a partial file behind. Formats:

- workload: `.json` (the WorkloadTrace model) or `.csv` (one row per task, `search_space` as JSON;
  an optional first line `# alto-workload {json}` carries name, description, synthetic, source,
  meta).
- loss traces: `<name>.csv` or `<name>.csv.gz` with columns lr, rank, batch_size, alpha, step,
  samples, train_loss, val_loss, metric (one row per logged step; val_loss/metric empty where not
  evaluated, train_loss may be nan/inf after a divergence) plus a required `<name>.meta.json`
  sidecar (name, model, dataset, synthetic, source, and how/when it was made).
- cost profiles: `.csv` with the CostRecord columns, optional `<stem>.meta.json` sidecar
  (device, date, synthetic, source).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from altosim.errors import InputError, from_validation_error
from altosim.schemas import (
    ANALYTIC, DEFAULT, CostProfile, CostRecord, LossCurve, LossTraceSet, RunConfig, TaskRecord, WorkloadTrace,
)

# ------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------


def atomic_write(files: list[tuple[Path, str | bytes]]) -> None:
    """Write all files, or none of them: contents go to temp files first, then os.replace each."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode()
    except FileNotFoundError:
        raise InputError(str(path), "<file>", "no such file") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(str(path), "<file>", f"cannot read: {e}") from None


def _json_file(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(path), "<json>", e.msg, e.lineno) from None


# ------------------------------------------------------------------------------------------
# workload traces
# ------------------------------------------------------------------------------------------

_WORKLOAD_HEAD = "# alto-workload "
_TASK_COLUMNS = ["id", "arrival", "model", "dataset", "gpus", "samples_per_job",
                 "eval_every_samples", "seq_len", "loss_trace", "duration_s", "search_space"]


def read_workload(path: str | Path) -> WorkloadTrace:
    """A workload trace from `.json` or `.csv` (see the module doc for both formats)."""
    path = Path(path)
    if path.suffix == ".csv":
        return _read_workload_csv(path)
    text = _read_text(path)
    try:
        return WorkloadTrace.model_validate_json(text)
    except ValidationError as e:
        if e.errors()[0]["type"] == "json_invalid":
            try:
                json.loads(text)
            except json.JSONDecodeError as je:
                raise InputError(str(path), "<json>", je.msg, je.lineno) from None
        raise from_validation_error(e, str(path)) from None


def _read_workload_csv(path: Path) -> WorkloadTrace:
    lines = _read_text(path).splitlines(keepends=True)
    head: dict[str, Any] = {"name": path.stem, "synthetic": False, "source": str(path)}
    skip = 0
    if lines and lines[0].startswith(_WORKLOAD_HEAD):
        try:
            head = json.loads(lines[0][len(_WORKLOAD_HEAD):])
        except json.JSONDecodeError as e:
            raise InputError(str(path), "<header>", f"invalid JSON: {e.msg}", 1) from None
        if not isinstance(head, dict) or "tasks" in head:
            raise InputError(str(path), "<header>", "expected a JSON object without tasks", 1)
        skip = 1
    reader = csv.reader(lines[skip:])
    header = next(reader, None)
    if header is None:
        raise InputError(str(path), "<header>", "empty file: no column header", skip + 1)
    missing = [c for c in ("id", "arrival", "model", "dataset", "gpus", "samples_per_job",
                           "search_space") if c not in header]
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
        if "search_space" in rec:
            try:
                rec["search_space"] = json.loads(rec["search_space"])
            except json.JSONDecodeError as e:
                raise InputError(str(path), "search_space", f"invalid JSON: {e.msg}", line) from None
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
    w.writerow(_TASK_COLUMNS)
    for t in trace.tasks:
        d = t.model_dump(mode="json")
        d["search_space"] = json.dumps(d["search_space"], separators=(",", ":"))
        w.writerow(["" if d[c] is None else d[c] for c in _TASK_COLUMNS])
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
    tasks = ",\n  ".join(t.model_dump_json() for t in trace.tasks)
    return "{\n" + ",\n".join(parts) + f',\n "tasks": [\n  {tasks}\n ]\n}}\n'



# ------------------------------------------------------------------------------------------
# loss traces
# ------------------------------------------------------------------------------------------

LOSS_COLUMNS = ["lr", "rank", "batch_size", "alpha", "step", "samples", "train_loss", "val_loss", "metric"]
_LOSS_REQUIRED = ["lr", "rank", "batch_size", "step", "samples", "train_loss", "val_loss"]


class _LossMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    model: str
    dataset: str
    synthetic: bool
    source: str = ""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def loss_meta_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(_stem(path) + ".meta.json")


def _column(df: pd.DataFrame, col: str, path: Path, *, required: bool, integer: bool = False,
            positive: bool = False, nonneg: bool = False, finite: bool = False) -> np.ndarray:
    """Numeric column with vectorized checks; the first bad row becomes an InputError.

    Empty cells read as NaN: an error where `required`, else "not evaluated" (val, metric) or a
    diverged run (train). Line numbers count the header as line 1.
    """
    raw = df[col]
    checks = []
    if pd.api.types.is_numeric_dtype(raw):
        vals = raw.to_numpy(dtype=np.float64)
    else:  # some cell is not a number: find it
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        text = raw.astype(str).str.strip().str.lower()
        checks.append((raw.notna().to_numpy() & np.isnan(vals) & (text != "nan").to_numpy(), "not a number"))
    ok = ~np.isnan(vals)
    if required:
        checks.append((~ok, "missing value"))
    if finite:
        checks.append((ok & ~np.isfinite(vals), "must be finite"))
    if integer:
        with np.errstate(invalid="ignore"):
            checks.append((ok & (vals != np.round(vals)), "must be an integer"))
    if positive:
        checks.append((ok & ~(vals > 0), "must be > 0"))
    if nonneg:
        checks.append((ok & (vals < 0), "must be >= 0"))
    for mask, problem in checks:
        idx = np.flatnonzero(mask)
        if len(idx):
            i = int(idx[0])
            got = "" if pd.isna(raw.iloc[i]) else f" (got {raw.iloc[i]!r})"
            raise InputError(str(path), col, problem + got, i + 2)
    return vals


def read_loss_traces(path: str | Path) -> LossTraceSet:
    """One loss-trace set from `<name>.csv[.gz]` + `<name>.meta.json` (see module doc)."""
    path = Path(path)
    meta_path = loss_meta_path(path)
    if not meta_path.exists():
        raise InputError(str(meta_path), "<file>", "missing provenance sidecar "
                         "(name, model, dataset, synthetic, source) for " + path.name)
    try:
        meta = _LossMeta.model_validate(_json_file(meta_path))
    except ValidationError as e:
        raise from_validation_error(e, str(meta_path)) from None
    text = _read_text(path)
    try:
        df = pd.read_csv(io.StringIO(text), skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(str(path), "<csv>", " ".join(str(e).split())) from None
    for col in _LOSS_REQUIRED:
        if col not in df.columns:
            raise InputError(str(path), col, "missing column", 1)
    if len(df) == 0:
        raise InputError(str(path), "<rows>", "no data rows")
    lr = _column(df, "lr", path, required=True, positive=True, finite=True)
    rank = _column(df, "rank", path, required=True, integer=True, positive=True, finite=True)
    batch = _column(df, "batch_size", path, required=True, integer=True, positive=True, finite=True)
    alpha = (_column(df, "alpha", path, required=False, positive=True, finite=True)
             if "alpha" in df.columns else np.full(len(df), np.nan))
    step = _column(df, "step", path, required=True, integer=True, nonneg=True, finite=True)
    samples = _column(df, "samples", path, required=True, nonneg=True, finite=True)
    train = _column(df, "train_loss", path, required=False)
    val = _column(df, "val_loss", path, required=False)
    metric = (_column(df, "metric", path, required=False)
              if "metric" in df.columns else None)
    keys = pd.DataFrame({"lr": lr, "rank": rank, "b": batch, "a": alpha})
    group = keys.groupby(["lr", "rank", "b", "a"], sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(group, kind="stable")
    g, same = group[order], None
    same = g[1:] == g[:-1]
    for arr, col in ((samples, "samples"), (step, "step")):
        bad = np.flatnonzero(same & (arr[order][1:] <= arr[order][:-1]))
        if len(bad):
            i = int(order[bad[0] + 1])
            raise InputError(str(path), col, f"must increase within a config (got {arr[i]:g} after "
                             f"{arr[order][bad[0]]:g})", i + 2)
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    ends = np.concatenate([starts[1:], [len(order)]])
    curves = []
    for s, e in zip(starts, ends):
        rows = order[s:e]
        i0 = rows[0]
        curves.append(LossCurve(
            lr=float(lr[i0]), rank=int(rank[i0]), batch_size=int(batch[i0]),
            alpha=None if math.isnan(alpha[i0]) else float(alpha[i0]),
            samples=samples[rows], train=train[rows], val=val[rows],
            metric=None if metric is None else metric[rows], steps=step[rows].astype(np.int64),
        ))
    extra = {k: v for k, v in meta.model_dump().items()
             if k not in ("name", "model", "dataset", "synthetic", "source")}
    return LossTraceSet(name=meta.name, model=meta.model, dataset=meta.dataset,
                        synthetic=meta.synthetic, source=meta.source, curves=curves, meta=extra)


def _fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.5g}"


def loss_traces_csv_text(ts: LossTraceSet) -> str:
    """The CSV text of a set (losses and metric to 5 significant digits)."""
    out = [",".join(LOSS_COLUMNS)]
    for c in ts.curves:
        head = f"{c.lr:.6g},{c.rank},{c.batch_size},{'' if c.alpha is None else f'{c.alpha:.6g}'}"
        metric = c.metric if c.metric is not None else np.full(len(c.samples), np.nan)
        for st, sa, tr, va, me in zip(c.steps.tolist(), c.samples.tolist(), c.train.tolist(),
                                      c.val.tolist(), metric.tolist()):
            tr_s = "nan" if math.isnan(tr) else f"{tr:.5g}"
            out.append(f"{head},{st},{sa:.10g},{tr_s},{_fmt(va)},{_fmt(me)}")
    return "\n".join(out) + "\n"


def loss_meta_dict(ts: LossTraceSet) -> dict[str, Any]:
    return {**ts.meta, "name": ts.name, "model": ts.model, "dataset": ts.dataset,
            "synthetic": ts.synthetic, "source": ts.source}


def write_loss_traces(ts: LossTraceSet, path: str | Path) -> None:
    """Write the CSV (gzip-compressed when the name ends in .gz) and its meta sidecar, atomically."""
    path = Path(path)
    data: str | bytes = loss_traces_csv_text(ts)
    if path.name.endswith(".gz"):
        data = gzip.compress(data.encode(), compresslevel=9, mtime=0)
    meta = json.dumps(loss_meta_dict(ts), indent=1, sort_keys=True) + "\n"
    atomic_write([(path, data), (loss_meta_path(path), meta)])


def load_trace_dir(directory: str | Path) -> dict[str, LossTraceSet]:
    """Every loss-trace set (`*.csv`, `*.csv.gz` with a sidecar) in a folder, by set name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(str(directory), "<folder>", "no such folder")
    sets: dict[str, LossTraceSet] = {}
    for p in sorted(directory.iterdir()):
        if p.name.endswith((".csv", ".csv.gz")):
            ts = read_loss_traces(p)
            if ts.name in sets:
                raise InputError(str(p), "name", f"loss-trace set {ts.name!r} defined twice")
            sets[ts.name] = ts
    return sets


# ------------------------------------------------------------------------------------------
# cost profiles
# ------------------------------------------------------------------------------------------

COST_COLUMNS = list(CostRecord.model_fields)


def read_cost_profile(path: str | Path) -> CostProfile:
    path = Path(path)
    meta_path = path.with_name(path.stem + ".meta.json")
    head = _json_file(meta_path) if meta_path.exists() else {"source": str(path)}
    if not isinstance(head, dict):
        raise InputError(str(meta_path), "<root>", "expected a JSON object")
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    missing = [c for c in COST_COLUMNS if c not in (reader.fieldnames or []) and c not in ("note", "parallel_degree")]
    if missing:
        raise InputError(str(path), missing[0], "missing column", 1)
    rows = []
    for row in reader:
        if not any((v or "").strip() for v in row.values()):
            continue
        rec = {k: v for k, v in row.items() if v not in ("", None) or k == "note"}
        try:
            rows.append(CostRecord.model_validate(rec))
        except ValidationError as e:
            raise from_validation_error(e, str(path), reader.line_num) from None
    try:
        return CostProfile.model_validate({**head, "rows": rows})
    except ValidationError as e:
        raise from_validation_error(e, str(meta_path)) from None


def write_cost_profile(profile: CostProfile, path: str | Path) -> None:
    path = Path(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COST_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in profile.rows:
        w.writerow(r.model_dump())
    meta = json.dumps(profile.model_dump(exclude={"rows"}), indent=1, sort_keys=True) + "\n"
    atomic_write([(path, buf.getvalue()), (path.with_name(path.stem + ".meta.json"), meta)])


# ------------------------------------------------------------------------------------------
# everything a run reads
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInputs:
    """A validated run: config, workload, the loss sets it uses, the cost profile (None: analytic)."""

    config: RunConfig
    workload: WorkloadTrace
    workload_file: str
    loss_sets: dict[str, LossTraceSet]
    cost_profile: CostProfile | None


def load_run_inputs(config: RunConfig) -> RunInputs:
    """Read what `config` names ('default' -> the embedded workload) and check it is consistent:
    no task needs more GPUs than the cluster has, every task's loss-trace set exists."""
    from altosim.workloads import default_loss_dir, default_workload_path  # avoids an import cycle

    wl_path = default_workload_path() if config.workload == DEFAULT else Path(config.workload)
    loss_dir = default_loss_dir() if config.loss_traces == DEFAULT else Path(config.loss_traces)
    workload = read_workload(wl_path)
    config.check_workload(workload, str(wl_path))
    sets = load_trace_dir(loss_dir)
    for i, t in enumerate(workload.tasks):
        if t.loss_trace not in sets:
            known = ", ".join(sorted(sets)[:5]) + (", ..." if len(sets) > 5 else "")
            raise InputError(str(wl_path), f"tasks[{i}].loss_trace",
                             f"task {t.id!r}: no loss-trace set {t.loss_trace!r} in {loss_dir} (has: {known})")
    used = {t.loss_trace for t in workload.tasks}
    cost = None if config.cost_profile == ANALYTIC else read_cost_profile(config.cost_profile)
    return RunInputs(config=config, workload=workload, workload_file=str(wl_path),
                     loss_sets={k: v for k, v in sets.items() if k in used}, cost_profile=cost)
