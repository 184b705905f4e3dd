"""A task worker: one started task's `TaskRunner` in its own process (the Ray engine's actor).

Plain Python: altoruntime/cluster/ray_engine.py wraps it with `ray.remote`, so it is testable
without Ray. The driver and a worker talk in *exchanges*: the driver sends the Controller's
actions for this task, the worker carries them out, then steps until some step has events (or no
job is left to train) and returns them. Actions for a task come only from that task's own events,
so stepping ahead to the next event never runs past a decision.

A worker checkpoints (altoruntime/checkpoint.py) when the driver asks, right after an exchange's
actions. A replacement worker (`catch_up`) loads the last checkpoint and redoes the exchanges
after it from the driver's record of their actions: the steps are deterministic given the
restored RNGs, so it reaches the lost worker's state without the Controller seeing any event twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from altosim.policy.types import Action, Event, FinishTask, JobFinished, StepReport, TaskSpec
from altoruntime.checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from altoruntime.repro import seed_everything
from altoruntime.runlog import RunLog
from altoruntime.task_data import TaskData
from altoruntime.task_runner import Finished, TaskRunner


def event_key(ev: Event) -> tuple[str, str, int]:
    """What must repeat when a replacement worker redoes a step: the event's kind, job and step."""
    return (ev.kind, getattr(ev, "job_id", ""), ev.step if isinstance(ev, StepReport) else -1)


@dataclass
class WorkerReport:
    """One exchange's answer: the events of the step that had some (their `now` is the driver's to
    set), each step's losses, the task's result if the actions finished it, the phase seconds spent,
    and the wall-clock stretch (time.time()) the exchange took."""

    events: list[Event] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    finished: Finished | None = None
    phases: dict[str, float] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    idle: bool = False  # no job trains: the worker waits for actions
    resumed_from: int | None = None  # a replacement's answer: the exchanges its checkpoint held


class TaskWorker:
    """Hosts one task's trainer on the GPUs its process sees (Ray sets CUDA_VISIBLE_DEVICES, so the
    trainer gets local ids 0..n-1 whatever cluster ids the Controller granted)."""

    def __init__(self, task: TaskSpec, gpus: tuple[int, ...], make_trainer: Callable[[TaskSpec, tuple[int, ...]], Any],
                 data: TaskData, out_dir: str | None, eval_rows: int, seed: int,
                 checkpoint_path: str | None = None, base_model: str | None = None,
                 save_adapters: str = "best") -> None:
        seed_everything(seed)  # this process's dropout masks: the same draws every time it is rebuilt
        self.log = RunLog()
        trainer = make_trainer(task, tuple(range(len(gpus))))
        self.runner = TaskRunner(task, gpus, trainer, data, self.log,
                                 out_dir=Path(out_dir) if out_dir is not None else None, eval_rows=eval_rows,
                                 base_model=base_model, save_adapters=save_adapters)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.exchanges = 0  # exchanges whose actions were applied

    def exchange(self, actions: list[Action], checkpoint: bool = False) -> WorkerReport:
        """Carry out `actions`, checkpoint if asked, then step to the next events."""
        start = time.time()
        finished = self._apply(actions)
        if checkpoint and self.checkpoint_path is not None and finished is None:
            self._save()
        return self._report(start, finished)

    def catch_up(self, actions: list[list[Action]], keys: list[list[tuple[str, str, int]]]) -> WorkerReport:
        """Rebuild the lost worker's state after its exchanges `actions[0..n-1]` (`keys[j]`: the
        events exchange j returned) and answer exchange n-1, whose answer was lost."""
        start = time.time()
        done = held = self._restore()  # exchanges the checkpoint holds
        finished = None
        if done == 0:
            finished = self._apply(actions[0])
            done = 1
        for j in range(done, len(actions)):
            events, _ = self._advance()
            got = [event_key(e) for e in events]
            if got != [tuple(k) for k in keys[j - 1]]:
                raise RuntimeError(f"task {self.runner.task.task_id}: redoing exchange {j - 1} gave events {got}, "
                                   f"the lost worker gave {keys[j - 1]}")
            finished = self._apply(actions[j])  # (only the last exchange's can hold the FinishTask)
        self.log.phases.clear()  # redone work: not the run's phases
        rep = self._report(start, finished)
        rep.resumed_from = held
        return rep

    def _apply(self, actions: list[Action]) -> Finished | None:
        self.exchanges += 1
        finished = None
        self.runner.expect(actions)
        for a in actions:
            result = self.runner.apply(a)
            if isinstance(a, FinishTask):
                finished = result or Finished()
        if finished is not None and self.checkpoint_path is not None:
            self.checkpoint_path.unlink(missing_ok=True)
        return finished

    def _advance(self) -> tuple[list[Event], list[dict[str, float]]]:
        events: list[Event] = []
        losses: list[dict[str, float]] = []
        while self.runner.active and not events:
            self.runner.step(lambda: 0.0, events.append, lambda task_id, step_losses: losses.append(step_losses))
        for e in events:  # a finished job leaves its slot now: the driver's actions come next exchange
            if isinstance(e, JobFinished):
                self.runner.finish(e.job_id)
        return events, losses

    def _report(self, start: float, finished: Finished | None) -> WorkerReport:
        events, losses = self._advance() if finished is None else ([], [])
        phases = dict(self.log.phases)
        self.log.phases.clear()
        return WorkerReport(events, losses, finished, phases, start, time.time(),
                            idle=finished is None and not events)

    def _save(self) -> None:
        extra = {"exchanges": self.exchanges, "jobs": self.runner.progress()}
        save_checkpoint(self.checkpoint_path, self.runner.trainer, extra)

    def _restore(self) -> int:
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return 0
        payload = read_checkpoint(self.checkpoint_path)
        extra = apply_checkpoint(payload, self.runner.trainer)  # the trainer and this process's RNGs
        self.runner.load_progress(extra["jobs"])
        self.exchanges = int(extra["exchanges"])
        return self.exchanges
