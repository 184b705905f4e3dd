"""The Ray engine driver's checkpoint: what a rerun of the same command needs to resume every task.

The driver's state is its event/action trace (a fresh Controller replays it and must take the
logged actions again: it is deterministic), the results so far, and for each started task the
worker's record: the actions sent in each exchange, the event keys each answered, the actions
not yet sent. The trainers are not in it: each worker checkpoints its own task
(altoruntime/cluster/worker.py), and a resumed worker catches up from that checkpoint by redoing
the recorded exchanges after it.

One invariant makes the two agree: the driver saves its state (atomically, altoruntime/checkpoint.py)
after recording an exchange and before sending it whenever that exchange asks its worker to
checkpoint, so a worker's checkpoint never holds an exchange the driver's record lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from altosim.policy.types import Event, JobFailed, JobFinished, StepReport, TaskArrived, Tick
from altoruntime.checkpoint import read_checkpoint, save_checkpoint
from altoruntime.runlog import RunLog

_EVENTS = (TaskArrived, StepReport, JobFinished, JobFailed, Tick)
_WORKER = ("gpus", "sent", "answered", "outbox", "running", "idle", "restarts", "lost")  # the fields saved
_LOG = ("results", "exported", "metrics", "job_metrics", "objectives", "minimize")


def save_driver(path: Path, log: RunLog, workers: dict[str, Any], now: float, extra: dict[str, Any]) -> None:
    """The trace, results and each worker's record (`_WORKER` fields of the engine's records)."""
    state = {**extra, "engine": "ray", "now": now, "trace": list(log.trace),
             "log": {k: dict(getattr(log, k)) for k in _LOG},
             "workers": {t: {k: getattr(w, k) for k in _WORKER} for t, w in workers.items()}}
    save_checkpoint(path, {}, state)


def restore_driver(path: Path, log: RunLog, on_event: Callable[[Event], list]) -> dict[str, Any]:
    """Replay the saved trace through `on_event` (a fresh Controller's), refill `log`; returns the
    saved state (its "workers" and "now" are the caller's to rebuild)."""
    state = read_checkpoint(path)["extra"]
    if state.get("engine") != "ray":
        raise ValueError(f"path: {path} is not a Ray engine driver checkpoint")
    replayed: list[Any] = []
    for item in state["trace"]:
        if isinstance(item, _EVENTS):
            replayed.append(item)
            replayed.extend(on_event(item))
    if replayed != state["trace"]:
        raise RuntimeError("driver checkpoint: the controller's replayed actions differ from the logged ones")
    log.trace = list(state["trace"])
    log.events = [e for e in log.trace if isinstance(e, _EVENTS)]
    log.actions = [a for a in log.trace if not isinstance(a, _EVENTS)]
    for k in _LOG:
        getattr(log, k).update(state["log"][k])
    return state
