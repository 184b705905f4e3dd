"""Costs measured from a real run log: its report intervals, and the CostProfile of its steps.

`alto run` stamps a fused step's StepReports with the time the step's host call returned, then
validates the reported jobs (and snapshots new bests) before the next step. `run_intervals` cuts
a run's log into the wall time between two consecutive report stamps of a task (an `Interval`,
whose parts `altosim.cost.calibration` fits); `profile_from_run` turns each interval into a
CostRecord of the training step alone (the fitted overheads subtracted, or kept with
`overheads="include"`), aggregated by median per identical key, so the profile-backed CostModel
can interpolate it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from statistics import median

import numpy as np

from altosim.cost.calibration import EvalShape, Interval, RuntimeCalibration, fit_calibration
from altosim.fidelity.runlog import RunFolder, timed
from altosim.schemas.cost import CostProfile, CostRecord

DONE = {"subtract": "subtracted", "include": "included"}


def run_intervals(run: RunFolder, shape: EvalShape = EvalShape()) -> list[Interval]:
    """Each task's intervals, in log order. Steps are counted as `measured_step_times` counts
    them (a job's step plus the task step at which it joined)."""
    spec = {t.task_id: t for t in run.tasks}
    out: list[Interval] = []
    active: dict[str, set[str]] = defaultdict(set)
    idx: dict[str, int] = {}
    joined: dict[str, int] = {}
    paused: dict[str, int] = {}
    anchor: dict[str, tuple[float, int, int, bool]] = {}  # task -> (time, index, reports there, first)
    last: dict[str, frozenset[str]] = {}  # task -> its previous interval's group
    for now, d in timed(run.trace):
        k, tid, job = d["kind"], d.get("task_id"), d.get("job_id")
        if k == "step_report" and job in joined and tid in anchor:
            i = joined[job] + d["step"]
            t0, i0, n0, first = anchor[tid]
            if now > t0 and i > i0:
                task = spec[tid]
                jobs = tuple(task.job(j) for j in sorted(active[tid]))
                ev = 0 if first else n0
                left = len(last.get(tid, frozenset()) - active[tid])
                last[tid] = frozenset(active[tid])
                out.append(Interval(tid, task.model, t0, now, i - i0, jobs, ev, first, tuple(shape.calls(ev)), left))
                anchor[tid] = (now, i, 1, False)
            elif now == t0:
                anchor[tid] = (t0, i0, n0 + 1, first)
            idx[tid] = max(idx.get(tid, 0), i)
        elif k == "start_task":
            idx[tid] = 0
            anchor[tid] = (now, 0, 0, True)
        elif k == "admit":
            joined[job] = idx.get(tid, 0) - (paused.get(job, 0) if d.get("resume") else 0)
            active[tid].add(job)
        elif k == "suspend" and job in joined:
            paused[job] = idx.get(tid, 0) - joined[job]
            active[tid].discard(job)
        elif k in ("stop", "job_finished", "job_failed"):
            active[tid].discard(job)
    return out


def profile_from_run(run: RunFolder, gpu_type: str, cal: RuntimeCalibration | None = None,
                     shape: EvalShape = EvalShape(), overheads: str = "subtract",
                     min_step_ms: float = 1.0) -> CostProfile:
    """A CostProfile of the run's fused training steps: one record per report interval (step_ms =
    its time less the fitted startup, validation and autotune parts, over its steps; with
    `overheads="include"` the plain wall time per step), aggregated by median per identical
    (adapters, mean rank, per-adapter batch, seq_len). The per-adapter batch is the group's mean
    rounded to an integer (CostRecord holds integers); the exact mean is in the note."""
    if overheads not in ("subtract", "include"):
        raise ValueError(f"overheads: expected 'subtract' or 'include', got {overheads!r}")
    ivs = run_intervals(run, shape)
    if not ivs:
        raise ValueError(f"run: {run.folder} has no report intervals to measure")
    if overheads == "subtract" and cal is None:
        cal = fit_calibration(ivs, str(run.folder))
    extra = cal.overheads(ivs) if overheads == "subtract" and cal is not None else np.zeros(len(ivs))
    seq = {t.task_id: t.seq_len for t in run.tasks}
    groups: dict[tuple[str, int, float, int, int], list[float]] = defaultdict(list)
    means: dict[tuple[str, int, float, int, int], list[float]] = defaultdict(list)
    for iv, ov in zip(ivs, extra):
        rows = iv.samples
        rank = round(sum(j.rank * j.batch_size for j in iv.jobs) / rows, 3)
        key = (iv.model, len(iv.jobs), rank, max(1, round(rows / len(iv.jobs))), seq[iv.task_id])
        groups[key].append(max(min_step_ms, 1e3 * (iv.seconds - ov) / iv.steps))
        means[key].append(rows / len(iv.jobs))
    recs = [CostRecord(model=m, gpu_type=gpu_type, adapters=a, mean_rank=r, per_adapter_batch=b, seq_len=s,
                       step_ms=float(median(v)), peak_mem_bytes=0,
                       note=f"median of {len(v)} report intervals; mean per-adapter batch "
                            f"{median(means[(m, a, r, b, s)]):.3g}; overheads {DONE[overheads]}")
            for (m, a, r, b, s), v in sorted(groups.items())]
    return CostProfile(rows=recs, device=run.device, date=date.today().isoformat(), synthetic=False,
                       source=f"measured from alto run log {run.folder} (report intervals, overheads "
                              f"{DONE[overheads]})")
