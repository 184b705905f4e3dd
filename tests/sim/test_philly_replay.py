"""Replaying a slice of the real Philly trace: work is conserved and durations are honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from altosim.importers.philly import import_philly
from altosim.schemas import RunConfig
from altosim.simulate import load_inputs, simulate

PHILLY = Path(__file__).resolve().parents[3] / "shared" / "traces" / "philly" / "philly_2017-10-01_14.csv"


@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory):
    if not PHILLY.exists():
        pytest.skip("../shared/traces/philly is not beside the repo")
    lines = PHILLY.read_text().splitlines()[:121]  # header + 120 jobs
    p = tmp_path_factory.mktemp("philly") / "slice.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _run(slice_csv, early_exit: str, inter: str, gpus: int = 16):
    wl = import_philly(slice_csv, configs_per_task=4, max_gpus=gpus).workload
    cfg = RunConfig.model_validate({"cluster": {"gpus": gpus}, "policy": {"early_exit": early_exit,
                                                                      "inter_task": inter}})
    inputs = load_inputs(cfg, workload=wl)
    return wl, simulate(cfg, inputs, regret=False)


@pytest.mark.parametrize("inter", ["fifo", "sjf", "cpsat"])
def test_without_early_exit_each_task_runs_exactly_its_trace_duration(slice_csv, inter):
    wl, run = _run(slice_csv, "none", inter)
    for rec in wl.tasks:
        o = run.result.tasks[rec.id]
        assert o.finish - o.start == pytest.approx(rec.duration_s, rel=1e-6, abs=1e-6)
        assert o.start >= rec.arrival - 1e-9


@pytest.mark.parametrize("early_exit", ["none", "alto"])
def test_gpu_seconds_used_equal_gpu_seconds_held(slice_csv, early_exit):
    """Busy GPU-seconds summed over executed step spans == GPU time held by tasks (no leaks)."""
    wl, run = _run(slice_csv, early_exit, "fifo")
    held = sum((end - start) for _, _, start, end in run.result.gantt)
    assert run.result.busy_gpu_s == pytest.approx(held, rel=1e-9)
    assert run.result.samples_trained == sum(j.samples for j in run.result.jobs.values())
    if early_exit == "alto":
        assert run.result.samples_trained < run.result.samples_full
