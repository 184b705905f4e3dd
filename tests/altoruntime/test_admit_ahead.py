"""Admits prepared ahead: initial weights drawn in the packed layout and in the admits' order, and
a burst of admits growing the stacks once; what they train is unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from altosim.policy.types import Admit, JobSpec, Stop, Suspend, TaskSpec
from altoruntime.backbone import tiny_llama
from altoruntime.runlog import RunLog
from altoruntime.task_runner import TaskRunner
from altoruntime.trainer import MultiAdapterTrainer


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def test_packed_initial_weights_and_one_growth_per_burst(base):
    plain = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, cuda_graphs=False)
    ahead = MultiAdapterTrainer(copy.deepcopy(base), capacity=1, cuda_graphs=False)
    ahead.store.pack = True  # the CUDA path: drawn straight into the packed layout
    jobs = [(f"j{i}", (2, 4, 8)[i % 3], 40 + i) for i in range(5)]
    ahead.reserve([r for _, r, _ in jobs])
    ahead.prefetch_inits([(r, s) for _, r, s in jobs])
    before = ahead.store.generation
    for tr in (plain, ahead):
        for j, r, s in jobs:
            tr.admit(j, rank=r, seed=s)
    assert ahead.store.generation == before + 1 and ahead.capacity == 8 == plain.capacity  # once, not 1->2->4->8
    assert plain.store.generation == before + 3 + 1  # (and a wider rank once)
    for j, _, _ in jobs:
        for (_, a1, b1), (_, a2, b2) in zip(plain.adapter_weights(j), ahead.adapter_weights(j)):
            assert torch.equal(a1, a2) and torch.equal(b1, b2)


class _Recorder:
    """A trainer stand-in that records what a runner tells it ahead."""

    def __init__(self):
        self.calls = []
        self.active = []

    def prefetch_inits(self, pairs):
        self.calls.append(("prefetch", list(pairs)))

    def reserve(self, ranks):
        self.calls.append(("reserve", list(ranks)))


def test_runner_tells_the_trainer_the_admits_about_to_run():
    jobs = tuple(JobSpec(f"t/j{i}", "t", lr=1e-4, rank=4 * (i + 1), batch_size=1, seed=10 + i) for i in range(4))
    task = TaskSpec("t", arrival=0.0, model="m", dataset="d", gpus=1, jobs=jobs, samples_per_job=8)
    tr = _Recorder()
    runner = TaskRunner(task, (0,), tr, data=None, log=RunLog())
    assert tr.calls == [("prefetch", [(4, 10), (8, 11), (12, 12), (16, 13)])]  # the task's order at start
    tr.calls.clear()
    runner.expect([Admit("t", "t/j2"), Admit("t", "t/j0")])
    assert tr.calls == [("reserve", [12, 4]), ("prefetch", [(12, 12), (4, 10), (8, 11), (16, 13)])]
    tr.calls.clear()
    runner.expect([Suspend("t", "t/j1"), Stop("t", "t/j3", "overfitting"), Admit("other", "other/j0")])
    assert tr.calls == []  # nothing of this task comes in


def test_bench_admit_writes_both_modes(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "bench_admit.py"
    spec = importlib.util.spec_from_file_location("bench_admit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as e:
        mod.main(["--out", str(tmp_path), "--admits", "0"])
    assert e.value.code == 2 and "--admits" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert mod.main(["--out", str(tmp_path), "--admits", "3", "--layers", "1", "--hidden", "64", "--repeats", "1"]) == 0
    rows = (tmp_path / "bench_admit.csv").read_text().splitlines()
    assert rows[0].startswith("mode,") and [r.split(",")[0] for r in rows[1:]] == ["before", "after"]
    assert "removed" in capsys.readouterr().out
