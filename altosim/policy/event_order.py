"""The order in which a backend hands a batch of simultaneous events to the Controller."""

from __future__ import annotations

import dataclasses
from typing import Iterable

from altosim.policy.types import Event, JobFailed, JobFinished, StepReport, TaskArrived, Tick

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

    A backend with concurrent task workers (the Ray engine, altoruntime/cluster/) does not feed
    events as they come: it collects what reached it within one time window (plus the arrivals due
    by then) into a batch, stamps the batch with one time (`now`, when given: the batch is
    simultaneous for the policy), and feeds it in this order:

    1. arrivals, by (arrival time, task id); each but the last has `more_coming=True`, so the
       Controller plans the arrivals of one batch as a whole;
    2. job events, by (task id, job id), a job's StepReports by step before its JobFinished,
       then its JobFailed;
    3. a Tick last.

    The order depends only on the events, never on which worker answered first, so a run's
    decisions are a function of its event log and `alto replay` reproduces them. The window only
    decides where batches split; the log records each event in the order it was fed.
    """
    evs = sorted(events, key=_key)
    if now is not None:
        evs = [dataclasses.replace(e, now=now) for e in evs]
    last = max((i for i, e in enumerate(evs) if isinstance(e, TaskArrived)), default=-1)
    return [dataclasses.replace(e, more_coming=i < last) if isinstance(e, TaskArrived) else e
            for i, e in enumerate(evs)]
