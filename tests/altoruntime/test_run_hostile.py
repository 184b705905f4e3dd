"""Issue 23 for `alto run` (CPU, tiny backbone): a stale checkpoint is refused, runs with dropout
are reproducible, a task id cannot leave --out or collide with an output file."""

from __future__ import annotations

import json
import os

import pytest
import torch

from altosim.cli import main
from altosim.schemas import load_config
from tests._hostile import assert_input_error, cli

RUN = ("--backbone", "tiny", "--n-train", "8", "--n-val", "2", "--n-eval", "0", "--quiet")


def _config(tmp_path, task_id="t1", lr=(1e-2, 1e-3), dropout=(0.0,), name="cfg.json"):
    wl = {"name": "tiny-run", "synthetic": True, "tasks": [{
        "id": task_id, "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1,
        "search_space": {"lr": list(lr), "rank": [2], "batch_size": [2], "dropout": list(dropout)},
        "samples_per_job": 8, "eval_every_samples": 4, "seq_len": 160}]}
    (tmp_path / f"wl_{name}").write_text(json.dumps(wl))
    cfg = {"workload": f"wl_{name}", "cluster": {"gpus": 1}, "seed": 3,
           "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / name).write_text(json.dumps(cfg))
    return str(tmp_path / name)


def _interrupted_run(cfg_path, out):
    """A run stopped (as by Ctrl-C) after its third fused step, with a checkpoint every step."""
    from altoruntime.run import RunInterrupted, run_config

    steps = []

    def stop_at_3(task_id, losses):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        run_config(load_config(cfg_path), out, backbone="tiny", n_train=8, n_val=2, n_eval=0, checkpoint_every=1,
                   progress=stop_at_3)
    assert (out / "run.ckpt").is_file()


def test_stale_checkpoint_is_refused_with_how_to_start_fresh(tmp_path):
    out = tmp_path / "out"
    _interrupted_run(_config(tmp_path), out)
    changed = _config(tmp_path, lr=(5e-2, 1e-3), name="cfg2.json")  # the learning rates changed since
    rc, _, err = cli("run", changed, "--out", str(out), "--checkpoint-every", "1", *RUN)
    assert_input_error(rc, err, "run.ckpt", "another run", "delete")
    renamed = _config(tmp_path, task_id="t2", name="cfg3.json")  # renamed tasks: was KeyError: 't1'
    rc, _, err = cli("run", renamed, "--out", str(out), "--checkpoint-every", "1", *RUN)
    assert_input_error(rc, err, "run.ckpt", "another run")
    rc, _, err = cli("run", _config(tmp_path), "--out", str(out), "--checkpoint-every", "1", *RUN, "--n-train", "9")
    assert_input_error(rc, err, "run.ckpt")  # other data sizes are another run too
    rc, _, err = cli("run", _config(tmp_path), "--out", str(out), "--checkpoint-every", "1", *RUN)
    assert rc == 0, err  # the run it belongs to resumes
    assert not (out / "run.ckpt").exists()


def test_unreadable_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.ckpt").write_bytes(b"not a checkpoint")
    rc, _, err = cli("run", _config(tmp_path), "--out", str(out), *RUN)
    assert_input_error(rc, err, "run.ckpt", "delete")


def test_runs_with_dropout_are_reproducible(tmp_path, monkeypatch):
    """Two runs of one config with dropout > 0 give identical event logs (times aside), whatever
    the global RNGs held before: here the backbone's loading draws from them, as loading a real
    model's random-initialized parts does, and differently each time."""
    import altoruntime.run as run

    opened = run.open_backbone
    draws = iter([5, 11])

    def drawing_open(name, dtype=torch.float32):
        bb = opened(name, dtype)
        torch.rand(next(draws))
        return bb

    monkeypatch.setattr(run, "open_backbone", drawing_open)
    cfg = _config(tmp_path, task_id="tasks.csv", dropout=(0.3,))  # an id equal to an output file name
    logs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        rc = main(["run", cfg, "--out", str(out), *RUN])
        assert rc == 0
        assert (out / "tasks" / "tasks.csv" / "best_adapter" / "adapter_model.safetensors").is_file()
        assert (out / "tasks.csv").is_file()
        lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()[1:]]
        logs.append([{k: v for k, v in e.items() if k != "now"} for e in lines])
    reports = [e for e in logs[0] if e["kind"] == "step_report"]
    assert reports and all(isinstance(e["train_loss"], float) for e in reports)
    assert logs[0] == logs[1]


def test_unsafe_task_id_fails_before_any_work(tmp_path):
    out = tmp_path / "runs" / "out"
    rc, _, err = cli("run", _config(tmp_path, task_id=".."), "--out", str(out), *RUN)
    assert_input_error(rc, err, "tasks[0].id")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("share, engine, words", [("0", "ray", ("gpu-share", "(0, 1]")),
                                                   ("1.5", "ray", ("gpu-share", "(0, 1]")),
                                                   ("0.5", "local", ("gpu-share", "--engine ray")),
                                                   ("half", "ray", ("gpu-share",))])
def test_a_bad_gpu_share_is_one_line_and_writes_nothing(tmp_path, share, engine, words):
    out = tmp_path / "out"
    rc, _, err = cli("run", _config(tmp_path), "--out", str(out), *RUN, "--engine", engine, "--gpu-share", share)
    assert_input_error(rc, err, *words)
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--n-train", "0"), ("--n-train", "-1"), ("--n-val", "-1"), ("--n-eval", "-1"),
                                         ("--checkpoint-every", "0"), ("--checkpoint-every", "-5"),
                                         ("--n-train", "1" + "0" * 30), ("--n-eval", "nan")])
def test_run_counts_out_of_range_are_one_line_before_any_work(tmp_path, flag, value):
    """--n-eval -1, --checkpoint-every 0 and --n-train 0 used to reach the backbone loader."""
    cfg = _config(tmp_path)
    argv = [a if prev != flag else value for prev, a in zip(("",) + RUN, RUN)]
    argv += [] if flag in RUN else [flag, value]
    rc, _, err = cli("run", cfg, "--out", str(tmp_path / "out"), *argv)
    assert_input_error(rc, err, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backbone, words", [("", ("--backbone", "empty")), ("nope/path", ("nope/path", "--backbone")),
                                             # a file that is no .gguf went to the Hugging Face hub (5 retries, their lines on stderr)
                                             ("cfg.json", ("cfg.json", "--backbone", "not a .gguf")),
                                             ("emptydir", ("emptydir", "--backbone")),
                                             ("bad", ("bad", "--backbone", "config.json"))])
def test_a_backbone_that_cannot_load_names_the_flag(tmp_path, monkeypatch, backbone, words):
    """transformers' load errors came out bare ("Unrecognized model in ..."), and '' meant the current folder."""
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_bytes(b"\xff{")
    rc, _, err = cli("run", cfg, "--out", "out", "--backbone", backbone, *RUN[2:])
    assert_input_error(rc, err, *words)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name, clash", [("tasks.csv", True), ("summary.csv", True), ("wl.csv", False)])
def test_run_never_writes_over_its_own_workload_in_out(tmp_path, monkeypatch, name, clash):
    """alto run --out . with a workload called tasks.csv replaced the workload by its task table (exit 0)."""
    from altosim.schemas import WorkloadTrace
    from altosim.traces_io.workload import workload_csv_text

    monkeypatch.chdir(tmp_path)
    cfg = json.loads(open(_config(tmp_path)).read())
    wl = json.loads((tmp_path / "wl_cfg.json").read_text())
    (tmp_path / "wl_cfg.json").unlink()
    text = workload_csv_text(WorkloadTrace.model_validate(wl))
    (tmp_path / name).write_text(text)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "workload": name}))
    rc, _, err = cli("run", "cfg.json", "--out", ".", *RUN)
    assert (tmp_path / name).read_text() == text
    if not clash:
        assert rc == 0, err
        return
    assert_input_error(rc, err, "--out", name, "input")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cfg.json", name])


def _csv_data_config(tmp_path, data: str | None):
    """A one-task tiny config training on d.csv holding `data` (None: a FIFO with no writer)."""
    cfg = json.loads(open(_config(tmp_path)).read())
    wl = json.loads((tmp_path / "wl_cfg.json").read_text())
    wl["tasks"][0]["dataset"] = "d.csv"
    (tmp_path / "wl_cfg.json").write_text(json.dumps(wl))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    if data is None:
        os.mkfifo(tmp_path / "d.csv")
    else:
        (tmp_path / "d.csv").write_text(data)
    return str(tmp_path / "cfg.json")


ROWS = "".join(f"Reverse w{i}:,w{i}x\n" for i in range(30))


@pytest.mark.parametrize("data, words", [
    ("prompt,completion,prompt\n" + ROWS.replace("\n", ",p\n"), ("d.csv", "line 1", "prompt", "twice")),
    # every row one cell wider than the header: pandas made the first cell the index and trained on
    # (completion, extra) as (prompt, completion), silently
    ("prompt,completion\n" + ROWS.replace("\n", ",extra\n"), ("d.csv", "more cells than the header")),
    (None, ("d.csv", "FIFO")),  # said "no such file or folder"
])
def test_a_csv_dataset_that_would_be_misread_is_refused(tmp_path, data, words):
    from tests._hostile import deadline

    cfg = _csv_data_config(tmp_path, data)
    with deadline(60):
        rc, _, err = cli("run", cfg, "--out", str(tmp_path / "out"), *RUN)
    assert_input_error(rc, err, *words)
    assert not (tmp_path / "out").exists()


def test_an_empty_out_is_an_error_not_runs_run(tmp_path, monkeypatch):
    """`--out ""` trained the whole workload into ./runs/run."""
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = cli("run", cfg, "--out", "", *RUN)
    assert_input_error(rc, err, "--out", "empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
