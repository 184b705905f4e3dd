"""Boundary schemas: workload traces, loss traces, cost profiles, run configs.

Readers and writers live in `altosim.traces_io`; this package only defines and validates.
"""

from altosim.schemas.config import (
    ANALYTIC,
    DEFAULT,
    ClusterConfig,
    PolicyConfig,
    PolicyRef,
    RunConfig,
    config_from_dict,
    load_config,
)
from altosim.schemas.cost import CostProfile, CostRecord
from altosim.schemas.loss import LossCurve, LossTraceSet
from altosim.schemas.search_space import SearchSpace, job_seed
from altosim.schemas.workload import TaskRecord, WorkloadTrace

__all__ = [
    "ANALYTIC", "DEFAULT", "ClusterConfig", "CostProfile", "CostRecord", "LossCurve",
    "LossTraceSet", "PolicyConfig", "PolicyRef", "RunConfig", "SearchSpace", "TaskRecord",
    "WorkloadTrace", "config_from_dict", "job_seed", "load_config",
]
