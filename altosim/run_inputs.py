"""A run's inputs read together and checked against each other: config, workload, loss traces, cost profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from altosim.cost.io import read_cost_profile
from altosim.errors import InputError
from altosim.schemas import ANALYTIC, DEFAULT, CostProfile, LossTraceSet, RunConfig, WorkloadTrace
from altosim.traces_io import load_trace_dir, read_workload
from altosim.workloads import default_loss_dirs, default_workload_path, load_default_loss_sets


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
    wl_path = default_workload_path() if config.workload == DEFAULT else Path(config.workload)
    default = config.loss_traces == DEFAULT
    loss_dir = " + ".join(map(str, default_loss_dirs())) if default else Path(config.loss_traces)
    workload = read_workload(wl_path)
    config.check_workload(workload, str(wl_path))
    cost = None if config.cost_profile == ANALYTIC else read_cost_profile(config.cost_profile)  # small files first
    sets = load_default_loss_sets() if default else load_trace_dir(loss_dir)
    for i, t in enumerate(workload.tasks):
        if not t.rigid and t.loss_trace not in sets:  # a rigid task replays no curves
            known = ", ".join(sorted(sets)[:5]) + (", ..." if len(sets) > 5 else "")
            raise InputError(str(wl_path), f"tasks[{i}].loss_trace",
                             f"task {t.id!r}: no loss-trace set {t.loss_trace!r} in {loss_dir} (has: {known})")
    used = {t.loss_trace for t in workload.tasks if not t.rigid}
    return RunInputs(config=config, workload=workload, workload_file=str(wl_path),
                     loss_sets={k: v for k, v in sets.items() if k in used}, cost_profile=cost)
