"""One simulated run from a RunConfig: inputs loaded and checked, Controller built, SimPy run.

Kept apart from the CLI so experiments and tests call the same function the command does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from altosim.build import check_policy, controller_config
from altosim.cost import cost_model_from_config
from altosim.errors import InputError
from altosim.policy.controller import Controller
from altosim.policy.event_order import EVENT_ORDER
from altosim.policy.memory import MemoryModel
from altosim.policy.types import TaskSpec
from altosim.report import (
    gantt_frame, plot_gantt, plot_losses, report_frame, summary_row, task_table, try_plot, write_csv,
    write_jsonl,
)
from altosim.schemas import DEFAULT, LossCurve, LossTraceSet, RunConfig, WorkloadTrace
from altosim.sim.engine import SimResult, Simulator
from altosim.run_inputs import load_run_inputs
from altosim.task_costs import FixedDurationCost, workload_shapes
from altosim.traces_io import load_trace_dir, read_workload
from altosim.workloads import default_workload_path, load_default_loss_sets


@dataclass
class Inputs:
    """A workload resolved against its loss traces: tasks, curves per job, time scales."""

    workload: WorkloadTrace
    tasks: list[TaskSpec]
    curves: dict[str, LossCurve]
    durations: dict[str, float | None]  # task -> worst-case wall time given by the trace
    shapes: dict[str, Any] = field(default_factory=dict)  # backbone (lower case) -> ModelShape the workload gives
    shape_sources: dict[str, str] = field(default_factory=dict)  # backbone -> "shape" | "config.json"


class RigidCurve:
    """What a rigid task's placeholder job reports: no loss (train 0, no validation)."""

    def train_mean(self, f0: float, f1: float) -> float:
        return 0.0

    def val_at(self, f: float) -> float | None:
        return None

    def metric_at(self, f: float) -> float | None:
        return None


def load_inputs(cfg: RunConfig, workload: WorkloadTrace | None = None,
                loss_sets: dict[str, LossTraceSet] | None = None) -> Inputs:
    """Resolve every job to its loss curve. Without arguments, read (and check) what `cfg` names."""
    if workload is None and loss_sets is None:
        ri = load_run_inputs(cfg)  # reads the files, checks GPUs and loss-trace names
        workload, loss_sets, wl_file = ri.workload, ri.loss_sets, ri.workload_file
    else:
        wl_file = str(default_workload_path()) if cfg.workload == DEFAULT else cfg.workload
        workload = workload if workload is not None else read_workload(wl_file)
        cfg.check_workload(workload, wl_file)
        if loss_sets is None:
            loss_sets = load_default_loss_sets() if cfg.loss_traces == DEFAULT else load_trace_dir(cfg.loss_traces)
    tasks = workload.to_task_specs()
    curves: dict[str, Any] = {}
    for i, (rec, task) in enumerate(zip(workload.tasks, tasks)):
        if rec.rigid:
            curves.update((job.job_id, RigidCurve()) for job in task.jobs)
            continue
        if rec.loss_trace not in loss_sets:
            raise InputError(wl_file, f"tasks[{i}].loss_trace",
                             f"no loss-trace set {rec.loss_trace!r} (have: {', '.join(sorted(loss_sets)) or 'none'})")
        for job in task.jobs:
            curves[job.job_id] = loss_sets[rec.loss_trace].curve_for(job)
    durations = {t.task_id: rec.duration_s for rec, t in zip(workload.tasks, tasks)}
    shapes, sources = workload_shapes(workload, wl_file)
    return Inputs(workload, tasks, curves, durations, shapes, sources)


@dataclass
class SimRun:
    label: str
    result: SimResult
    tasks_df: pd.DataFrame
    summary: dict[str, Any]
    meta: dict[str, Any]


def simulate(cfg: RunConfig, inputs: Inputs | None = None, *, label: str | None = None,
             record_log: bool = True, sparse_reports: bool = False, regret: bool = True, progress: Callable[[int], None] | None = None) -> SimRun:
    """Run the simulator once; raises InputError/ValueError on bad input before any output."""
    check_policy(cfg)
    inputs = inputs or load_inputs(cfg)
    cost = cost_model_from_config(cfg).with_shapes(inputs.shapes, inputs.shape_sources)
    ccfg = controller_config(cfg)
    margin = cfg.policy.memory_margin
    worst: dict[str, float] = {}
    scale: dict[str, float] = {}
    rigid = {t.task_id: float(inputs.durations[t.task_id] or 0.0) for t in inputs.tasks if t.rigid}
    for t in inputs.tasks:
        if t.rigid:  # its given duration, whatever the backbone: no cost model involved
            worst[t.task_id], scale[t.task_id] = rigid[t.task_id], 1.0
            continue
        try:
            w = cost.worst_case_duration(t, ccfg.batching, ccfg.max_jobs_per_group, margin)
        except ValueError as e:  # unknown model name
            raise InputError(cfg.workload, f"task {t.task_id}.model", str(e)) from None
        given = inputs.durations.get(t.task_id)
        scale[t.task_id] = (given / w) if given and w > 0 else 1.0
        worst[t.task_id] = w * scale[t.task_id]
    memory: dict[str, MemoryModel] = {t.task_id: cost.memory_model(t, margin) for t in inputs.tasks if not t.rigid}
    ctl = Controller(ccfg, duration_for=lambda t: worst[t.task_id], memory_for=lambda t: memory.get(t.task_id))
    step_cost = FixedDurationCost(cost, rigid) if rigid else cost
    sim = Simulator(inputs.tasks, ctl, step_cost, lambda job: inputs.curves[job.job_id],
                    time_scale=lambda t: scale[t.task_id], record_log=record_log,
                    sparse_reports=sparse_reports, on_progress=progress,
                    announce=cfg.policy.planner_sees_arrivals)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    label = label or f"{cfg.policy.early_exit.name}+{cfg.policy.inter_task.name}" + (
        "" if cfg.policy.batching else "+sequential")
    sources = {t.task_id: "duration_s" if t.rigid else cost.cost_source(t) for t in inputs.tasks}
    tdf = task_table(res, inputs.tasks, lambda job: inputs.curves[job.job_id], regret=regret, sources=sources)
    meta = {
        "controller": {k: v for k, v in vars(ccfg).items()},
        "durations": worst,
        "memory": {k: vars(m) for k, m in memory.items()},
        "event_order": EVENT_ORDER,  # the backend contract's order (altosim/policy/event_order.py)
        "cost": {"source": "profile" if cost.profile is not None else "analytic",
                 "extrapolations": cost.extrapolations},
    }
    return SimRun(label, res, tdf, summary_row(res, tdf, label, wall), meta)


def write_outputs(run: SimRun, out: Path, loss_plots: int = 3, failed: list[str] | None = None) -> list[Path]:
    """summary.csv, tasks.csv, events.jsonl (+ plans.csv) and PNGs under `out`; the files written.
    A figure that cannot be drawn is left out and named in `failed` (one line each)."""
    out = Path(out)
    written = []
    write_csv(pd.DataFrame([run.summary]), out / "summary.csv")
    write_csv(run.tasks_df, out / "tasks.csv")
    written += [out / "summary.csv", out / "tasks.csv"]
    if run.result.log:
        write_jsonl([{"meta": run.meta}, *run.result.log], out / "events.jsonl")
        written.append(out / "events.jsonl")
    plan_cols = ["now", "waiting", "status", "solve_s", "makespan", "lower_bound"]
    write_csv(pd.DataFrame(run.result.plans, columns=plan_cols), out / "plans.csv")  # planner calls
    written.append(out / "plans.csv")
    g = gantt_frame(run.result)
    write_csv(g, out / "gantt.csv")
    written.append(out / "gantt.csv")
    rigid = list(run.tasks_df.loc[run.tasks_df["kind"] == "rigid", "task"]) if "kind" in run.tasks_df else []
    plots = [(out / "gantt.png", lambda: plot_gantt(g, run.result.num_gpus, f"GPU timeline ({run.label})", rigid))]
    if run.result.log and loss_plots:
        reports = report_frame(run.result.log)
        write_csv(reports, out / "reports.csv")
        written.append(out / "reports.csv")
        tuning = run.tasks_df["task"] if "kind" not in run.tasks_df else run.tasks_df.loc[run.tasks_df["kind"] == "tuning", "task"]
        for task_id in list(tuning)[:loss_plots]:
            plots.append((out / f"losses_{task_id}.png", lambda t=task_id: plot_losses(reports, t)))
    for path, make in plots:  # the tables above are written whatever happens to a figure
        problem = try_plot(make, path)
        if problem is None:
            written.append(path)
        elif failed is not None:
            failed.append(problem)
    return written


def config_inputs(cfg: RunConfig) -> list[Path]:
    """The files a config reads (itself, its workload, loss traces, cost profile and sidecar): no
    output may replace them."""
    from altosim.outdir import input_files
    from altosim.schemas.config import ANALYTIC

    paths = [cfg.file, None if cfg.workload == DEFAULT else cfg.workload,
             None if cfg.loss_traces == DEFAULT else cfg.loss_traces]
    if cfg.cost_profile != ANALYTIC:
        prof = Path(cfg.cost_profile)
        paths += [prof, prof.with_name(prof.stem + ".meta.json")]
    return input_files(*paths)


def simulate_to_folder(cfg: RunConfig, out: str | Path,
                       make_progress: Callable[[int], tuple[Any, Callable[[int], None] | None]] | None = None,
                       ) -> tuple[SimRun, list[Path], list[str]]:
    """What `alto simulate` and `alto.simulate` do: check, simulate, write the outputs (staged in
    `out`, moved into place only when all succeeded). Returns the run, the files written and one
    line per figure that could not be drawn. `make_progress(n_tasks)` gives (bar, tick)."""
    from altosim.outdir import check_out, output_dir

    out = check_out(out)
    check_policy(cfg)
    inputs = load_inputs(cfg)
    bar, tick = make_progress(len(inputs.tasks)) if make_progress is not None else (None, None)
    failed: list[str] = []
    with output_dir(out, keep=config_inputs(cfg)) as stage:
        try:
            run = simulate(cfg, inputs, progress=tick)
        finally:
            if bar is not None:
                bar.close()
        files = [out / f.relative_to(stage) for f in write_outputs(run, stage, failed=failed)]
    return run, files, failed
