"""The Ray engine: the Controller in the driver, each started task a Ray actor stepping on its own GPUs.

`StartTask(task, gpus)` creates a `TaskWorker` actor asking for one GPU (`gpu_share` of one: several
tasks can share a GPU); a task granted P > 1 GPUs becomes, given `make_rank_trainer`, a gang of P
actors in a placement group running adapter parallelism (altoruntime/cluster/gang.py), whose rank 0
the driver talks to (without it: one actor asking for all P GPUs). The task's other actions are
routed to its worker. Workers step concurrently; the driver waits for their answers (`ray.wait`),
takes every answer that comes within `window_s` of the first as one batch, feeds the batch by the
backend contract (`altosim.policy.event_order.feed_batch`: stamped with one time, in the contract's
order, a job's later events dropped once the Controller takes it out) and routes the resulting
actions to the owning workers. The event log is what was fed, in order, so `alto replay`
reproduces every decision.

With `checkpoint_path`, the driver saves its own state too (altoruntime/cluster/driver_state.py):
a driver that is killed and run again with the same arguments replays its trace through the fresh
Controller, starts a worker for every started task and has it catch up from the task's checkpoint.

A worker that dies (or raises) is replaced: the new actor resumes from the task's last checkpoint
and redoes the exchanges after it (altoruntime/cluster/worker.py); a gang is replaced whole. After
`max_restarts` replacements the task's running jobs end with JobFailed naming the error, and so
does every job the Controller admits to it later; the run goes on.

`ray` is imported in altoruntime/cluster/ only (lazily), so the simulator and the single-process
engine never need it.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from altosim.errors import InputError
from altosim.ids import task_dir
from altosim.interrupts import handlers_kept
from altosim.policy.event_order import EVENT_ORDER, feed_batch
from altosim.policy.types import (
    Action, Admit, Event, FinishTask, JobFailed, JobFinished, StartTask, Stop, Suspend, TaskArrived, TaskSpec, Tick,
)
from altoruntime.backend import Policy, record_finish
from altoruntime.cluster.driver_state import restore_driver, save_driver
from altoruntime.cluster.gang import GangRank, RankTrainerFactory
from altoruntime.cluster.worker import TaskWorker, WorkerReport, event_key
from altoruntime.runlog import RunLog
from altoruntime.task_data import TaskData


@dataclass
class _Worker:
    """The driver's record of one task's worker: its actor, the actions sent in each exchange and
    the event keys each answered (what a replacement redoes), the actions waiting to be sent."""

    task: TaskSpec
    gpus: tuple[int, ...]
    actor: Any
    sent: list[list[Action]] = field(default_factory=list)
    answered: list[list[tuple[str, str, int]]] = field(default_factory=list)
    outbox: list[Action] = field(default_factory=list)
    running: set[str] = field(default_factory=set)  # admitted jobs not yet stopped, suspended or ended
    idle: bool = False  # its last answer: no job left to train until new actions come
    restarts: int = 0
    lost: str | None = None  # why the task's worker is gone for good
    gang: list[Any] = field(default_factory=list)  # a multi-GPU task's ranks (rank 0 is `actor`)
    group: Any = None  # their placement group
    where: Any = None  # object ref: the node (and GPU ids) the worker runs on
    replayed: bool = False  # a resumed driver's worker: its next answer is one the log holds already


class RayTaskWorker(TaskWorker):
    """A one-GPU task worker as a Ray actor: also says where it runs."""

    def where(self) -> tuple[str, tuple[str, ...]]:
        import ray

        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), tuple(str(g) for g in ctx.get_accelerator_ids().get("GPU", []))


class RayBackend:
    """Drives `controller` over `tasks` with one Ray actor per started task.

    `make_trainer(task, local_gpus)` runs inside the actor; `data_for(task)` in the driver (the data
    travels to the actor). `make_rank_trainer(task, world, rank, device)` builds one rank's APTrainer
    of a multi-GPU task (without it such a task is one actor asking for all its GPUs, training on
    one). `gpu_share`: the share of a Ray GPU each GPU the Controller grants is (0.5: two one-GPU
    tasks per GPU; a gang's ranks then take a share each and may share a GPU, which NCCL refuses).
    With `address`, joins that Ray cluster; else uses the running Ray instance, or starts a local
    one (and stops it at the end). With `checkpoint_path`, a rerun resumes a killed driver.
    """

    def __init__(
        self,
        controller: Policy,
        make_trainer: Callable[[TaskSpec, tuple[int, ...]], Any],
        data_for: Callable[[TaskSpec], TaskData],
        out_dir: str | Path | None = None,
        on_step: Callable[[str, dict[str, float]], None] | None = None,
        address: str | None = None,
        window_s: float = 0.05,
        checkpoint_every: int = 50,
        eval_rows: int = 256,
        seed: int = 0,
        max_restarts: int = 2,
        worker_cpus: float = 0.0,
        gpus: int | None = None,
        fake_gpus: bool = False,
        base_models: dict[str, str] | None = None,
        save_adapters: str = "best",
        verbose: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        make_rank_trainer: RankTrainerFactory | None = None,
        gpu_share: float = 1.0,
        gang_timeout_s: float = 600.0,
        checkpoint_path: str | Path | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < gpu_share <= 1:
            raise ValueError(f"gpu_share: must be in (0, 1], got {gpu_share}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: must be >= 1 exchanges, got {checkpoint_every}")
        if window_s < 0:
            raise ValueError(f"window_s: must be >= 0 seconds, got {window_s}")
        self.ctl, self.make_trainer, self.data_for = controller, make_trainer, data_for
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.on_step, self.address, self.window_s = on_step, address, window_s
        self.checkpoint_every, self.eval_rows, self.seed = checkpoint_every, eval_rows, seed
        self.max_restarts, self.worker_cpus, self.verbose = max_restarts, worker_cpus, verbose
        # the cluster's GPUs the Controller plans with: Ray must have as many (a CPU machine starts its
        # local instance with that many logical GPUs when `fake_gpus`, as the local engine runs them on the CPU)
        self.gpus, self.fake_gpus = gpus, fake_gpus
        self.base_models = dict(base_models or {})  # task id -> backbone path or hub id, for the exports
        if save_adapters not in ("best", "survivors"):
            raise ValueError(f"save_adapters: best or survivors, got {save_adapters!r}")
        self.save_adapters = save_adapters
        self.clock, self.sleep = clock, sleep
        self.make_rank_trainer, self.gpu_share, self.gang_timeout_s = make_rank_trainer, gpu_share, gang_timeout_s
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_extra = dict(checkpoint_extra or {})  # saved with the driver's state (the run's key)
        self.resumed_events = 0  # events a resumed driver replayed from its checkpoint
        self.log = RunLog()
        self.specs: dict[str, TaskSpec] = {}
        self.workers: dict[str, _Worker] = {}
        self.inflight: dict[Any, str] = {}  # object ref -> task id
        self.orphans: list[Event] = []  # events for the next batch that no worker sent (a lost task's)
        self.restarts: dict[str, int] = {}  # task -> workers replaced
        self.resumed: dict[str, list[int]] = {}  # task -> exchanges each replacement's checkpoint held
        self.failures: list[tuple[str, str]] = []  # (task, the full error) of each worker lost
        self.where: dict[str, list[Any]] = {}  # task -> (node id, GPU ids) of its worker, or node ids of its ranks
        self._t0 = 0.0
        self._ray: Any = None
        self._remote: Any = None
        self._trainer_ref: Any = None
        self._rank_remote: Any = None
        self._rank_trainer_ref: Any = None

    def now(self) -> float:
        return self.clock() - self._t0

    # ------------------------------------------------------------------ the loop
    def run(self, tasks: Iterable[TaskSpec]) -> RunLog:
        try:
            import ray
        except ImportError:
            raise InputError("<args>", "engine", "ray is not installed (pip install -e \".[gpu]\")") from None
        self._ray = ray
        started = not ray.is_initialized()
        if started:
            import logging

            fake = None
            if self.fake_gpus and self.address is None and self.gpus:
                fake = math.ceil(self.gpus * self.gpu_share)
            try:
                with handlers_kept():  # ray.init's SIGTERM handler exits at once; a stop here is Ctrl-C's
                    ray.init(address=self.address or "local", num_gpus=fake, include_dashboard=False,
                             log_to_driver=self.verbose, logging_level=logging.INFO if self.verbose else logging.ERROR)
            except (SystemExit, KeyboardInterrupt) as e:  # a start cut short: a half-started Ray left to the
                with handlers_kept():  # interpreter's exit crashed it (SIGSEGV), so shut it down here
                    ray.shutdown()
                if isinstance(e, SystemExit) and e.code == signal.SIGTERM:  # ray.init's own handler's SIGTERM
                    raise KeyboardInterrupt(f"signal {e.code}") from None
                raise
            except (ConnectionError, RuntimeError, ValueError) as e:
                what = "start a local Ray instance" if self.address is None else f"join the Ray cluster at {self.address!r}"
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError("<args>", "address", f"cannot {what}: {first}") from None
        try:
            have = ray.cluster_resources().get("GPU", 0)
            if self.gpus is not None and have < self.gpus * self.gpu_share - 1e-9:
                raise InputError("<config>", "cluster.gpus", f"{self.gpus} GPUs planned (x {self.gpu_share:g} of a "
                                 f"Ray GPU each) but the Ray cluster has {have:g}: lower cluster.gpus or join a "
                                 "larger cluster")
            self._remote = ray.remote(RayTaskWorker)
            self._rank_remote = ray.remote(GangRank)
            self._trainer_ref = ray.put(self.make_trainer)  # the backbone travels once
            self._rank_trainer_ref = ray.put(self.make_rank_trainer) if self.make_rank_trainer is not None else None
            return self._loop(sorted(tasks, key=lambda t: (t.arrival, t.task_id)))
        finally:
            for w in self.workers.values():
                self._kill(w)
            self.workers.clear()
            if started:
                with handlers_kept():  # dropping Ray's core worker resets SIGTERM to the default (kill) in C
                    ray.shutdown()

    def _loop(self, pending: list[TaskSpec]) -> RunLog:
        ray = self._ray
        self.specs = {t.task_id: t for t in pending}
        self._t0 = self.clock()
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            arrived = self._resume()
            pending = [t for t in pending if t.task_id not in arrived]
        while pending or self.workers:
            due = []
            while pending and pending[0].arrival <= self.now():
                due.append(pending.pop(0))
            if due:
                self._feed([TaskArrived(0.0, t) for t in due], now=self.now())
            self._dispatch()
            if self.orphans:
                events, self.orphans = self.orphans, []
                self._feed(events, now=self.now())
            elif self.inflight:
                timeout = max(0.0, pending[0].arrival - self.now()) if pending else None
                ready, rest = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
                if ready and rest and self.window_s > 0:
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=self.window_s)
                    ready += more
                events = []
                for ref in sorted(ready, key=lambda r: self.inflight[r]):
                    events += self._collect(ref)
                if events:
                    self._feed(events, now=self.now())
            elif pending:  # idle until the next arrival
                self.sleep(max(0.0, pending[0].arrival - self.now()))
            elif self.workers:  # started tasks with nothing to run: let the policy re-plan
                before = len(self.log.actions)
                self._feed([Tick(self.now())])
                if len(self.log.actions) == before:
                    raise RuntimeError(f"controller left tasks {sorted(self.workers)} with no job to run")
        return self.log

    def _feed(self, events: list[Event], now: float | None = None) -> None:
        """One batch to the Controller by the backend contract (stamped `now`)."""
        t0 = time.perf_counter()
        feed_batch(events, self._send, EVENT_ORDER, now)
        self.log.add_phase("policy", t0)

    def _send(self, ev: Event) -> list[Action]:
        """One event to the Controller; its actions logged after it and routed; returns them."""
        self.log.events.append(ev)
        self.log.trace.append(ev)
        if isinstance(ev, (JobFinished, JobFailed)) and ev.task_id in self.workers:
            self.workers[ev.task_id].running.discard(ev.job_id)
        actions = self.ctl.on_event(ev)
        for a in actions:
            self.log.actions.append(a)
            self.log.trace.append(a)
            self._route(a)
        return actions

    # ------------------------------------------------------------------ actions -> workers
    def _route(self, a: Action) -> None:
        if isinstance(a, StartTask):
            t0 = time.perf_counter()
            task = self.specs[a.task_id]
            self.workers[a.task_id] = w = _Worker(task, a.gpus, None)
            self._spawn(w)
            self.log.add_action(a.kind, t0)
            return
        w = self.workers[a.task_id]
        if isinstance(a, Admit):
            w.running.add(a.job_id)
        elif isinstance(a, (Suspend, Stop)):
            w.running.discard(a.job_id)
        if w.lost is None:
            w.outbox.append(a)
        elif isinstance(a, Admit):  # its worker is gone: the job ends at once, with the reason
            self.orphans.append(JobFailed(0.0, a.task_id, a.job_id, w.lost))
        elif isinstance(a, FinishTask):
            self.log.results[a.task_id] = a
            del self.workers[a.task_id]

    def _spawn(self, w: _Worker) -> None:
        """Start the task's worker: one actor, or a gang of len(gpus) actors in a placement group."""
        task, gpus = w.task, w.gpus
        ckpt = None
        if self.out_dir is not None:
            ckpt = str(task_dir(self.out_dir, task.task_id) / "worker.ckpt")
        args = dict(data=self.data_for(task), out_dir=None if self.out_dir is None else str(self.out_dir),
                    eval_rows=self.eval_rows, checkpoint_path=ckpt, base_model=self.base_models.get(task.task_id),
                    save_adapters=self.save_adapters)
        if len(gpus) > 1 and self._rank_trainer_ref is not None:
            self._spawn_gang(w, args)
            return
        n = len(gpus) if len(gpus) > 1 else self.gpu_share
        actor = self._remote.options(num_gpus=n, num_cpus=self.worker_cpus, max_restarts=0)
        w.actor = actor.remote(task, gpus, self._trainer_ref, seed=self.seed, **args)
        w.where = w.actor.where.remote()

    def _spawn_gang(self, w: _Worker, args: dict[str, Any]) -> None:
        """P rank actors, one per bundle of a placement group; rank 0's address is the rendezvous."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        world = len(w.gpus)
        bundle = {k: v for k, v in {"GPU": self.gpu_share, "CPU": self.worker_cpus}.items() if v > 0}
        w.group = placement_group([dict(bundle) for _ in range(world)], strategy="PACK")
        w.gang = [self._rank_remote.options(
            num_gpus=self.gpu_share, num_cpus=self.worker_cpus, max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(w.group, placement_group_bundle_index=r),
        ).remote(r, world) for r in range(world)]
        w.actor = w.gang[0]
        host, port = self._ray.get(w.actor.address.remote())
        joined = [a.join.remote(host, port, w.task, self._rank_trainer_ref, self.seed, self.gang_timeout_s,
                                {**args, "gpus": w.gpus} if r == 0 else None) for r, a in enumerate(w.gang)]
        w.where = joined

    def _kill(self, w: _Worker) -> None:
        for a in w.gang or [w.actor]:
            self._ray.kill(a)
        if w.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(w.group)
            w.group = None

    def _serve(self, w: _Worker) -> None:
        """A gang's other ranks take part in the exchange just sent to rank 0."""
        for a in w.gang[1:]:
            a.serve.remote()

    def _dispatch(self) -> None:
        """Send each worker that is not busy the actions waiting for it (one exchange): none for a
        worker with jobs to train, which goes on stepping. The driver's state is saved first when
        an exchange asks its worker to checkpoint."""
        busy = set(self.inflight.values())
        send = []
        for task_id in sorted(self.workers):
            w = self.workers[task_id]
            if task_id in busy or w.lost is not None or (w.idle and not w.outbox):
                continue
            actions, w.outbox = w.outbox, []
            w.sent.append(actions)
            send.append((w, actions, len(w.sent) % self.checkpoint_every == 0))
        if self.checkpoint_path is not None and any(c for _, _, c in send):
            save_driver(self.checkpoint_path, self.log, self.workers, self.now(),
                        {**self.checkpoint_extra, "orphans": list(self.orphans)})
        for w, actions, checkpoint in send:
            self.inflight[w.actor.exchange.remote(actions, checkpoint)] = w.task.task_id
            self._serve(w)

    def _resume(self) -> set[str]:
        """A rerun after the driver died: the Controller replays the saved trace, every started task
        gets a worker that catches up from its checkpoint. Returns the tasks that had arrived."""
        state = restore_driver(self.checkpoint_path, self.log, self.ctl.on_event)
        self.resumed_events = len(self.log.events)
        self._t0 = self.clock() - state["now"]
        self.orphans = list(state["orphans"])
        for task_id, rec in state["workers"].items():
            w = _Worker(self.specs[task_id], tuple(rec["gpus"]), None)
            for k, v in rec.items():
                setattr(w, k, v)
            w.gpus = tuple(w.gpus)
            self.workers[task_id] = w
            self.restarts[task_id] = w.restarts
            if w.lost is not None:  # gone for good: its admits fail at once, as before
                continue
            self._spawn(w)
            if not w.sent:  # started, nothing sent yet: its outbox goes out as usual
                continue
            w.replayed = len(w.answered) == len(w.sent)  # its last answer was fed before the driver died
            self.inflight[w.actor.catch_up.remote(w.sent, w.answered[:len(w.sent) - 1])] = task_id
            self._serve(w)
        return {e.task.task_id for e in self.log.events if isinstance(e, TaskArrived)}

    # ------------------------------------------------------------------ answers
    def _collect(self, ref: Any) -> list[Event]:
        """The events of one answer (none for a worker that died: it is replaced or lost)."""
        task_id = self.inflight.pop(ref)
        w = self.workers[task_id]
        try:
            rep: WorkerReport = self._ray.get(ref)
        except self._ray.exceptions.RayError as e:
            return self._recover(w, e)
        if rep.resumed_from is not None:
            self.resumed.setdefault(task_id, []).append(rep.resumed_from)
        if w.replayed:  # the answer the dead driver had fed already: the same events, not fed again
            w.replayed = False
            if [event_key(e) for e in rep.events] != [tuple(k) for k in w.answered[-1]]:
                raise RuntimeError(f"task {task_id}: the resumed worker's events differ from the logged ones")
            w.idle = rep.idle
            return []
        w.answered.append([event_key(e) for e in rep.events])
        w.idle = rep.idle
        if w.where is not None:  # (resolved long ago: asked before the first exchange)
            got = self._ray.get(w.where)
            self.where[task_id] = got if isinstance(got, list) else [got]
            w.where = None
        self.log.merge_phases(rep.phases)
        self.log.busy.append((task_id, rep.start - self._wall0(), rep.end - self._wall0()))
        if self.on_step is not None:
            for losses in rep.losses:
                self.on_step(task_id, losses)
        if rep.finished is not None:
            record_finish(self.log, next(a for a in w.sent[-1] if isinstance(a, FinishTask)), rep.finished)
            self._kill(w)
            del self.workers[task_id]
        return list(rep.events)

    def _wall0(self) -> float:
        """The run start on the time.time() clock the workers stamp their stretches with."""
        return time.time() - self.now()

    def _recover(self, w: _Worker, err: Exception) -> list[Event]:
        """Replace a dead worker (it catches up from its checkpoint), or end its running jobs."""
        self.failures.append((w.task.task_id, str(err)))
        reason = f"worker lost: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        self._kill(w)
        task_id = w.task.task_id
        if w.restarts < self.max_restarts:
            w.restarts += 1
            self.restarts[task_id] = w.restarts
            self._spawn(w)
            self.inflight[w.actor.catch_up.remote(w.sent, w.answered)] = task_id
            self._serve(w)
            return []
        w.lost = reason[:300]
        w.outbox.clear()
        return [JobFailed(0.0, task_id, j, w.lost) for j in sorted(w.running)]
