"""`alto check-fidelity`: does the simulator predict what the real runtime did?

- `runlog`: a run folder's event log read back (decisions, completion times, curves, measured steps);
- `replay`: the run replayed in the SimPy backend, decisions compared one by one;
- `calibrate`: the run's report intervals and the CostProfile of its steps (`alto profile-from-run`);
- `heldout`: costs calibrated on one run replay another (`--calibrate-from`);
- `check`: both checks written as one CSV + timeline (`check_fidelity`); `report`: rows and figure.

The costs themselves (step-cost protocol, cost model, calibration, overheads, the held-out
step-time check) live in `altosim.cost`. This package only re-exports.
"""

from altosim.fidelity.calibrate import profile_from_run, run_intervals
from altosim.fidelity.check import FidelityReport, ModelCosts, check_fidelity, model_costs
from altosim.fidelity.heldout import heldout_fidelity, predict_makespan, term_sensitivity, write_heldout
from altosim.fidelity.replay import DecisionDiff, compare_decisions, log_order, replay_run
from altosim.fidelity.report import gpu_label, phase_rows, plot_timelines, replay_rows, row, step_rows
from altosim.fidelity.runlog import (
    ACTION_KINDS, EVENT_KINDS, ReportedCurve, RunFolder, completion_times, decisions, failure_steps, flat_curve,
    job_curves, job_intervals, loss_traces, measured_step_times, read_run, run_config_for, run_phases, run_val_rows,
    timed,
)

__all__ = [
    "ACTION_KINDS", "DecisionDiff", "EVENT_KINDS", "FidelityReport", "ModelCosts", "ReportedCurve", "RunFolder",
    "check_fidelity", "compare_decisions", "completion_times", "decisions", "failure_steps",
    "flat_curve", "gpu_label", "heldout_fidelity", "job_curves", "job_intervals", "log_order", "loss_traces",
    "measured_step_times", "model_costs", "phase_rows", "plot_timelines", "predict_makespan", "profile_from_run",
    "read_run", "replay_rows", "replay_run", "row", "run_config_for", "run_intervals", "run_phases",
    "run_val_rows", "step_rows", "term_sensitivity", "timed", "write_heldout",
]
