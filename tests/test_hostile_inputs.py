"""Issue 23: each hostile input a user tried gets one line and exit code 2 (or its own fix), and
nothing escapes or is half-written in --out. Each test failed on the code before the fix."""

from __future__ import annotations

import csv
import fcntl
import gzip
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from tests._hostile import CONFIG, WORKLOAD, assert_input_error, cli, workload_with, write_run


def _simulate(tmp_path: Path, *extra: str, workload=None, config=None) -> tuple[int, str, str, Path]:
    cfg = write_run(tmp_path, workload, config)
    out = tmp_path / "out"
    rc, so, se = cli("simulate", cfg, "--out", str(out), "-q", *extra)
    return rc, so, se, out


def _nothing_in(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------- task ids


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "/abs", "-x", " t1", "t\x00x", "x" * 65, "x" * 250, ""])
def test_unsafe_task_id_is_one_line_error_and_writes_nothing(tmp_path, bad):
    rc, _, err, out = _simulate(tmp_path, workload=workload_with(id=bad))
    assert_input_error(rc, err, "tasks[0].id")
    assert _nothing_in(out) and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "wl.json"]


def test_task_ids_differing_only_in_case_collide(tmp_path):
    wl = workload_with(id="T1")
    wl["tasks"].append({**wl["tasks"][0], "id": "t1"})
    rc, _, err, _ = _simulate(tmp_path, workload=wl)
    assert_input_error(rc, err, "tasks[1].id", "ignoring case")


@pytest.mark.parametrize("name", ["tasks.csv", "events.jsonl", "summary.csv", "run.ckpt", "tasks", "t1"])
def test_task_folder_cannot_collide_or_leave_out(tmp_path, name):
    from altosim.ids import task_dir

    path = task_dir(tmp_path / "out", name)
    assert path.parent == tmp_path / "out" / "tasks" and path.name == name
    for bad in ("..", "../x", ".hidden", "a/b", "x\x00"):
        with pytest.raises(ValueError):
            task_dir(tmp_path / "out", bad)


# ---------------------------------------------------------------------------- readers


def test_deeply_nested_json_config_workload_and_log(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    rc, _, err = cli("simulate", str(tmp_path / "deep.json"), "--out", str(tmp_path / "o"), "-q")
    assert_input_error(rc, err, "deep.json")
    (tmp_path / "wl.json").write_text('{"name": "w", "synthetic": true, "tasks": ' + deep + "}")
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    rc, _, err = cli("simulate", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "o"), "-q")
    assert_input_error(rc, err, "wl.json")
    (tmp_path / "ev.jsonl").write_text('{"meta": {}}\n' + deep + "\n")
    rc, _, err = cli("replay", str(tmp_path / "ev.jsonl"))
    assert_input_error(rc, err, "ev.jsonl")
    assert not (tmp_path / "o").exists()


def test_corrupt_csv_gz_loss_trace_is_one_line(tmp_path):
    folder = tmp_path / "loss"
    folder.mkdir()
    body = gzip.compress(b"lr,rank,batch_size,alpha,step,samples,train_loss,val_loss,metric\n" * 2000)
    broken = body[:20] + bytes(b ^ 0x5A for b in body[20:-8]) + body[-8:]  # header fine, deflate stream not
    (folder / "m__d.csv.gz").write_bytes(broken)
    (folder / "m__d.meta.json").write_text(json.dumps({"name": "m__d", "model": "m", "dataset": "d", "synthetic": True}))
    cfg = write_run(tmp_path, workload_with(loss_trace="m__d"), {**CONFIG, "loss_traces": "loss"})
    rc, _, err = cli("simulate", cfg, "--out", str(tmp_path / "o"), "-q")
    assert_input_error(rc, err, "m__d.csv.gz")


def test_csv_field_over_128kb_is_one_line_and_not_echoed(tmp_path):
    head = ["id", "arrival", "model", "dataset", "gpus", "samples_per_job", "search_space"]
    with open(tmp_path / "wl.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerow(["t1", 0, "Llama-3.2-1B", "gsm8k", 1, 1000, "x" * 200_000])
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.csv"}))
    rc, _, err = cli("simulate", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "o"), "-q")
    assert_input_error(rc, err, "wl.csv")


def test_one_megabyte_value_is_not_echoed_back(tmp_path):
    rc, _, err, _ = _simulate(tmp_path, "--preset", "p" * 1_000_000)
    assert_input_error(rc, err, "--preset", max_len=1000)
    rc, _, err, _ = _simulate(tmp_path, workload=workload_with(loss_trace="L" * 1_000_000))
    assert_input_error(rc, err, "tasks[0].loss_trace", max_len=1000)


@pytest.mark.parametrize("params", [{"cuts": 10**9}, {"cuts": 60, "cut_spacing": 1e300}])
def test_huge_early_exit_parameters_are_one_line(tmp_path, params):
    cfg = {**CONFIG, "policy": {"early_exit": {"name": "alto", "params": params}}}
    rc, _, err, out = _simulate(tmp_path, config=cfg)
    assert_input_error(rc, err, "policy")
    assert _nothing_in(out)


def test_paths_over_255_characters(tmp_path):
    cfg = write_run(tmp_path)
    rc, _, err = cli("simulate", cfg, "--out", str(tmp_path / ("o" * 300)), "-q")
    assert_input_error(rc, err, "--out", "at most 255")
    rc, _, err = cli("simulate", str(tmp_path / ("c" * 300 + ".json")), "--out", str(tmp_path / "o"), "-q")
    assert_input_error(rc, err)
    rc, _, err = cli("replay", str(tmp_path / ("e" * 300 + ".jsonl")))
    assert_input_error(rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "wl.json"]


# ---------------------------------------------------------------------------- config and arguments


def test_boolean_is_not_a_gpu_count(tmp_path):
    rc, _, err, out = _simulate(tmp_path, config={**CONFIG, "cluster": {"gpus": True}})
    assert_input_error(rc, err, "cluster.gpus", "boolean")
    rc, _, err, out = _simulate(tmp_path, workload=workload_with(gpus=True))
    assert_input_error(rc, err, "tasks[0].gpus")
    rc, _, err, out = _simulate(tmp_path, workload=workload_with(search_space={"lr": [True], "rank": [8], "batch_size": [4]}))
    assert_input_error(rc, err, "lr")


def test_billion_gpus_is_bounded_before_any_allocation(tmp_path):
    rc, _, err, out = _simulate(tmp_path, config={**CONFIG, "cluster": {"gpus": 10**9}})
    assert_input_error(rc, err, "cluster.gpus", "100000")
    rc, _, err, out = _simulate(tmp_path, "--gpus", "1000000")
    assert_input_error(rc, err, "--gpus")
    assert _nothing_in(out)


def test_gpus_zero_is_an_error_not_ignored(tmp_path):
    rc, _, err, out = _simulate(tmp_path, "--gpus", "0")
    assert_input_error(rc, err, "--gpus")
    assert _nothing_in(out)


def test_unknown_preset_and_negative_seed_name_their_argument(tmp_path):
    rc, _, err, _ = _simulate(tmp_path, "--preset", "nope")
    assert_input_error(rc, err, "--preset", "nope")
    (tmp_path / "p.csv").write_text("timestamp,duration,num_gpus\n2017-10-01 00:00:00,100,1\n")
    rc, _, err = cli("import-trace", "philly", str(tmp_path / "p.csv"), "--out", str(tmp_path / "w.json"), "--seed", "-1")
    assert_input_error(rc, err, "--seed")
    assert not (tmp_path / "w.json").exists()


def test_grid_and_evaluations_are_bounded(tmp_path):
    space = {"lr": [i * 1e-5 + 1e-6 for i in range(1000)], "rank": list(range(1, 1001)), "batch_size": [4]}
    rc, _, err, _ = _simulate(tmp_path, workload=workload_with(search_space=space))
    assert_input_error(rc, err, "search_space", "100000")
    rc, _, err, _ = _simulate(tmp_path, workload=workload_with(samples_per_job=10**11, eval_every_samples=1))
    assert_input_error(rc, err, "eval_every_samples")


# ---------------------------------------------------------------------------- import-trace


def test_import_trace_out_is_an_existing_folder(tmp_path):
    (tmp_path / "p.csv").write_text("timestamp,duration,num_gpus\n2017-10-01 00:00:00,100,1\n")
    (tmp_path / "dir").mkdir()
    rc, _, err = cli("import-trace", "philly", str(tmp_path / "p.csv"), "--out", str(tmp_path / "dir"))
    assert_input_error(rc, err, "--out", "is a folder")
    assert list((tmp_path / "dir").iterdir()) == []


# ---------------------------------------------------------------------------- replay


def _sim_log(tmp_path: Path) -> list[dict]:
    rc, _, err, out = _simulate(tmp_path)
    assert rc == 0, err
    return [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]


def _replay(tmp_path: Path, records: list) -> tuple[int, str, str]:
    p = tmp_path / "log.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return cli("replay", str(p))


def test_replay_rejects_unknown_tasks_negative_samples_and_missing_keys(tmp_path):
    log = _sim_log(tmp_path)
    assert _replay(tmp_path, log)[0] == 0
    i = next(k for k, r in enumerate(log) if r.get("event", {}).get("kind") == "step_report")
    for change, word in [({"task_id": "ghost"}, "never arrived"), ({"job_id": "t1/j999"}, "no job"),
                         ({"samples": -5}, "samples"), ({"step": -1}, "step"), ({"now": -1.0}, "now")]:
        bad = json.loads(json.dumps(log))
        bad[i]["event"].update(change)
        rc, _, err = _replay(tmp_path, bad)
        assert_input_error(rc, err, f"line {i + 1}", word)
    for key in ("job_id", "samples", "kind"):
        bad = json.loads(json.dumps(log))
        del bad[i]["event"][key]
        rc, _, err = _replay(tmp_path, bad)
        assert_input_error(rc, err, f"line {i + 1}")
    bad = json.loads(json.dumps(log))
    del bad[0]["meta"]["controller"]
    rc, _, err = _replay(tmp_path, bad)
    assert_input_error(rc, err, "meta.controller")


# ---------------------------------------------------------------------------- outputs


def test_plot_that_cannot_be_drawn_keeps_the_tables_and_is_named(tmp_path, monkeypatch):
    import altosim.simulate as sim

    def broken(reports, task_id):
        raise ValueError("Data cannot be log-scaled")

    monkeypatch.setattr(sim, "plot_losses", broken)
    rc, so, err, out = _simulate(tmp_path)
    assert rc == 0
    assert "losses_t1.png" in err and "log-scaled" in err and "Traceback" not in err
    names = {p.name for p in out.iterdir()}
    assert {"summary.csv", "tasks.csv", "events.jsonl", "reports.csv", "gantt.png"} <= names
    assert "losses_t1.png" not in names and not [n for n in names if n.startswith(".")]


def test_losses_at_or_below_zero_still_plot(tmp_path):
    from altosim.report import plot_losses, save_fig

    df = pd.DataFrame({"now": [1, 2], "task_id": ["t"] * 2, "job_id": ["t/j0"] * 2, "step": [1, 2],
                       "samples": [4, 8], "train_loss": [0.0, -1.0], "val_loss": [0.0, -1.0], "exit": ["", ""]})
    save_fig(plot_losses(df, "t"), tmp_path / "l.png")
    assert (tmp_path / "l.png").stat().st_size > 0


def test_gantt_of_many_gpus_draws(tmp_path):
    from altosim.report import plot_gantt, save_fig

    n = 100_000
    g = pd.DataFrame({"task": ["t1"] * 3, "gpu": [0, n // 2, n - 1], "start_s": [0.0] * 3, "end_s": [3600.0] * 3})
    save_fig(plot_gantt(g, n, "big"), tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


def test_out_that_is_a_file(tmp_path):
    cfg = write_run(tmp_path)
    (tmp_path / "f").write_text("mine")
    rc, _, err = cli("simulate", cfg, "--out", str(tmp_path / "f"), "-q")
    assert_input_error(rc, err, "--out", "is a file")
    rc, _, err = cli("simulate", cfg, "--out", str(tmp_path / "f" / "sub"), "-q")
    assert_input_error(rc, err, "--out")
    rc, _, err = cli("sweep", cfg, "--policies", "full", "--out", str(tmp_path / "f"), "-q")
    assert_input_error(rc, err, "--out")
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out(tmp_path):
    cfg = write_run(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = cli("simulate", cfg, "--out", str(ro / "o"), "-q")
        assert_input_error(rc, err, "--out", "not writable")
    finally:
        ro.chmod(0o755)


def test_second_writer_of_one_out_is_refused(tmp_path):
    LOCK = ".alto.lock"
    cfg = write_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a first `alto simulate` still writing would
    try:
        rc, _, err = cli("simulate", cfg, "--out", str(out), "-q")
        assert_input_error(rc, err, "--out", "another alto command")
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    finally:
        os.close(fd)
    rc, _, err = cli("simulate", cfg, "--out", str(out), "-q")  # the lock is gone with its holder
    assert rc == 0, err
    assert not (out / LOCK).exists() and (out / "summary.csv").is_file()


def test_outputs_have_ordinary_modes_and_replace_old_ones(tmp_path):
    rc, _, err, out = _simulate(tmp_path)
    assert rc == 0, err
    mask = os.umask(0)
    os.umask(mask)
    mode = 0o666 & ~mask
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == mode, p
    (out / "mine.txt").write_text("kept")
    rc, _, err = cli("simulate", str(tmp_path / "cfg.json"), "--out", str(out), "-q")
    assert rc == 0 and (out / "mine.txt").read_text() == "kept"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failure_while_writing_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    import altosim.simulate as sim

    def full_disk(records, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sim, "write_jsonl", full_disk)
    cfg = write_run(tmp_path)
    out = tmp_path / "a" / "out"
    rc, _, err = cli("simulate", cfg, "--out", str(out), "-q")
    assert_input_error(rc, err, "events.jsonl", "No space left")
    assert not (tmp_path / "a").exists()  # summary.csv and tasks.csv were written before: none is left
    out.mkdir(parents=True)
    (out / "summary.csv").write_text("old")
    rc, _, err = cli("simulate", cfg, "--out", str(out), "-q")
    assert rc == 2 and sorted(p.name for p in out.iterdir()) == ["summary.csv"]
    assert (out / "summary.csv").read_text() == "old"
