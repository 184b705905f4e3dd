"""The Ray engine on a local Ray instance with fake GPUs: tasks step concurrently on their own actors,
take the single-process engine's decisions, log a replayable trace, and survive a killed worker."""

from __future__ import annotations

import copy
import json
import time

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray instance and an actor per task: ~30 s each on 2 busy cores

from altosim.policy.controller import ControllerConfig  # noqa: E402
from altosim.policy.types import FinishTask, JobFailed, JobSpec, StartTask, TaskSpec, to_dict  # noqa: E402
from altosim.replay import controller_from_meta, replay_records  # noqa: E402
from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.backend import RuntimeBackend  # noqa: E402
from altoruntime.cluster.ray_engine import RayBackend  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from tests.altoruntime._batches import make_batch  # noqa: E402


class RandomData:
    """Batches that are a pure function of (job seed, position)."""

    def train_batch(self, job, position):
        return make_batch(1000 * job.seed + position, job.batch_size, 10), position + 1

    def val_batches(self):
        return [make_batch(996, 3, 12), make_batch(998, 2, 7)]


def _task(task_id: str, offset: int) -> TaskSpec:
    grid = [(3e-2, 4, 2), (1e-4, 2, 1), (5e-3, 8, 2)]
    jobs = tuple(JobSpec(f"{task_id}{i}", task_id, lr, r, b, seed=offset + i) for i, (lr, r, b) in enumerate(grid))
    return TaskSpec(task_id, 0.0, "tiny", "random", 1, jobs, samples_per_job=12, eval_every_samples=2)


TASKS = [_task("a", 0), _task("b", 10)]
META = {"controller": vars(ControllerConfig(num_gpus=4, early_exit="alto", inter_task="fifo")),
        "durations": {"a": 1.0, "b": 1.0}}


@pytest.fixture(scope="module")
def cluster():
    import sys

    from ray import cloudpickle

    from tests.altoruntime import _batches

    # the actors cannot import this test module by pytest's name for it: ship its data classes by value
    for module in (sys.modules[__name__], _batches):
        cloudpickle.register_pickle_by_value(module)
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _trainer(base, barrier=None):
    """Each actor's trainer; with `barrier` (a folder), an actor's constructor waits until both tasks'
    actors are up, so their steps run at the same time however slowly a loaded host starts actors."""

    def make(task, gpus):
        if barrier is not None:
            (barrier / task.task_id).touch()
            deadline = time.monotonic() + 600  # a Ray worker once took ~200 s to start at load 7
            while len(list(barrier.iterdir())) < len(TASKS) and time.monotonic() < deadline:
                time.sleep(0.02)
        return MultiAdapterTrainer(copy.deepcopy(base), capacity=2)

    return make


def _per_task(trace, task_id):
    """A task's own events and actions; times left out (wall clock), and the batch mark of arrivals
    (the single-process engine sends arrivals one by one)."""
    out = []
    for x in trace:
        d = {k: v for k, v in to_dict(x).items() if k not in ("now", "more_coming")}
        if d.get("task_id", d.get("task", {}).get("task_id")) == task_id:
            out.append(d)
    return out


def _same(got, want, rel=1e-5) -> None:
    """Equal records, floats (losses) to `rel`: an actor's torch runs on another thread count, so
    its float sums may differ in the last bits. (Rounding both to 5 digits was no tolerance: two
    values 1e-12 apart can round to neighbouring digits.)"""
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, rel=rel, abs=1e-12)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for k in want:
            _same(got[k], want[k], rel)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            _same(g, w, rel)
    else:
        assert got == want


@pytest.fixture(scope="module")
def local_trace(base):
    return RuntimeBackend(controller_from_meta(META), _trainer(base), lambda t: RandomData()).run(TASKS).trace


def test_two_tasks_step_concurrently_take_the_local_decisions_and_replay(cluster, base, local_trace, tmp_path,
                                                                        tmp_path_factory):
    backend = RayBackend(controller_from_meta(META), _trainer(base, tmp_path_factory.mktemp("up")),
                         lambda t: RandomData(), out_dir=tmp_path)
    log = backend.run(TASKS)
    starts = {a.task_id: a.gpus for a in log.actions if isinstance(a, StartTask)}
    assert starts == {"a": (0,), "b": (1,)}  # one actor each, on its own GPU
    assert not [e for e in log.events if isinstance(e, JobFailed)], backend.failures
    local = {a.task_id: a.best_job for a in local_trace if isinstance(a, FinishTask)}
    assert {t: f.best_job for t, f in log.results.items()} == local and all(local.values())
    for task_id in ("a", "b"):  # every decision, in order, as the single-process engine took it
        _same(_per_task(log.trace, task_id), _per_task(local_trace, task_id))
    # the two workers' stretches of steps overlap in time
    spans = {t: (min(s for u, s, _ in log.busy if u == t), max(e for u, _, e in log.busy if u == t)) for t in "ab"}
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1]
    assert all((tmp_path / "tasks" / t / "best_adapter" / "adapter_model.safetensors").is_file() for t in "ab")
    assert not list(tmp_path.rglob("worker.ckpt"))  # removed at each task's finish
    records = [{"meta": META}, *json.loads(json.dumps([to_dict(x) for x in log.trace]))]
    rep = replay_records(records)
    assert rep.identical and rep.actions == len(log.actions)
    # a log whose decisions were changed is caught (the check can fail)
    i = next(i for i, r in enumerate(records) if r.get("kind") == "stop")
    records[i] = {**records[i], "reason": "budget"}
    assert not replay_records(records).identical


def test_a_killed_worker_resumes_from_its_checkpoint_and_one_lost_for_good_fails_its_jobs(
        cluster, base, local_trace, tmp_path):
    """b's worker is killed once: its replacement resumes from the checkpoint and b takes every
    decision it takes unharmed. a's worker is killed twice (once more than `max_restarts`): a's
    jobs end with JobFailed naming the loss, and the run goes on."""
    backend: RayBackend

    def kill(task_id, losses, seen=[]):  # noqa: B006 (steps seen, across calls)
        seen.append(task_id)
        if (task_id, seen.count(task_id)) in {("b", 6), ("a", 2), ("a", 3)}:  # b: past a checkpoint
            ray.kill(backend.workers[task_id].actor)

    backend = RayBackend(controller_from_meta(META), _trainer(base), lambda t: RandomData(), out_dir=tmp_path,
                         on_step=kill, checkpoint_every=2, max_restarts=1)
    log = backend.run(TASKS)
    assert backend.restarts == {"a": 1, "b": 1} and backend.resumed["b"][0] >= 2
    _same(_per_task(log.trace, "b"), _per_task(local_trace, "b"))  # nothing lost or seen twice
    failed = [e for e in log.events if isinstance(e, JobFailed)]
    assert failed and {e.task_id for e in failed} == {"a"} and all(e.reason.startswith("worker lost") for e in failed)
    # a's result is a job that ended before the loss (or none), never one the loss failed
    assert log.results["a"].best_job not in {e.job_id for e in failed}


def test_alto_run_engine_ray_writes_outputs_that_replay(cluster, tmp_path, capsys):
    """`alto run --engine ray` on the running Ray instance (a run started without one starts its
    own): two tasks on a 2-GPU cluster, both results, and `alto replay` gives identical decisions."""
    from altosim.cli import main

    space = {"lr": [1e-2, 1e-3], "rank": [2], "batch_size": [2]}
    wl = {"name": "two", "synthetic": True, "tasks": [
        {"id": t, "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1, "search_space": space,
         "samples_per_job": 4, "eval_every_samples": 2, "seq_len": 160} for t in ("t1", "t2")]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 2},
           "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc = main(["run", str(tmp_path / "cfg.json"), "--backbone", "tiny", "--out", str(out), "--n-train", "8",
               "--n-val", "4", "--n-eval", "0", "--engine", "ray", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "t1: best " in printed and "(t1/j" in printed and "t2: best " in printed and "(t2/j" in printed
    lines = (out / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["meta"]["engine"] == "ray"
    starts = [json.loads(x)["gpus"] for x in lines[1:] if json.loads(x).get("kind") == "start_task"]
    assert sorted(starts) == [[0], [1]]
    assert main(["replay", str(out / "events.jsonl")]) == 0
    assert "identical decisions" in capsys.readouterr().out
