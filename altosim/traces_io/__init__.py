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

from dataclasses import dataclass
from pathlib import Path

from altosim.errors import InputError
from altosim.schemas import ANALYTIC, DEFAULT, CostProfile, LossTraceSet, RunConfig, WorkloadTrace
from altosim.traces_io.cost import COST_COLUMNS, read_cost_profile, write_cost_profile
from altosim.traces_io.files import atomic_write
from altosim.traces_io.loss import (
    LOSS_COLUMNS, load_trace_dir, loss_meta_dict, loss_meta_path, loss_traces_csv_text, read_loss_traces,
    write_loss_traces,
)
from altosim.traces_io.workload import read_workload, workload_csv_text, workload_json_text, write_workload

__all__ = [
    "COST_COLUMNS", "LOSS_COLUMNS", "RunInputs", "atomic_write", "load_run_inputs", "load_trace_dir",
    "loss_meta_dict", "loss_meta_path", "loss_traces_csv_text", "read_cost_profile", "read_loss_traces",
    "read_workload", "workload_csv_text", "workload_json_text", "write_cost_profile", "write_loss_traces",
    "write_workload",
]



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
    from altosim.workloads import default_loss_dirs, default_workload_path, load_default_loss_sets  # no cycle

    wl_path = default_workload_path() if config.workload == DEFAULT else Path(config.workload)
    default = config.loss_traces == DEFAULT
    loss_dir = " + ".join(map(str, default_loss_dirs())) if default else Path(config.loss_traces)
    workload = read_workload(wl_path)
    config.check_workload(workload, str(wl_path))
    sets = load_default_loss_sets() if default else load_trace_dir(loss_dir)
    for i, t in enumerate(workload.tasks):
        if t.loss_trace not in sets:
            known = ", ".join(sorted(sets)[:5]) + (", ..." if len(sets) > 5 else "")
            raise InputError(str(wl_path), f"tasks[{i}].loss_trace",
                             f"task {t.id!r}: no loss-trace set {t.loss_trace!r} in {loss_dir} (has: {known})")
    used = {t.loss_trace for t in workload.tasks}
    cost = None if config.cost_profile == ANALYTIC else read_cost_profile(config.cost_profile)
    return RunInputs(config=config, workload=workload, workload_file=str(wl_path),
                     loss_sets={k: v for k, v in sets.items() if k in used}, cost_profile=cost)
