"""The `alto` command: the default run works, bad input is one line + exit 2 + no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from altosim.cli import main
from altosim.traces_io import read_workload
from altosim.workloads import default_workload_path


def _bad(capsys, argv, out: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alto: error: ") and "\n" not in err, err
    assert not out.exists(), "a failed run must not write outputs"
    return err


def _small_workload(tmp_path: Path, **change) -> Path:
    wl = json.loads(Path(default_workload_path()).read_text())
    wl["tasks"] = wl["tasks"][:2]
    for t in wl["tasks"]:
        t["samples_per_job"] = 480
    for k, v in change.items():
        wl["tasks"][1][k] = v
    p = tmp_path / "wl.json"
    p.write_text(json.dumps(wl))
    return p


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_simulate_small_config_writes_outputs_and_replays(tmp_path, capsys):
    wl = _small_workload(tmp_path)
    cfg = _config(tmp_path, f"workload: {wl.name}\ncluster: {{gpus: 2}}\n")
    out = tmp_path / "out"
    assert main(["simulate", str(cfg), "--out", str(out), "-q"]) == 0
    for f in ["summary.csv", "tasks.csv", "events.jsonl", "gantt.png", "plans.csv"]:
        assert (out / f).stat().st_size > 0, f
    tasks = pd.read_csv(out / "tasks.csv")
    assert list(tasks["task"]) == ["t01", "t02"] and tasks["finish_s"].notna().all()
    assert "makespan_h" in capsys.readouterr().out
    assert main(["replay", str(out / "events.jsonl")]) == 0
    assert "identical decisions" in capsys.readouterr().out


def test_unknown_policy_name(tmp_path, capsys):
    out = tmp_path / "out"
    err = _bad(capsys, ["simulate", "--early-exit", "nope", "--out", str(out)], out)
    assert "nope" in err and "alto" in err  # names the bad value and the known ones


def test_task_larger_than_cluster(tmp_path, capsys):
    wl = _small_workload(tmp_path, gpus=16)
    out = tmp_path / "out"
    err = _bad(capsys, ["simulate", str(_config(tmp_path, f"workload: {wl.name}\n")), "--out", str(out)], out)
    assert "wl.json" in err and "tasks[1].gpus" in err and "16" in err


@pytest.mark.parametrize("change,field", [
    ({"arrival": -5}, "tasks[1].arrival"),
    ({"gpus": "two"}, "tasks[1].gpus"),
    ({"samples_per_job": 0}, "tasks[1].samples_per_job"),
])
def test_malformed_workload(tmp_path, capsys, change, field):
    wl = _small_workload(tmp_path, **change)
    out = tmp_path / "out"
    err = _bad(capsys, ["simulate", str(_config(tmp_path, f"workload: {wl.name}\n")), "--out", str(out)], out)
    assert "wl.json" in err and field in err


def test_malformed_config(tmp_path, capsys):
    out = tmp_path / "out"
    err = _bad(capsys, ["simulate", str(_config(tmp_path, "cluster: {gpus: -1}\n")), "--out", str(out)], out)
    assert "run.yaml" in err and "cluster.gpus" in err
    err = _bad(capsys, ["simulate", str(_config(tmp_path, "cluster: [1, 2\n")), "--out", str(out)], out)
    assert "run.yaml" in err
    err = _bad(capsys, ["simulate", str(_config(tmp_path, "clustr: {gpus: 8}\n")), "--out", str(out)], out)
    assert "clustr" in err


def test_bad_policy_params(tmp_path, capsys):
    cfg = _config(tmp_path, "policy: {early_exit: {name: alto, params: {tau_gap: -1}}}\n")
    out = tmp_path / "out"
    err = _bad(capsys, ["simulate", str(cfg), "--out", str(out)], out)
    assert "tau_gap" in err


def test_console_script_default_run(tmp_path):
    """`alto simulate` with no arguments, as the README runs it (in a temp working dir)."""
    r = subprocess.run([sys.executable, "-m", "altosim.cli", "simulate", "-q"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "makespan_h" in r.stdout
    s = pd.read_csv(tmp_path / "runs" / "simulate" / "summary.csv")
    assert s["tasks"].iloc[0] == len(read_workload(default_workload_path()).tasks) == 11
