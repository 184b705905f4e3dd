"""Loss-trace sets: `<name>.csv[.gz]` (one row per logged step) + `<name>.meta.json` provenance.

Parsing is vectorized (pandas + numpy) because the simulator loads many sets per run; the first
bad row of a column becomes one InputError with its line number.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from altosim.errors import InputError, from_validation_error
from altosim.schemas import LossCurve, LossTraceSet
from altosim.files import atomic_write, check_csv_head, json_file, read_text


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
        meta = _LossMeta.model_validate(json_file(meta_path))
    except ValidationError as e:
        raise from_validation_error(e, str(meta_path)) from None
    text = read_text(path)
    check_csv_head(io.StringIO(text), str(path))  # a column given twice, a row wider than the header
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
        raise InputError(str(directory), "<folder>", "is a file, expected a folder of loss-trace sets"
                         if directory.exists() else "no such folder")
    sets: dict[str, LossTraceSet] = {}
    for p in sorted(directory.iterdir()):
        if p.name.endswith((".csv", ".csv.gz")):
            ts = read_loss_traces(p)
            if ts.name in sets:
                raise InputError(str(p), "name", f"loss-trace set {ts.name!r} defined twice")
            sets[ts.name] = ts
    return sets
