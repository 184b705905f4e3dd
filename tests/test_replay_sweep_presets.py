"""The README's command claims end to end: `alto replay` on a tampered log fails with one line
naming the first differing decision; every preset's policy set is what its name says (and
`alto simulate --preset` runs it); `alto sweep` runs every policy it is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from altosim.cli import main
from altosim.presets import ABLATION, PAPER_ABLATION, PRESETS, preset_policy
from altosim.schemas import config_from_dict, load_config
from altosim.simulate import load_inputs, simulate
from altosim.workloads import default_workload_path

ROOT = Path(__file__).resolve().parents[1]


def _small_config(tmp_path: Path, gpus: int = 2) -> Path:
    """Three tasks of the default workload (1, 1 and 2 GPUs), 8 short jobs each, on `gpus` GPUs."""
    wl = json.loads(Path(default_workload_path()).read_text())
    wl["tasks"] = [t for t in wl["tasks"] if t["gpus"] <= 2][:3]
    for t in wl["tasks"]:
        t["samples_per_job"] = 480
        t["search_space"].update(lr=[1e-4, 5e-4], rank=[16, 32], batch_size=[1, 2])
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"workload: wl.json\ncluster: {{gpus: {gpus}}}\n"
                   "policy: {inter_task: {name: cpsat, params: {time_limit_s: 0.2}}}\n")
    return cfg


# ---------------------------------------------------------------- alto replay


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("replay")
    out = tmp / "out"
    assert main(["simulate", str(_small_config(tmp)), "--out", str(out), "-q", "--preset", "full"]) == 0
    return out / "events.jsonl"


def _tamper(src: Path, dst: Path) -> tuple[int, str]:
    """Change the job of the first logged stop; returns (line number, the forged job id)."""
    lines = src.read_text().splitlines()
    for n, text in enumerate(lines[1:], start=2):
        rec = json.loads(text)
        stops = [a for a in rec.get("actions", []) if a["kind"] == "stop"]
        if stops:
            stops[0]["job_id"] = forged = f"{stops[0]['job_id']}-forged"
            lines[n - 1] = json.dumps(rec)
            dst.write_text("\n".join(lines) + "\n")
            return n, forged
    raise AssertionError("the log has no stop to tamper with (early exit did not act)")


def test_replay_of_an_untouched_log_is_identical(simulated_log, capsys):
    assert main(["replay", str(simulated_log)]) == 0
    assert "identical decisions" in capsys.readouterr().out


def test_replay_of_a_tampered_log_fails_with_one_line(simulated_log, tmp_path):
    bad = tmp_path / "events.jsonl"
    line, forged = _tamper(simulated_log, bad)
    r = subprocess.run([sys.executable, "-m", "altosim.cli", "replay", str(bad)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    said = (r.stdout + r.stderr).strip()
    assert len(said.splitlines()) == 1 and len(said) < 400, said
    assert str(bad) in said and f"line {line}:" in said and forged in said, said
    assert "Traceback" not in r.stderr


def test_replay_names_a_dropped_decision(simulated_log, tmp_path, capsys):
    lines = simulated_log.read_text().splitlines()
    n = next(i for i, x in enumerate(lines[1:], 1) if json.loads(x).get("actions"))
    rec = json.loads(lines[n])
    first = rec["actions"][0]
    rec["actions"] = []
    lines[n] = json.dumps(rec)
    bad = tmp_path / "events.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(bad)]) == 1
    cap = capsys.readouterr()
    said = (cap.out + cap.err).strip()
    assert len(said.splitlines()) == 1, said
    assert f"line {n + 1}:" in said and "logged no action but replayed" in said and first["kind"] in said, said


# ---------------------------------------------------------------- presets


def _expected(name: str) -> tuple[bool, str, str]:
    """(batching, early exit, inter-task scheduler) from the preset's name alone."""
    if name == "sequential":
        return False, "none", "fifo"
    if name == "full":
        return True, "alto", "cpsat"
    if name in ("asha", "median"):  # other pruners in the full system
        return True, name, "cpsat"
    if name == "sjf":  # the full system with SJF in place of CP-SAT
        return True, "alto", "sjf"
    parts = name.removesuffix("_only").split("+")
    assert set(parts) <= {"batching", "scheduler", "early_exit"}, name
    return "batching" in parts, "alto" if "early_exit" in parts else "none", "cpsat" if "scheduler" in parts else "fifo"


def test_readme_lists_exactly_the_presets():
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("Presets (`--preset`):", 1)[1].split("\n\n", 1)[0]
    assert sorted(x.strip(" `.\n") for x in listed.split(",")) == sorted(PRESETS)
    assert set(ABLATION) <= set(PRESETS) and list(PAPER_ABLATION) == ABLATION


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_is_what_its_name_says(name):
    batching, early_exit, inter = _expected(name)
    pol = preset_policy(name)
    assert (pol["batching"], pol["early_exit"]["name"], pol["inter_task"]["name"]) == (batching, early_exit, inter)


@pytest.mark.parametrize("name", ["scheduler_only"])
def test_simulate_preset_runs_the_named_policies(name, tmp_path, capsys):
    batching, early_exit, inter = _expected(name)
    out = tmp_path / "out"
    assert main(["simulate", str(_small_config(tmp_path)), "--preset", name, "--out", str(out), "-q"]) == 0
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert summary["policy"] == f"{early_exit}+{inter}" + ("" if batching else "+sequential")
    meta = json.loads((out / "events.jsonl").read_text().splitlines()[0])["meta"]["controller"]
    assert (meta["early_exit"], meta["inter_task"]) == (early_exit, inter)


# ---------------------------------------------------------------- alto sweep


def test_sweep_runs_every_policy_it_is_given(tmp_path, capsys):
    cfg = _small_config(tmp_path)
    names = ["sequential", "scheduler_only", "early_exit_only", "full"]
    assert main(["sweep", str(cfg), "--policies", ",".join(names), "--out", str(tmp_path / "sweep"), "-q"]) == 0
    sweep = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(sweep["policy"]) == names
    # each row is that preset's own run: the figures a single simulation of it gives
    base = load_config(str(cfg))
    inputs = load_inputs(base)
    for name, row in zip(names, sweep.itertuples()):
        data = base.model_dump()
        data["policy"].update(preset_policy(name))
        alone = simulate(config_from_dict(data, base.file), inputs, record_log=False).summary
        for col in ("makespan_h", "mean_jct_h", "samples_saved", "gpu_busy_share"):
            assert getattr(row, col) == pytest.approx(alone[col], rel=1e-9, abs=1e-12), (name, col)
    # and the presets really differ: early exit saves samples, the others do not
    saved = dict(zip(sweep["policy"], sweep["samples_saved"]))
    assert saved["sequential"] == saved["scheduler_only"] == 0 < saved["early_exit_only"]
