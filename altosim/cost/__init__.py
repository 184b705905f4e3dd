"""Step-time costing: what one fused step of a group costs, and everything else a replay charges.

Every step-cost source implements one protocol, `StepCost.step_time(task, jobs) -> seconds`:

- `CostModel` (`model`): analytic (FLOPs at an MFU plus a per-layer floor), or profile-backed where
  a measured CostProfile covers the (model, GPU type): read by multilinear interpolation
  (`profile`) or the host-floor / GPU-line fit (`fit`); tasks on several GPUs get rank-local
  adapter parallelism's step (`parallel`). Model and GPU shapes are in `specs`.
- `LinearStepCost` (`calibration`): a line fitted on a real run's report intervals.
- `MeasuredCost` (`measured`): the step times a real run logged, per group composition.

Besides steps: new step shapes' compiles (`shapes`), validation and the runtime's actions
(`overheads`), calibrated overheads (`calibration`). `steptime` scores predictors on a profile's
held-out rows; `io` reads and writes profiles (the CostProfile schema itself is a boundary schema,
`altosim.schemas.cost`).
"""

from altosim.cost.calibration import (
    FEATURES, CalibratedOverheads, EvalShape, Interval, LinearStepCost, RuntimeCalibration, describe, features,
    fit_calibration,
)
from altosim.cost.fit import HostGpuFit, HostGpuPredictor, fit_host_gpu
from altosim.cost.io import COST_COLUMNS, read_cost_profile, read_profile, write_cost_profile
from altosim.cost.measured import MeasuredCost
from altosim.cost.model import CostModel, cost_model_for, cost_model_from_config
from altosim.cost.overheads import HostOverheads, ValidationCost, eval_profile, host_overheads
from altosim.cost.parallel import Link, ParallelStep, ap_step, fsdp_step
from altosim.cost.profile import Prediction, ProfileTable
from altosim.cost.protocol import StepCost, StepEstimate
from altosim.cost.shapes import NewShapeCost, ShapeTracker, new_shape_cost
from altosim.cost.specs import GPUS, MODELS, GpuSpec, ModelShape, model_shape, shape_from_spec
from altosim.cost.steptime import (
    CostPredictor, PredictorFactory, StepPredictor, analytic_predictor, best_method, cost_predictor,
    hostgpu_predictor, interior, model_cost, split_profile, step_time_errors,
)

__all__ = [
    "COST_COLUMNS", "FEATURES", "GPUS", "MODELS", "CalibratedOverheads", "CostModel", "CostPredictor", "EvalShape",
    "GpuSpec", "HostGpuFit", "HostGpuPredictor", "HostOverheads", "Interval", "LinearStepCost", "Link",
    "MeasuredCost", "ModelShape", "NewShapeCost", "ParallelStep", "Prediction", "PredictorFactory", "ProfileTable",
    "RuntimeCalibration", "ShapeTracker", "StepCost", "StepEstimate", "StepPredictor", "ValidationCost",
    "analytic_predictor", "ap_step", "best_method", "cost_model_for", "cost_model_from_config", "cost_predictor",
    "describe", "eval_profile", "features", "fit_calibration", "fit_host_gpu", "fsdp_step", "host_overheads",
    "hostgpu_predictor", "interior", "model_cost", "model_shape", "new_shape_cost", "read_cost_profile",
    "read_profile", "shape_from_spec", "split_profile", "step_time_errors", "write_cost_profile",
]
