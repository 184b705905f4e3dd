"""`alto run` refuses a rigid (fixed-duration) task with one line: it has nothing to train."""

from __future__ import annotations

import json

from altosim.cli import main


def test_alto_run_refuses_a_rigid_task(tmp_path, capsys):
    tuning = {"id": "t1", "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1, "samples_per_job": 6,
              "search_space": {"lr": [1e-2], "rank": [2], "batch_size": [2]}}
    rigid = {"id": "r1", "arrival": 5, "model": "x", "dataset": "y", "gpus": 1, "rigid": True, "duration_s": 60}
    (tmp_path / "wl.json").write_text(json.dumps({"name": "w", "synthetic": True, "tasks": [tuning, rigid]}))
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.json", "cluster": {"gpus": 1}}))
    out = tmp_path / "o"
    rc = main(["run", str(tmp_path / "cfg.json"), "--backbone", "tiny", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "wl.json" in err and "tasks[1].rigid" in err and "nothing to train" in err
    assert not out.exists() or not any(out.iterdir())
