"""A Controller built from a RunConfig: the one way `alto simulate`, `alto run` and the fidelity
replay turn a config's `policy` and `cluster` into the policy core's objects.

Light on purpose (no SimPy, pandas or matplotlib): the GPU runtime imports it to build the
Controller it drives. Worst-case task durations and memory models come from the config's cost
model (`altosim.cost`); the policy core itself (`altosim.policy`) stays free of schemas and files.
"""

from __future__ import annotations

from typing import Any, Callable

from altosim.cost import cost_model_from_config
from altosim.errors import InputError
from altosim.policy import inter as _inter  # noqa: F401  (registers the inter-task schedulers)
from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.early_exit import build_early_exit
from altosim.policy.event_order import EVENT_ORDER
from altosim.policy.memory import MemoryModel
from altosim.policy.registry import INTER_TASK
from altosim.policy.types import TaskSpec
from altosim.schemas import RunConfig


def controller_config(cfg: RunConfig) -> ControllerConfig:
    """The Controller's settings as the config names them."""
    p = cfg.policy
    return ControllerConfig(
        num_gpus=cfg.cluster.gpus,
        early_exit=p.early_exit.name, early_exit_params=dict(p.early_exit.params),
        inter_task=p.inter_task.name, inter_task_params=dict(p.inter_task.params),
        batching=p.batching, max_jobs_per_group=p.max_jobs_per_group,
    )


def check_policy(cfg: RunConfig) -> None:
    """Build each named policy once, so a bad name or parameter fails before anything runs."""
    p = cfg.policy
    try:  # a parameter out of any sane range (`cuts: 1000000000`) may overflow rather than fail a check
        build_early_exit(p.early_exit.name, dict(p.early_exit.params))
    except (ValueError, TypeError, ArithmeticError, MemoryError) as e:
        raise InputError(cfg.file, "policy.early_exit", str(e) or type(e).__name__) from None
    try:
        INTER_TASK.build(p.inter_task.name, **dict(p.inter_task.params))
    except (ValueError, TypeError, ArithmeticError, MemoryError) as e:
        raise InputError(cfg.file, "policy.inter_task", str(e) or type(e).__name__) from None
    if p.planner_sees_arrivals and not INTER_TASK.build(p.inter_task.name, **dict(p.inter_task.params)).plans_releases:
        raise InputError(cfg.file, "policy.planner_sees_arrivals",
                         f"the {p.inter_task.name!r} scheduler cannot plan known arrivals; use inter_task: cpsat")
    try:  # what the Controller derives from the policies (e.g. its expected-work prior) must compute too
        Controller(controller_config(cfg), duration_for=lambda t: 1.0, memory_for=lambda t: None)
    except (ValueError, TypeError, ArithmeticError, MemoryError) as e:
        raise InputError(cfg.file, "policy", f"{type(e).__name__}: {e}") from None


def _runtime_policy(cfg: RunConfig) -> tuple[ControllerConfig, Callable[[TaskSpec], float],
                                              Callable[[TaskSpec], MemoryModel | None]]:
    """The policy config, worst-case durations and memory models from the cost model where it
    knows the backbone (else durations in steps and no memory model)."""
    check_policy(cfg)
    cost, ccfg, margin = cost_model_from_config(cfg), controller_config(cfg), cfg.policy.memory_margin

    def duration(t: TaskSpec) -> float:
        try:
            return cost.worst_case_duration(t, ccfg.batching, ccfg.max_jobs_per_group, margin)
        except ValueError:  # a backbone the cost model does not know: steps as time units
            return float(sum(t.total_steps(j) for j in t.jobs))

    def memory(t: TaskSpec) -> MemoryModel | None:
        try:
            return cost.memory_model(t, margin)
        except ValueError:
            return None

    return ccfg, duration, memory


def runtime_controller(cfg: RunConfig) -> Controller:
    """The Controller `alto run` drives for `cfg` (and the fidelity replay rebuilds)."""
    ccfg, duration, memory = _runtime_policy(cfg)
    return Controller(ccfg, duration_for=duration, memory_for=memory)


def runtime_meta(cfg: RunConfig, tasks: list[TaskSpec]) -> dict[str, Any]:
    """What `alto run`'s event log header records so that `alto replay` rebuilds the same
    Controller from the log alone (the keys `alto simulate` writes)."""
    ccfg, duration, memory = _runtime_policy(cfg)
    models = {t.task_id: memory(t) for t in tasks}
    return {"controller": dict(vars(ccfg)), "durations": {t.task_id: duration(t) for t in tasks},
            "memory": {k: vars(m) for k, m in models.items() if m is not None},
            "event_order": EVENT_ORDER}  # the backend contract's order the events were fed in
