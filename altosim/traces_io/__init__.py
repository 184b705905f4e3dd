"""Readers and writers for workload traces and loss traces.

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

Cost profiles are read and written by `altosim.cost.io`; a run's inputs together by
`altosim.run_inputs`.
"""

from __future__ import annotations

from altosim.files import atomic_write
from altosim.traces_io.loss import (
    LOSS_COLUMNS, load_trace_dir, loss_meta_dict, loss_meta_path, loss_traces_csv_text, read_loss_traces,
    write_loss_traces,
)
from altosim.traces_io.workload import read_workload, workload_csv_text, workload_json_text, write_workload

__all__ = [
    "LOSS_COLUMNS", "atomic_write", "load_trace_dir", "loss_meta_dict", "loss_meta_path", "loss_traces_csv_text",
    "read_loss_traces", "read_workload", "workload_csv_text", "workload_json_text", "write_loss_traces",
    "write_workload",
]
