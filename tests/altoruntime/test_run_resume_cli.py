"""`alto run` stopped by SIGTERM (as a time limit or Ctrl-C stops it) says, in one line, where its
checkpoint is; the same command then resumes from that checkpoint and finishes (README: "the same
command resumes it"). End to end through the CLI, in subprocesses, with the tiny backbone."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from altoruntime.checkpoint import read_checkpoint
from altosim.policy.types import StepReport, to_dict

ROOT = Path(__file__).resolve().parents[2]
JOBS, SAMPLES, EVERY = 2, 16, 4  # 8 fused steps, 4 evaluation reports per job


def _config(tmp_path: Path) -> Path:
    wl = {"name": "resume", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1,
        "search_space": {"lr": [3e-3, 5e-4], "rank": [4], "batch_size": [2]},
        "samples_per_job": SAMPLES, "eval_every_samples": EVERY, "seq_len": 160}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 1},
           "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return tmp_path / "cfg.json"


def _trace(ckpt: Path) -> list:
    """The checkpoint's event/action trace ([] while there is no checkpoint)."""
    return list(read_checkpoint(ckpt)["extra"]["trace"]) if ckpt.exists() else []


def _reports(trace: list) -> int:
    return sum(isinstance(e, StepReport) for e in trace)


def test_alto_run_interrupted_then_rerun_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "altosim.cli", "run", str(_config(tmp_path)), "--backbone", "tiny", "--out", str(out),
           "--n-train", "40", "--n-val", "4", "--n-eval", "0", "--checkpoint-every", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ckpt = out / "run.ckpt"

    # -- first run: stop it (SIGTERM) once a checkpoint holds a few evaluation reports
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    trace: list = []
    seen = None
    while first.poll() is None and time.monotonic() < deadline:
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if stamp != seen:  # read each new checkpoint once (os.replace: never a half-written one)
            seen, trace = stamp, _trace(ckpt)
            if _reports(trace) >= JOBS:  # one round of evaluations
                break
        time.sleep(0.05)
    if first.poll() is not None or time.monotonic() >= deadline:
        first.kill()
        _, err = first.communicate()
        raise AssertionError(f"`alto run --checkpoint-every 1` finished or hung without writing a checkpoint "
                             f"with progress (rc {first.returncode}): {err[-2000:]}")
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    said = err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("alto run: interrupted"), err
    assert f"resume from {ckpt}" in said[0], said[0]
    saved = _trace(ckpt)  # what the rerun must start from (the run may have saved again before stopping)
    assert saved[:len(trace)] == trace and _reports(saved) < JOBS * SAMPLES // EVERY  # stopped before the end

    # -- the same command again: resumes, finishes, removes the checkpoint
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert not ckpt.exists()
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert "interrupted" not in lines[0]["meta"]
    # the resumed run's log starts with the checkpoint's trace, record for record (times included:
    # a run that started over would have logged its own)
    assert lines[1:1 + len(saved)] == json.loads(json.dumps([to_dict(e) for e in saved]))
    kinds = [r.get("kind") for r in lines[1:]]
    assert kinds.count("job_finished") == JOBS and kinds[-1] == "finish_task"
    rows = list(csv.DictReader(open(out / "tasks.csv")))
    assert len(rows) == 1 and rows[0]["samples_trained"] == rows[0]["samples_budget"] == str(JOBS * SAMPLES)
    # and the stitched log replays to the same decisions
    rep = subprocess.run([sys.executable, "-m", "altosim.cli", "replay", str(out / "events.jsonl")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0 and "identical decisions" in rep.stdout, rep.stdout + rep.stderr


def test_alto_run_without_a_config_says_what_it_needs(capsys):
    from altosim.cli import main

    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a run config" in err and "quickstart.yaml" in err, err
