"""Philly GPU-cluster trace (Jeon et al., ATC'19) -> WorkloadTrace of tuning tasks.

Mapping (each knob recorded in the workload's `meta`):
- one trace row (job) -> one tuning task arriving at its submission time, in seconds from the
  window start (`start`, default: the earliest valid submission); rows outside [start, end) are
  dropped and counted;
- the task needs the job's GPUs; tasks needing more than `max_gpus` are reported in `too_large`
  and left out, never resized;
- its worst-case (no early exit) wall time is the job's duration: `TaskRecord.duration_s`, which
  the simulator honours by scaling step times;
- its search space is K = `configs_per_task` configs drawn (seeded) from one loss-trace set drawn
  (seeded, uniformly) from the pool: the task names the set (`loss_trace`) and keeps the set's grid
  with `subset` = the drawn configs. Curves are replayed by progress fraction, so they stretch
  to the task's duration and early exit shortens it the way those curves allow;
- or, with `rigid_share` (0..1, default 0), that share of the jobs (a seeded draw; 1: all) is kept
  as rigid jobs instead (`TaskRecord.rigid`: the job's GPUs for its duration, no search space, no
  loss curves); the other jobs become exactly the tuning tasks a plain import makes of them.
Malformed rows (missing fields, unparsable times, non-positive or non-numeric durations, GPU
counts that are not positive integers) are reported with their line numbers (header = line 1):
an InputError naming the first few, or, with `skip_bad`, listed in `skipped`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from altosim.errors import InputError
from altosim.files import check_csv_head, check_regular
from altosim.schemas.limits import MAX_SECONDS
from altosim.schemas import LossTraceSet, SearchSpace, TaskRecord, WorkloadTrace
from altosim.workloads import load_default_loss_sets

REQUIRED = ("timestamp", "duration", "num_gpus")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SOURCE = "Philly trace (Jeon et al., USENIX ATC 2019, CC BY 4.0), per-job summary of the Pollux artifact"


class BadRow(NamedTuple):
    line: int
    reason: str  # "<field>: <problem>"


class TooLarge(NamedTuple):
    line: int
    gpus: int


@dataclass
class ImportResult:
    workload: WorkloadTrace
    skipped: list[BadRow] = field(default_factory=list)
    too_large: list[TooLarge] = field(default_factory=list)
    outside_window: int = 0


def _bad_rows(df: pd.DataFrame) -> tuple[list[BadRow], pd.Series, np.ndarray, np.ndarray]:
    """Per-row checks, vectorized; the first problem of each bad row is reported."""
    ts = pd.to_datetime(df["timestamp"].str.strip(), format=TIME_FORMAT, errors="coerce")
    dur = pd.to_numeric(df["duration"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    gpus = pd.to_numeric(df["num_gpus"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    empty = {c: (df[c].str.strip() == "").to_numpy() for c in REQUIRED}
    checks = [
        (empty["timestamp"], "timestamp: missing value"),
        (ts.isna().to_numpy() & ~empty["timestamp"], "timestamp: unparsable time (expected YYYY-MM-DD HH:MM:SS)"),
        (empty["duration"], "duration: missing value"),
        (np.isnan(dur) & ~empty["duration"], "duration: not a number"),
        (~np.isnan(dur) & ~np.isfinite(dur), "duration: must be finite"),
        (np.isfinite(dur) & (dur < 0), "duration: negative duration"),
        (np.isfinite(dur) & (dur > MAX_SECONDS), f"duration: more than {MAX_SECONDS} seconds"),
        (dur == 0, "duration: must be > 0 seconds"),
        (empty["num_gpus"], "num_gpus: missing value"),
        (np.isnan(gpus) & ~empty["num_gpus"], "num_gpus: not a number"),
        (np.isfinite(gpus) & (gpus != np.round(gpus)), "num_gpus: not an integer"),
        (~np.isnan(gpus) & ~np.isfinite(gpus), "num_gpus: not an integer"),
        (np.isfinite(gpus) & (gpus == np.round(gpus)) & (gpus < 1), "num_gpus: must be >= 1"),
    ]
    reason = np.full(len(df), None, dtype=object)
    for mask, text in checks:
        reason[mask & (reason == None)] = text  # noqa: E711 (elementwise)
    bad = [BadRow(int(i) + 2, str(reason[i])) for i in np.flatnonzero(reason != None)]  # noqa: E711
    return bad, ts, dur, gpus


def _parse_time(value: str | datetime | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError("<arguments>", name, f"unparsable time {value!r}") from None


def import_philly(
    csv_path: str | Path,
    *,
    loss_sets: dict[str, LossTraceSet] | None = None,
    configs_per_task: int = 16,
    max_gpus: int = 1024,
    seed: int = 0,
    skip_bad: bool = False,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    samples_per_job: int | None = None,
    seq_len: int = 512,
    name: str | None = None,
    rigid_share: float = 0.0,
) -> ImportResult:
    """Import a Philly CSV; `loss_sets` is the pool (None -> the embedded synthetic sets).

    `samples_per_job` None -> each drawn set's own budget (fewer samples = fewer simulated steps,
    same curves, same duration).
    """
    if configs_per_task < 1:
        raise InputError("<arguments>", "configs_per_task", f"must be >= 1 (got {configs_per_task})")
    if samples_per_job is not None and samples_per_job < 1:
        raise InputError("<arguments>", "samples_per_job", f"must be >= 1 (got {samples_per_job})")
    if max_gpus < 1:
        raise InputError("<arguments>", "max_gpus", f"must be >= 1 (got {max_gpus})")
    if not 0.0 <= rigid_share <= 1.0:
        raise InputError("<arguments>", "rigid_share", f"must be between 0 and 1 (got {rigid_share})")
    if loss_sets is not None and not loss_sets:
        raise InputError("<arguments>", "loss_sets", "the loss-trace pool is empty")
    path = Path(csv_path)
    t_start, t_end = _parse_time(start, "start"), _parse_time(end, "end")
    check_regular(path)  # a FIFO would block the read forever
    check_csv_head(path, str(path))  # a column given twice, a row wider than the header
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise InputError(str(path), "<file>", "no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise InputError(str(path), "<csv>", str(e)) from None
    except OSError as e:  # a folder, unreadable, a corrupt .gz
        raise InputError(str(path), "<file>", f"cannot read: {e.strerror or e}") from None
    except (EOFError, zlib.error) as e:  # a truncated or corrupt .gz body
        raise InputError(str(path), "<file>", f"cannot read: {e}") from None
    for col in REQUIRED:
        if col not in df.columns:
            raise InputError(str(path), col, "missing column", 1)
    df = df.fillna("")
    bad, ts, dur, gpus = _bad_rows(df)
    if bad and not skip_bad:
        first = bad[0]
        field_, problem = first.reason.split(": ", 1)
        more = ", ".join(f"line {b.line} ({b.reason})" for b in bad[1:4])
        tail = f"; also {more}" if more else ""
        tail += f"{', ...' if len(bad) > 4 else ''}; {len(bad)} bad row(s) in all (skip_bad / --skip-bad skips them)"
        raise InputError(str(path), field_, problem + tail, first.line)

    if loss_sets is None:  # read after the trace is checked: a bad trace fails without loading the pool
        loss_sets = load_default_loss_sets()
    good = np.ones(len(df), dtype=bool)
    good[[b.line - 2 for b in bad]] = False
    origin = t_start if t_start is not None else (ts[good].min() if good.any() else pd.Timestamp(0))
    inside = good.copy()
    if t_start is not None:
        inside &= (ts >= t_start).to_numpy()
    if t_end is not None:
        inside &= (ts < t_end).to_numpy()
    outside = int(good.sum() - inside.sum())
    too_large = [TooLarge(int(i) + 2, int(gpus[i])) for i in np.flatnonzero(inside & (gpus > max_gpus))]
    keep = np.flatnonzero(inside & (gpus <= max_gpus))
    arrival = (ts.iloc[keep] - origin).dt.total_seconds().to_numpy()
    keep = keep[np.argsort(arrival, kind="stable")]
    arrival = np.sort(arrival, kind="stable")
    if len(arrival) and arrival[-1] > MAX_SECONDS:  # a task's arrival is held to the same bound
        raise InputError(str(path), "timestamp", f"the jobs span {arrival[-1]:.4g} seconds from the first; at most "
                         f"{MAX_SECONDS} (cut the trace to a shorter window)", int(keep[-1]) + 2)

    tasks = _make_tasks(keep, arrival, dur, gpus, loss_sets, configs_per_task, seed, samples_per_job, seq_len)
    if rigid_share > 0:  # its own draw: the tuning tasks left are those a plain import makes
        rigid = np.random.default_rng([seed, 1]).random(len(tasks)) < rigid_share
        tasks = [_as_rigid(t) if r else t for t, r in zip(tasks, rigid.tolist())]
    names = sorted(loss_sets)
    meta = {
        "importer": "philly", "file": path.name, "rows": int(len(df)), "imported": len(tasks),
        "skipped_bad": len(bad), "too_large": len(too_large), "outside_window": outside,
        "window_start": str(origin), "start": None if t_start is None else str(t_start),
        "end": None if t_end is None else str(t_end), "configs_per_task": configs_per_task,
        "max_gpus": max_gpus, "seed": seed, "samples_per_job": samples_per_job, "seq_len": seq_len,
        "loss_pool": names, **({"rigid_share": rigid_share, "rigid": sum(t.rigid for t in tasks)} if rigid_share else {}),
        "mapping": "job -> task at submission time (s from window_start), "
        "GPUs kept, duration_s = job duration (worst case, no early exit), K configs drawn from "
        "one pool set per task, curves replayed by progress fraction (stretched to the duration)",
    }
    workload = WorkloadTrace(
        name=name or f"philly-{path.stem}", synthetic=any(s.synthetic for s in loss_sets.values()),
        description="Philly jobs replayed as LoRA tuning tasks (arrivals, GPUs, durations real; "
        "loss curves from the pool" + (", which is synthetic)" if any(s.synthetic for s in loss_sets.values()) else ")"),
        source=SOURCE, meta=meta, tasks=tasks,
    )
    return ImportResult(workload=workload, skipped=bad if skip_bad else [], too_large=too_large,
                        outside_window=outside)


def _as_rigid(t: TaskRecord) -> TaskRecord:
    """The trace job itself: its arrival, GPUs and duration, nothing to tune."""
    return TaskRecord(id=t.id, arrival=t.arrival, model="philly-job", dataset="philly", gpus=t.gpus,
                      seq_len=t.seq_len, duration_s=t.duration_s, rigid=True)


def _make_tasks(rows: np.ndarray, arrival: np.ndarray, dur: np.ndarray, gpus: np.ndarray,
                loss_sets: dict[str, LossTraceSet], k: int, seed: int, samples: int | None,
                seq_len: int) -> list[TaskRecord]:
    rng = np.random.default_rng(seed)
    names = sorted(loss_sets)
    pick = rng.integers(len(names), size=len(rows))
    spaces, avail = [], []
    for n in names:
        ts = loss_sets[n]
        lrs, ranks, batches = ts.grid()
        space = SearchSpace(lr=lrs, rank=ranks, batch_size=batches)
        have = {(c.lr, c.rank, c.batch_size) for c in ts.curves}
        idx = [i for i, c in space.configs() if (c["lr"], c["rank"], c["batch_size"]) in have]
        spaces.append(space)
        avail.append(np.array(idx))
    # K configs per task: the first K of a random permutation of the set's available configs
    subsets: list[list[int] | None] = [None] * len(rows)
    for s, idx in enumerate(avail):
        members = np.flatnonzero(pick == s)
        if len(members) == 0:
            continue
        if k >= len(idx) and len(idx) == spaces[s].grid_size:
            continue  # the whole grid
        keys = rng.random((len(members), len(idx)))
        chosen = np.sort(idx[np.argsort(keys, axis=1)[:, : min(k, len(idx))]], axis=1)
        for m, row in zip(members, chosen.tolist()):
            subsets[m] = row
    tasks = []
    for j, r in enumerate(rows.tolist()):
        s = int(pick[j])
        ts = loss_sets[names[s]]
        space = spaces[s] if subsets[j] is None else spaces[s].model_copy(update={"subset": subsets[j]})
        tasks.append(TaskRecord(
            id=f"philly-{r + 2}", arrival=float(arrival[j]), model=ts.model, dataset=ts.dataset,
            gpus=int(gpus[r]), search_space=space,
            samples_per_job=samples or ts.samples_per_job, seq_len=seq_len, loss_trace=ts.name,
            duration_s=float(dur[r]),
        ))
    return tasks
