"""`alto run` with a task in epochs and configs that accumulate gradients: samples, steps and the
configs table agree; the simulator refuses epochs with one line."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import given, strategies as st

from altosim.cli import main
from altosim.schemas import TaskRecord
from tests.altoruntime.test_own_model import _rows, alto_run, save_tiny_model, write_run

BASE = {"id": "t", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1,
        "search_space": {"lr": [1e-4], "rank": [8], "batch_size": [3]}}


@given(st.floats(0.01, 50), st.integers(1, 5000))
def test_epochs_resolve_to_samples_over_the_train_set(epochs, n):
    rec = TaskRecord.model_validate({**BASE, "epochs": epochs}).resolve_epochs(n)
    assert rec.epochs is None and rec.samples_per_job >= 1
    assert abs(rec.samples_per_job - epochs * n) < 1 + 1e-6
    assert rec.to_task_spec().samples_per_job == rec.samples_per_job


@pytest.mark.parametrize("fields", [{}, {"epochs": 1, "samples_per_job": 10}])
def test_samples_or_epochs_exactly_one(fields):
    with pytest.raises(ValueError, match="give samples_per_job or epochs"):
        TaskRecord.model_validate({**BASE, **fields})


def test_simulator_refuses_epochs_with_one_line(tmp_path, capsys):
    wl = {"name": "w", "synthetic": True, "tasks": [{**BASE, "epochs": 2}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.json", "cluster": {"gpus": 1}}))
    assert main(["simulate", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tasks[0].epochs" in err and "samples_per_job" in err
    assert not (tmp_path / "out").exists()


def test_run_in_epochs_with_accumulation(tmp_path, capsys):
    save_tiny_model(tmp_path / "m", "llama")
    space = {"lr": [2e-2], "rank": [2], "batch_size": [2], "grad_accum_steps": [1, 2]}
    cfg = write_run(tmp_path, "m", rows=_rows(), space=space, epochs=2, samples_per_job=None, eval_every_samples=8)
    assert alto_run(cfg, tmp_path / "out") == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "tasks" / "t1" / "configs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["batch_size"]), int(r["grad_accum_steps"])) for r in rows) == [(2, 1), (2, 2)]
    with open(tmp_path / "out" / "tasks.csv") as f:
        task = next(csv.DictReader(f))
    assert int(task["samples_budget"]) == 2 * 2 * 12  # 2 epochs of --n-train 12, 2 configs
    for r in rows:  # a config that ran to the end saw the whole budget, in whole optimizer steps
        if r["stop_reason"] == "ran to the end":
            assert int(r["samples_trained"]) == 24
    # the run's header and summary name the task's own model, not the unused --backbone
    meta = json.loads((tmp_path / "out" / "events.jsonl").read_text().splitlines()[0])["meta"]
    model = str((tmp_path / "m").resolve())
    assert meta["models"] == {"t1": model} and meta["backbone"] is None
    with open(tmp_path / "out" / "summary.csv") as f:
        summary = next(csv.DictReader(f))
    assert summary["models"] == f"t1={model}" and summary["backbone"] == ""
    assert task["model"] == "m"  # tasks.csv: the model as the workload names it


def test_rank_wider_than_the_narrowest_layer_names_the_workload_field(tmp_path, capsys):
    # the tiny backbone (hidden 64, 2 of 4 heads for keys and values): k_proj is 32 wide
    cfg = write_run(tmp_path, "tiny", rows=_rows(), space={"lr": [1e-3], "rank": [4, 64], "batch_size": [1]})
    assert alto_run(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"alto: error: {tmp_path / 'wl.json'}: tasks[0].search_space.rank: 64 exceeds "
                          "min(d_in, d_out) = 32 of tiny's targeted layer ")
    assert not (tmp_path / "out").exists()


def test_the_rank_limit_comes_from_the_config_alone(tmp_path):
    """What scripts check `--ranks` against before writing anything: tiny's k_proj is 32 wide; a
    saved Llama of hidden 32 (2 of 4 heads for keys and values) is 16 wide at k_proj, read from its
    config.json without its weights; a path with no config gives None (the load says why)."""
    from altoruntime.run import rank_limit

    assert rank_limit("tiny") == (32, "model.layers.0.self_attn.k_proj")
    folder = tmp_path / "m"
    save_tiny_model(folder, "llama")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    assert rank_limit(str(folder)) == (16, "model.layers.0.self_attn.k_proj")
    assert rank_limit(str(tmp_path / "missing")) is None
