"""The Ray engine's task worker without Ray: exchanges with a real Controller, and a replacement
worker that catches up from the last checkpoint to exactly where the lost one was."""

from __future__ import annotations

import copy

import pytest

from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.event_order import order_events
from altosim.policy.types import FinishTask, JobSpec, StartTask, TaskArrived, TaskSpec
from altoruntime.backbone import tiny_llama
from altoruntime.cluster.worker import TaskWorker, event_key
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch


class RandomData:
    def train_batch(self, job, position):
        return make_batch(1000 * job.seed + position, job.batch_size, 10), position + 1

    def val_batches(self):
        return [make_batch(996, 3, 12)]


TASK = TaskSpec("a", 0.0, "tiny", "random", 1,
                tuple(JobSpec(f"a{i}", "a", lr, r, b, dropout=0.1, seed=i)
                      for i, (lr, r, b) in enumerate([(3e-2, 4, 2), (1e-4, 2, 1), (5e-3, 8, 2)])),
                samples_per_job=8, eval_every_samples=2)


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _drive(base, ckpt, kill_at=None):
    """Exchanges until the task finishes, as the driver runs them; at exchange `kill_at` the worker
    is replaced by one that catches up. Returns every answer's events and the task's result."""
    ctl = Controller(ControllerConfig(num_gpus=1, early_exit="alto", inter_task="fifo"), duration_for=lambda t: 1.0)
    make = lambda task, gpus: MultiAdapterTrainer(copy.deepcopy(base), capacity=2)  # noqa: E731

    def worker():
        return TaskWorker(TASK, (0,), make, RandomData(), None, 256, seed=0, checkpoint_path=str(ckpt))

    w = worker()
    actions = [a for a in ctl.on_event(TaskArrived(0.0, TASK)) if not isinstance(a, StartTask)]
    sent, answered, seen = [], [], []
    while True:
        sent.append(actions)
        if len(sent) - 1 == kill_at:
            w = worker()  # the lost worker's answer never came
            rep = w.catch_up(sent, answered)
        else:
            rep = w.exchange(actions, checkpoint=len(sent) % 2 == 0)
        answered.append([event_key(e) for e in rep.events])
        seen.append(rep.events)
        assert rep.events or rep.finished is not None, f"exchange {len(sent) - 1}: the worker is stuck"
        if rep.finished is not None:
            return seen, next(a for a in actions if isinstance(a, FinishTask)), rep
        actions = [a for e in order_events(rep.events, now=float(len(sent))) for a in ctl.on_event(e)]


def test_a_replacement_worker_catches_up_to_the_same_events_and_result(base, tmp_path):
    full, fin, _ = _drive(base, tmp_path / "full.ckpt")
    n = len(full)
    assert n >= 5 and fin.best_job is not None and not (tmp_path / "full.ckpt").exists()  # removed at the finish
    for kill_at in (n // 2, n - 1):  # past a checkpoint; at the exchange that holds the FinishTask
        got, got_fin, rep = _drive(base, tmp_path / f"k{kill_at}.ckpt", kill_at)
        assert got == full and got_fin == fin  # dropout draws too: the RNGs came back with the checkpoint
        if kill_at == n - 1:
            assert rep.finished is not None  # the FinishTask was carried out by the replacement
