"""experiments/raytune_asha.py on CPU: Ray Tune + ASHA over PEFT trials of a tiny backbone, its CSVs
in the e2e columns, ASHA stopping weak configs at equal samples, regret against a reference sweep."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from altosim.schemas import LossCurve, LossTraceSet
from altosim.traces_io import write_loss_traces

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "raytune_asha.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _reference(path: Path, vals: dict[tuple[float, int, int], float]) -> Path:
    curves = [LossCurve(lr=lr, rank=r, batch_size=b, alpha=2.0 * r, samples=np.array([4.0, 8.0]),
                        train=np.array([v + 1, v]), val=np.array([v + 0.5, v]), metric=np.array([np.nan, np.nan]),
                        steps=np.array([1, 2])) for (lr, r, b), v in vals.items()]
    ts = LossTraceSet(name="ref", model="tiny", dataset="arithmetic", synthetic=True, source="test", curves=curves)
    write_loss_traces(ts, path)
    return path


def _tops() -> set[Path]:
    """The repository's top-level entries, but pytest's and Hypothesis' caches (another test
    process under xdist may create either at any time: Hypothesis writes .hypothesis/ in the
    working directory at a worker's first property test)."""
    return {p for p in ROOT.iterdir() if p.name not in (".pytest_cache", ".hypothesis")}


@pytest.mark.slow
def test_raytune_asha_tiny_stops_weak_configs_and_reports_regret(tmp_path):
    pytest.importorskip("ray.tune")
    # lr 1e-2 learns the tiny model's data within a few steps, 1e-5 does not: the weak trials run after
    # the strong ones (one at a time: a trial actor imports torch, costly on 2 shared cores) and ASHA
    # stops them at its first rung
    ref_vals = {(1e-2, 2, 2): 2.0, (1e-2, 2, 4): 2.2, (1e-5, 2, 2): 3.0, (1e-5, 2, 4): 3.1}
    ref = _reference(tmp_path / "ref.csv.gz", ref_vals)
    out = tmp_path / "rt"
    before, results = _tops(), (Path.home() / "ray_results").exists()
    cmd = [sys.executable, str(SCRIPT), "--backbone", "tiny", "--n-train", "16", "--n-val", "8", "--n-eval", "2",
           "--epochs", "1", "--evals", "4", "--ranks", "2", "--lrs", "1e-2,1e-5", "--batches", "2,4",
           "--trials-at-once", "1", "--cpus", "2", "--rungs", "default", "--sequential-s", "100",
           "--reference-trace", str(ref), "--out", str(out)]
    # a hang guard, not a speed bound: 83-111 s at load 6-10 on the shared 2-core machine, but 436 s
    # once at load 7 (the first trial done at 245 s), and a run timed out at 300 s
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _tops() == before  # Ray's files stay in a temp folder
    assert (Path.home() / "ray_results").exists() == results

    row = pd.read_csv(out / "raytune_cpu.csv").iloc[0]
    trials = pd.read_csv(out / "raytune_cpu_trials.csv")
    reports = pd.read_csv(out / "raytune_cpu_reports.csv")
    assert row["method"] == "raytune_asha_default" and row["configs"] == 4 and len(trials) == 4
    assert 0 < row["wall_s"] and row["speedup_vs_sequential"] == pytest.approx(100 / row["wall_s"])
    assert not trials["error"].notna().any() and row["failed_trials"] == 0 and row["trials_done"] == 4
    # ASHA stopped something, and the totals are the per-trial table's
    assert row["stopped_by_asha"] == trials["stopped_by_asha"].sum() >= 1
    assert (trials.loc[trials["stopped_by_asha"], "samples_trained"] < 16).all()
    assert (trials.loc[~trials["stopped_by_asha"], "samples_trained"] == 16).all()
    assert row["samples_trained"] == trials["samples_trained"].sum() < 4 * 16
    assert row["samples_saved"] == pytest.approx(1 - row["samples_trained"] / 64)
    # every report is a trial's progress; its last one is the per-trial table's row
    for _, t in trials.iterrows():
        mine = reports[reports["job_id"] == t["job_id"]]
        assert list(mine["samples"]) == sorted(mine["samples"]) and mine["samples"].iloc[-1] == t["samples_trained"]
        assert mine["val_loss"].min() == pytest.approx(t["best_val_loss"])
        assert mine["val_loss"].iloc[-1] == pytest.approx(t["last_val_loss"])
    # the best config is the lowest validation loss; its regret is its full-sweep loss vs the sweep's best
    best = trials.loc[trials["best_val_loss"].idxmin()]
    assert row["best_config"] == f"lr={best['lr']:g} r={best['rank']} b={best['batch_size']}"
    assert row["best_val_loss"] == pytest.approx(best["best_val_loss"])
    key = (best["lr"], int(best["rank"]), int(best["batch_size"]))
    assert row["regret"] == pytest.approx(ref_vals[key] / 2.0 - 1)
    assert row["val_loss_vs_full_sweep"] == pytest.approx(row["best_val_loss"] / 2.0 - 1)
    assert "reduction_factor=4" in row["note"] and "1 trials at once" in row["note"]
    # the best config ran to the end: its saved best-validation adapter is scored by generation
    assert not best["stopped_by_asha"] and 0.0 <= row["best_metric"] <= 1.0 and "scored after Tune" in row["note"]


@pytest.mark.parametrize("flag,value", [("--rungs", "default,bogus"), ("--trials-at-once", "0"), ("--lrs", "1e-3,-1"),
                                        ("--dataset", "no_such_task"), ("--reference-trace", "missing.csv.gz")])
def test_bad_flag_is_one_line_and_exit_2(tmp_path, capsys, flag, value):
    sys.path.insert(0, str(ROOT / "experiments"))
    from raytune_asha import main

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["--backbone", "tiny", flag, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err
    assert not out.exists()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5000), evals=st.integers(1, 100), batches=st.lists(st.sampled_from([1, 2, 4, 8, 16]),
                                                                          min_size=1, max_size=4, unique=True))
def test_rung_settings_in_samples(n, evals, batches):
    sys.path.insert(0, str(ROOT / "experiments"))
    from raytune_asha import rung_params
    from e2e_sweep import workload

    task = workload("arithmetic", n, evals, 64, [2], [1e-3], batches).to_task_specs()[0]
    grace, rf = rung_params("default", task)
    first = [min(s * j.batch_size for s in range(1, task.total_steps(j) + 1) if task.is_eval_step(j, s))
             for j in task.jobs]
    assert rf == 4 and grace == min(first)  # one evaluation: every config reports at or past it first
    grace, rf = rung_params("gentle", task)
    assert rf == 3 and grace == max(1, math.ceil(n / 10))
