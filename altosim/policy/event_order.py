"""The order in which a backend hands a batch of simultaneous events to the Controller.

This is the backend contract (ARCHITECTURE.md): both backends (the SimPy engine and the runtime's
engines) feed every batch through `feed_batch`, so the Controller sees the same events in the same
order whichever backend produced them. Logs carry the contract's version in their header
(`event_order`, `EVENT_ORDER`); a runtime log without it was written before the contract
(`LEGACY_ORDER`) and is replayed in its own order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

from altosim.policy.types import (
    Action, Admit, Event, JobFailed, JobFinished, StepReport, Stop, Suspend, TaskArrived, Tick,
)

EVENT_ORDER = 1  # the contract below; event logs record it in their header as `event_order`
# what a runtime log without `event_order` followed (`alto run` before the contract): arrivals one
# event each, a fused step's events in the trainer's slot (first-admission) order, every report
# sent even after an earlier one stopped its job (only the JobFinished of such a job dropped)
LEGACY_ORDER = 0
ORDERS = (LEGACY_ORDER, EVENT_ORDER)

_RANK = {StepReport: 0, JobFinished: 1, JobFailed: 2}


def _key(ev: Event) -> tuple:
    if isinstance(ev, TaskArrived):
        return (0, ev.task.arrival, ev.task.task_id)
    if isinstance(ev, Tick):
        return (2,)
    step = ev.step if isinstance(ev, StepReport) else 0
    return (1, ev.task_id, ev.job_id, _RANK[type(ev)], step)


def order_events(events: Iterable[Event], now: float | None = None) -> list[Event]:
    """The backend contract's event order, for events a backend collects as one batch.

    A batch is what happens at one instant: the arrivals due at once, the events of one fused
    step (its StepReports, JobFinished and JobFailed), or, in a backend with concurrent task
    workers (the Ray engine, altoruntime/cluster/), what reached the driver within one time window.
    The batch is stamped with one time (`now`, when given: it is simultaneous for the policy) and
    fed in this order:

    1. arrivals, by (arrival time, task id); each but the last has `more_coming=True`, so the
       Controller plans the arrivals of one batch as a whole;
    2. job events, by (task id, job id), a job's StepReports by step before its JobFinished,
       then its JobFailed;
    3. a Tick last.

    The order depends only on the events, never on which worker answered first or in which slot
    a trainer holds a job, so a run's decisions are a function of its event log and `alto replay`
    reproduces them. `feed_batch` adds the rule for jobs the policy takes out mid-batch.
    """
    evs = list(events)
    if len(evs) > 1:  # (a step's batch is often one report: no sort)
        evs.sort(key=_key)
    if now is not None:
        evs = [dataclasses.replace(e, now=now) for e in evs]
    last = max((i for i, e in enumerate(evs) if isinstance(e, TaskArrived)), default=-1)
    if last < 0:
        return evs
    return [dataclasses.replace(e, more_coming=i < last) if isinstance(e, TaskArrived) else e
            for i, e in enumerate(evs)]


def feed_batch(events: Sequence[Event], deliver: Callable[[Event], list[Action]], order: int = EVENT_ORDER,
               now: float | None = None) -> list[Event]:
    """Feed one batch through `deliver` (hands an event to the Controller, carries out its actions
    and returns them) in the contract's order; returns the events fed, in order.

    A job the Controller stops or suspends while the batch is fed gets none of its later events
    in the batch (its StepReports, JobFinished, JobFailed are dropped): they describe a job the
    policy has already taken out, and both backends drop them alike (a resume in the batch
    lifts this). `order=LEGACY_ORDER` replays a log written before the contract: the events in
    the order given, only a taken-out job's JobFinished dropped."""
    if order not in ORDERS:
        raise ValueError(f"order: unknown event order {order!r}; known: {ORDERS}")
    evs = order_events(events, now) if order == EVENT_ORDER else list(events)
    out: set[tuple[str, str]] = set()  # (task, job) taken out earlier in this batch
    fed = []
    for ev in evs:
        job = getattr(ev, "job_id", None)
        if job is not None and (ev.task_id, job) in out and (order == EVENT_ORDER or isinstance(ev, JobFinished)):
            continue
        fed.append(ev)
        for a in deliver(ev):
            if isinstance(a, (Stop, Suspend)):
                out.add((a.task_id, a.job_id))
            elif isinstance(a, Admit):
                out.discard((a.task_id, a.job_id))
    return fed
