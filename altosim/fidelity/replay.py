"""The run replayed in the SimPy backend, and its decisions compared with the run's.

Both backends feed the Controller in the contract's order (altosim/policy/event_order.py), so
the replay is the plain Simulator fed in the order the log was written in (`log_order`: a log
from before the contract is replayed in its legacy slot order), with the runtime's host costs
and logged failures for an `alto run` log; a difference in decisions is then a difference in
what the policy saw, not in bookkeeping. A log written by `alto simulate` is replayed with the
Controller its header describes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from altosim.build import runtime_controller
from altosim.cost import HostOverheads, StepCost
from altosim.errors import InputError
from altosim.fidelity.runlog import ReportedCurve, RunFolder, decisions, failure_steps, flat_curve, job_curves
from altosim.policy.event_order import EVENT_ORDER, LEGACY_ORDER, ORDERS
from altosim.policy.types import JobSpec, TaskSpec
from altosim.replay import controller_from_meta
from altosim.schemas import RunConfig
from altosim.sim.engine import Simulator
from altosim.sim.runtime_costs import RuntimeCosts


def log_order(run: RunFolder) -> int:
    """The event order a run's log was written in: its header's `event_order`; without one, an
    `alto run` log predates the contract (the legacy slot order) and an `alto simulate` log
    followed the engine's order, which is the contract's."""
    default = LEGACY_ORDER if run.protocol == "runtime" else EVENT_ORDER
    order = run.meta.get("event_order", default)
    if order not in ORDERS or isinstance(order, bool):
        raise InputError(str(run.folder / "events.jsonl"), "meta.event_order",
                         f"unknown event order {order!r}; known: {', '.join(map(str, ORDERS))}", 1)
    return order


def replay_run(run: RunFolder, cfg: RunConfig | None, cost: StepCost,
               eval_time: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
               before_steps: Callable[[TaskSpec, list[JobSpec]], float] | None = None,
               overheads: HostOverheads | None = None,
               charged: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The run replayed in the simulator with step costs `cost` (and validation costs
    `eval_time`, other time before a run of steps `before_steps`, the actions' host time
    `overheads`; runtime logs only); returns the flat trace. `charged`, when given, receives the
    simulated seconds by what they stand for (step, validate, new_shape, snapshot, action kinds)."""
    order = log_order(run)
    if run.protocol == "sim":
        if "controller" not in run.meta:
            raise InputError(str(run.folder / "events.jsonl"), "meta.controller",
                             "missing (needed to rebuild the policy)", 1)
        ctl, costs, failures = controller_from_meta(run.meta), None, None
    else:
        if cfg is None:
            raise InputError(str(run.folder), "--config",
                             "needed to replay an `alto run` log (or put config.json in the run folder)")
        ctl, costs, failures = runtime_controller(cfg), RuntimeCosts(eval_time, before_steps, overheads), failure_steps(run)
    tasks = run.tasks
    curves = job_curves(run)
    total = {j.job_id: t.total_steps(j) for t in tasks for j in t.jobs}
    cache: dict[str, Any] = {}

    def curve(job: JobSpec) -> Any:
        if job.job_id not in cache:
            c = curves.get(job.job_id)
            cache[job.job_id] = ReportedCurve(c, total[job.job_id]) if c is not None else flat_curve(job)
        return cache[job.job_id]

    res = Simulator(tasks, ctl, cost, curve, event_order=order, costs=costs, failures=failures).run()
    if charged is not None and costs is not None:
        charged.update(costs.charged)
    return [x for rec in res.log for x in (rec["event"], *rec["actions"])]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@dataclass
class DecisionDiff:
    real: int
    sim: int
    identical: int  # positions where both took the same decision
    first: int | None  # index of the first difference (None: identical sequences)
    real_at: dict[str, Any] | None
    sim_at: dict[str, Any] | None


def compare_decisions(real: list[dict[str, Any]], sim: list[dict[str, Any]]) -> DecisionDiff:
    """The two runs' actions, one by one in order."""
    a, b = decisions(real), decisions(json.loads(json.dumps(sim)))
    same = [_same(x, y) for x, y in zip(a, b)]
    first = next((i for i, s in enumerate(same) if not s), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    pick = lambda xs: xs[first] if first is not None and first < len(xs) else None  # noqa: E731
    return DecisionDiff(len(a), len(b), sum(same), first, pick(a), pick(b))
