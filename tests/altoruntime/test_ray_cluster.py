"""The Ray engine on a two-node `ray.cluster_utils.Cluster` with fake GPUs (one cluster for the module):
a 2-GPU task as an adapter-parallel gang over gloo, two tasks sharing one GPU, tasks on both nodes,
and a killed driver that resumes with the same command."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a two-node Ray cluster: ~12 s to start on 2 busy cores, shared by the module

from altosim.policy.controller import ControllerConfig  # noqa: E402
from altosim.policy.types import (  # noqa: E402
    EVENT_KINDS, FinishTask, JobFailed, JobSpec, StartTask, StepReport, TaskSpec, to_dict,
)
from altosim.replay import controller_from_meta, replay_records  # noqa: E402
from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.backend import RuntimeBackend  # noqa: E402
from altoruntime.cluster.ray_engine import RayBackend  # noqa: E402
from altoruntime.parallel import APTrainer  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altoruntime.checkpoint import read_checkpoint  # noqa: E402
from tests.altoruntime._batches import make_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]



class RandomData:
    """Batches that are a pure function of (job seed, position)."""

    def train_batch(self, job, position):
        return make_batch(1000 * job.seed + position, job.batch_size, 10), position + 1

    def val_batches(self):
        return [make_batch(996, 3, 12), make_batch(998, 2, 7)]

    def final_metric(self, model):
        """The task's metric at its best adapter: a cross-entropy of the model with it applied."""
        ids, mask, labels = make_batch(990, 2, 9)
        with torch.no_grad():
            return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)


def _task(task_id: str, offset: int, gpus: int = 1, samples: int = 12) -> TaskSpec:
    grid = [(3e-2, 4, 2), (1e-4, 2, 1), (5e-3, 8, 2)]
    jobs = tuple(JobSpec(f"{task_id}{i}", task_id, lr, r, b, seed=offset + i) for i, (lr, r, b) in enumerate(grid))
    return TaskSpec(task_id, 0.0, "tiny", "random", gpus, jobs, samples_per_job=samples, eval_every_samples=2)


def _meta(gpus: int, tasks) -> dict:
    return {"controller": vars(ControllerConfig(num_gpus=gpus, early_exit="alto", inter_task="fifo")),
            "durations": {t.task_id: 1.0 for t in tasks}}


@pytest.fixture(scope="module")
def cluster():
    import sys

    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    from tests.altoruntime import _batches

    for module in (sys.modules[__name__], _batches):  # the actors cannot import the test modules by name
        cloudpickle.register_pickle_by_value(module)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2})
    c.add_node(num_cpus=1, num_gpus=2)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def _trainer(base):
    return lambda task, gpus: MultiAdapterTrainer(copy.deepcopy(base), capacity=2)


def _rank_trainer(base, folder=None, n=0):
    def make(task, world, rank, device):
        _barrier(folder, task.task_id, n)
        return APTrainer(lambda: copy.deepcopy(base), world, rank, device, capacity=2)
    return make


def _started_together(base, folder, n):
    """Trainers whose construction waits until `n` tasks' workers are up (files in `folder`): the
    tasks then step from the same moment, so whether their steps overlap is the engine's doing, not
    how long each actor's process took to start."""
    def make(task, gpus):
        _barrier(folder, task.task_id, n)
        return MultiAdapterTrainer(copy.deepcopy(base), capacity=2)
    return make


# hang guards, not speed bounds: on the shared 2-core machine at load 7 the killed-driver test took
# 476 s in all, and a Ray actor once took ~200 s to start (tests/altoruntime/test_raytune_asha.py)
def _barrier(folder, name, n, timeout_s=600.0):
    if folder is None:
        return
    Path(folder, name).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(Path(folder).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} workers never ran at once (the engine serialized them?)")
        time.sleep(0.05)


def _decisions(trace, task_id):
    """A task's events and actions without times and batch marks; losses left out (compared apart)."""
    out = []
    for x in trace:
        d = {k: v for k, v in to_dict(x).items() if k not in ("now", "more_coming", "train_loss", "val_loss",
                                                                "val_accuracy", "best_val_loss")}
        if d.get("task_id", d.get("task", {}).get("task_id")) == task_id:
            out.append(d)
    return out


def _losses(trace):
    return [(e.job_id, e.step, e.train_loss, e.val_loss) for e in trace if isinstance(e, StepReport)]


def _spans(log, task_ids):
    return {t: (min(s for u, s, _ in log.busy if u == t), max(e for u, _, e in log.busy if u == t)) for t in task_ids}


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_a_gang_task_and_a_one_gpu_task_use_both_nodes_match_one_process_and_replay(
        cluster, base, tmp_path, capsys):
    """Task g (2 GPUs) is a gang of two rank actors running adapter parallelism over gloo (rank 0
    hosts the runner); a (1 GPU) is one actor: 3 GPUs of two 2-GPU nodes, so both nodes are used.
    Every task takes the single-process engine's decisions, its losses equal to 1e-5, the tasks
    step concurrently, and `alto replay` of the run's log gives identical decisions."""
    tasks = [_task("g", 0, gpus=2), _task("a", 10)]
    meta = _meta(3, tasks)
    local_log = RuntimeBackend(controller_from_meta(meta), _trainer(base), lambda t: RandomData()).run(tasks)
    local = local_log.trace
    (tmp_path / "up").mkdir()
    up = tmp_path / "up"  # both tasks' workers start stepping together (see _started_together)
    backend = RayBackend(controller_from_meta(meta), _started_together(base, up, 2), lambda t: RandomData(),
                         out_dir=tmp_path, make_rank_trainer=_rank_trainer(base, up, 2))
    log = backend.run(tasks)
    assert {a.task_id: len(a.gpus) for a in log.actions if isinstance(a, StartTask)} == {"g": 2, "a": 1}
    assert not [e for e in log.events if isinstance(e, JobFailed)], backend.failures
    assert [len(backend.where[t]) for t in "ga"] == [2, 1]  # two rank actors, one worker
    nodes = {backend.where["a"][0][0], *backend.where["g"]}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]} and len(nodes) == 2  # tasks on both nodes
    for task_id in "ga":
        assert _decisions(log.trace, task_id) == _decisions(local, task_id)
        got = _losses([x for x in log.trace if getattr(x, "task_id", "") == task_id])
        ref = _losses([x for x in local if getattr(x, "task_id", "") == task_id])
        assert [g[:2] for g in got] == [r[:2] for r in ref] and len(got) >= 6
        for g, r in zip(got, ref):
            assert g[2:] == pytest.approx(r[2:], rel=1e-5)
    assert {t: f.best_job for t, f in log.results.items()} == {
        a.task_id: a.best_job for a in local if isinstance(a, FinishTask)}
    spans = _spans(log, "ga")
    assert _overlap(spans["g"], spans["a"])
    assert (tmp_path / "tasks" / "g" / "best_adapter" / "adapter_model.safetensors").is_file()
    # the final metric needs the whole backbone: the gang released rank 1 and scored on rank 0 alone
    assert set(log.metrics) == {"g", "a"}
    assert log.metrics == pytest.approx(local_log.metrics, rel=1e-4)
    from altosim.cli import main

    lines = [{"meta": meta}, *(to_dict(x) for x in log.trace)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "events.jsonl")]) == 0
    assert "identical decisions" in capsys.readouterr().out


def test_two_tasks_sharing_one_gpu_step_together(cluster, base, tmp_path):
    """gpu_share 0.5: the Controller plans 2 GPUs, each half a Ray GPU; both one-GPU tasks' actors
    land on the same GPU of one node and their stretches of steps overlap."""
    tasks = [_task("c", 30), _task("d", 40)]
    backend = RayBackend(controller_from_meta(_meta(2, tasks)), _started_together(base, tmp_path, 2),
                         lambda t: RandomData(), gpu_share=0.5)
    log = backend.run(tasks)
    assert sorted(a.gpus for a in log.actions if isinstance(a, StartTask)) == [(0,), (1,)]
    assert not [e for e in log.events if isinstance(e, JobFailed)], backend.failures
    assert backend.where["c"] == backend.where["d"] and len(backend.where["c"][0][1]) == 1  # one node, one GPU
    assert set(log.results) == {"c", "d"}
    spans = _spans(log, "cd")
    assert _overlap(spans["c"], spans["d"])


def _cli_config(tmp_path) -> Path:
    space = {"lr": [1e-2, 1e-3], "rank": [2], "batch_size": [2]}
    wl = {"name": "two", "synthetic": True, "tasks": [
        {"id": t, "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": g, "search_space": space,
         "samples_per_job": 16, "eval_every_samples": 4, "seq_len": 160} for t, g in (("t1", 2), ("t2", 1))]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 3},
           "policy": {"early_exit": {"name": "alto"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return tmp_path / "cfg.json"


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]


def test_a_killed_driver_resumes_every_task_with_the_same_command(cluster, tmp_path):
    """`alto run --engine ray` (t1 on 2 GPUs: a gang; t2 on 1) is killed (SIGKILL) once its driver
    checkpoint holds reports and a worker has checkpointed; the same command resumes: the saved trace
    is the log's start, every task (the gang restored from its ranks' checkpoint) finishes with the
    decisions the local engine takes, and `alto replay` reproduces them."""
    from altosim.cli import main

    cfg = _cli_config(tmp_path)
    common = ["--backbone", "tiny", "--n-train", "40", "--n-val", "4", "--n-eval", "0", "--quiet"]
    assert main(["run", str(cfg), "--out", str(tmp_path / "local"), *common]) == 0
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "altosim.cli", "run", str(cfg), "--out", str(out), *common, "--engine", "ray",
           "--address", cluster.address, "--checkpoint-every", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ckpt = out / "run.ckpt"
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, saved = time.monotonic() + 600, []
    while first.poll() is None and time.monotonic() < deadline:
        if ckpt.exists() and (out / "tasks" / "t1" / "worker.ckpt").exists():
            saved = read_checkpoint(ckpt)["extra"]["trace"]
            if sum(isinstance(e, StepReport) for e in saved) >= 4:
                break
        time.sleep(0.1)
    alive = first.poll() is None
    first.kill()  # SIGKILL: no handler runs, nothing is written on the way out
    _, err = first.communicate(timeout=60)
    assert alive and saved, f"ended or hung before a checkpoint with reports (rc {first.returncode}): {err[-2000:]}"
    assert first.returncode == -signal.SIGKILL
    saved = read_checkpoint(ckpt)["extra"]["trace"]  # what the rerun starts from

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not ckpt.exists() and not list(out.glob("tasks/*/worker.ckpt"))
    lines = _records(out)
    assert sorted(len(r["gpus"]) for r in lines[1:] if r.get("kind") == "start_task") == [1, 2]
    assert lines[0]["meta"]["resumed_events"] == sum(1 for x in saved if x.kind in EVENT_KINDS) > 0
    assert lines[0]["meta"]["resumed_exchanges"]["t1"][0] >= 1  # the gang restored its ranks' checkpoint
    assert lines[1:1 + len(saved)] == json.loads(json.dumps([to_dict(e) for e in saved]))
    local = _records(tmp_path / "local")
    for task_id in ("t1", "t2"):  # every decision as the uninterrupted local engine took it
        mine = [{k: v for k, v in r.items() if k in ("kind", "job_id", "step", "reason")} for r in lines[1:]
                if r.get("task_id", r.get("task", {}).get("task_id")) == task_id]
        ref = [{k: v for k, v in r.items() if k in ("kind", "job_id", "step", "reason")} for r in local[1:]
               if r.get("task_id", r.get("task", {}).get("task_id")) == task_id]
        assert mine == ref and mine[-1]["kind"] == "finish_task"
    assert main(["replay", str(out / "events.jsonl")]) == 0
