"""`alto run` end to end on CPU with the tiny backbone: outputs written, bad input is one line."""

from __future__ import annotations

import ast
import csv
import json

import altoruntime.run as run
from altosim.cli import main


def _config(tmp_path, dataset="list_ops"):
    wl = {"name": "tiny-run", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": "tiny", "dataset": dataset, "gpus": 1,
        "search_space": {"lr": [1e-2, 1e-3], "rank": [2, 4], "batch_size": [2]},
        "samples_per_job": 6, "eval_every_samples": 4, "seq_len": 160}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 1},
           "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return str(tmp_path / "cfg.json")


def test_alto_run_writes_outputs_and_best_adapter(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    logs, write_outputs = [], run.write_outputs  # the run's log and wall time, before summary.csv rounds them

    def spy(log, tasks, out_dir, wall_s, meta):
        logs.append((log, wall_s))
        write_outputs(log, tasks, out_dir, wall_s, meta)

    monkeypatch.setattr(run, "write_outputs", spy)
    rc = main(["run", _config(tmp_path), "--backbone", "tiny", "--out", str(out), "--n-train", "12",
               "--n-val", "4", "--n-eval", "3", "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "tasks.csv")))
    assert len(rows) == 1 and rows[0]["best_job"].startswith("t1/j") and rows[0]["samples_trained"] == "24"
    assert (out / "tasks" / "t1" / "best_adapter" / "adapter_model.safetensors").is_file()
    assert 0.0 <= float(rows[0]["best_metric"]) <= 1.0
    lines = (out / "events.jsonl").read_text().splitlines()
    kinds = [json.loads(x).get("kind") for x in lines[1:]]
    assert kinds[:2] == ["task_arrived", "start_task"] and kinds[-1] == "finish_task"
    assert kinds.count("job_finished") == 4
    assert not (out / "run.ckpt").exists()
    assert "t1: best lr=" in capsys.readouterr().out  # the best config named by its hyperparameters
    summary = next(csv.DictReader(open(out / "summary.csv")))  # where the time went, by phase
    names = ("data", "step", "validate", "snapshot", "policy", "start_task", "admit", "suspend", "stop", "finish_task",
             "job_finished")
    phases = {k: float(summary[f"{k}_s"]) for k in names}
    # each phase and the wall time are rounded to the millisecond in summary.csv: a phase of under
    # half a millisecond (4 admits of a tiny model on a fast machine) is written as 0.0, so strict
    # positivity is asserted on the run's own seconds, and summary.csv must be exactly their rounding
    [(log, wall)] = logs
    assert phases == {k: round(log.phases.get(k, 0.0), 3) for k in names} and float(summary["wall_s"]) == round(wall, 3)
    assert log.phases["step"] > 0 and log.phases["validate"] > 0 and log.phases["snapshot"] > 0
    # the actions are timed apart (the task's start, 4 admits, its finish with the export)
    assert log.phases["start_task"] > 0 and log.phases["admit"] > 0 and log.phases["finish_task"] > 0
    assert log.phases["job_finished"] > 0  # the 4 jobs' own finishes free their slots
    assert log.phases.get("suspend", 0.0) == log.phases.get("stop", 0.0) == 0.0  # no early exit: neither happens
    assert min(log.phases.values()) >= 0 and sum(log.phases.values()) <= wall
    assert min(phases.values()) >= 0 and sum(phases.values()) <= float(summary["wall_s"]) + 0.0005 * (len(phases) + 1)
    # and before the run clock: reading the data, opening the models, tokenizing
    setup = ast.literal_eval(summary["setup_seconds"])
    # each rounded to the millisecond: a tiny model opens in under one, so only their sum must be > 0
    assert set(setup) == {"data", "models", "tokenize"} and min(setup.values()) >= 0 and sum(setup.values()) > 0


def test_alto_run_unknown_dataset_is_one_line_error(tmp_path, capsys):
    rc = main(["run", _config(tmp_path, dataset="nope"), "--backbone", "tiny", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "tasks[0].dataset" in err and "nope" in err and len(err.splitlines()) == 1


def test_a_refusal_without_quiet_is_one_line_with_no_progress_bar(tmp_path, capsys):
    """The bar appears only once samples are counted: a refusal before stays its one line (the bar
    was drawn first, session 20's probe: 62 refusals began with `run: 0sample ...` on stderr)."""
    for argv in (["--engine", "x"], []):
        (tmp_path / str(len(argv))).mkdir()
        cfg = _config(tmp_path / str(len(argv)), dataset="nope" if not argv else "list_ops")
        rc = main(["run", cfg, "--backbone", "tiny", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "\r" not in err and err.startswith("alto: error: "), repr(err)
        assert not (tmp_path / "o").exists()


def test_the_progress_bar_shows_samples_once_counted(capsys):
    from altoruntime.cli import ProgressBar

    bar = ProgressBar()
    bar.on_step("t1", {"j0": 1.0})  # before any count: nothing drawn
    assert capsys.readouterr().err == ""
    bar.on_samples(3, 12)
    bar.on_step("t1", {"j0": 1.0})
    assert bar.bar.n == 3 and bar.bar.total == 12
    bar.close()
    assert "sample" in capsys.readouterr().err


def _own_data_config(tmp_path, data_name="data.jsonl"):
    rows = [{"prompt": f"Reverse {w}:", "completion": f" {w[::-1]}"} for w in (f"w{i:03d}x" for i in range(120))]
    data = tmp_path / "own"
    data.mkdir(parents=True)
    (data / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(data / "data.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        w.writeheader()
        w.writerows(rows)
    (data / "cols.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    return _config(tmp_path, dataset=f"own/{data_name}")  # relative to the workload file


def test_alto_run_trains_on_a_jsonl_named_by_the_workload(tmp_path, capsys):
    for name in ("data.jsonl",):  # CSV and Parquet give the same examples: tests/altoruntime/test_data_files.py
        out = tmp_path / f"out_{name}"
        rc = main(["run", _own_data_config(tmp_path / name, name), "--backbone", "tiny", "--out", str(out),
                   "--n-train", "12", "--n-val", "4", "--n-eval", "3", "--quiet"])
        assert rc == 0, capsys.readouterr().err
        row = next(csv.DictReader(open(out / "tasks.csv")))
        assert row["dataset"] == f"own/{name}" and row["samples_trained"] == "24"
        assert 0.0 <= float(row["best_metric"]) <= 1.0 and row["best_val_loss"]


def test_alto_run_bad_own_data_is_one_line(tmp_path, capsys):
    cases = [("missing.jsonl", "tasks[0].dataset", "no such file"), ("cols.jsonl", "prompt", "columns found: question, answer")]
    for i, (name, field, needle) in enumerate(cases):
        cfg = _own_data_config(tmp_path / str(i), name)
        out = tmp_path / f"o{i}"
        rc = main(["run", cfg, "--backbone", "tiny", "--out", str(out), "--n-train", "12", "--n-val", "4", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and f": {field}: " in err and needle in err and len(err.splitlines()) == 1, err
        assert not out.exists()  # nothing half-written


def test_alto_run_seq_len_too_short_names_the_workload_field(tmp_path, capsys):
    cfg = _config(tmp_path)
    wl = json.loads((tmp_path / "wl.json").read_text())
    wl["tasks"][0]["seq_len"] = 16
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    rc = main(["run", cfg, "--backbone", "tiny", "--out", str(tmp_path / "o"), "--n-train", "12", "--n-val", "4",
               "--n-eval", "0", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "wl.json" in err and "tasks[0].seq_len" in err
