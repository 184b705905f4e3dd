"""Schemas: validation messages (file, field, problem), grid expansion, run configs."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from altosim.errors import InputError, format_loc, from_validation_error
from altosim.schemas import (
    CostRecord,
    RunConfig,
    SearchSpace,
    TaskRecord,
    WorkloadTrace,
    config_from_dict,
    job_seed,
    load_config,
)

SPACE = {"lr": [1e-4, 2e-4], "rank": [8, 16], "batch_size": [1, 4]}


def task(**kw) -> dict:
    base = {"id": "a", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1,
            "search_space": SPACE, "samples_per_job": 100}
    return {**base, **kw}


def test_input_error_is_one_line_with_file_field_problem():
    e = InputError("x.csv", "tasks[3].gpus", "must be\n >= 1", line=7)
    assert str(e) == "x.csv: line 7: tasks[3].gpus: must be >= 1"
    assert isinstance(e, ValueError)
    assert str(InputError("<config>", "seed", "bad")) == "<config>: seed: bad"


def test_format_loc_dotted_with_indices():
    assert format_loc(("tasks", 3, "search_space", "lr", 0)) == "tasks[3].search_space.lr[0]"
    assert format_loc((), "") == "<root>"


def test_validation_error_names_nested_field():
    with pytest.raises(ValidationError) as ei:
        WorkloadTrace.model_validate({"name": "w", "synthetic": False, "tasks": [task(), task(id="b", gpus=0)]})
    msg = str(from_validation_error(ei.value, "w.json"))
    assert msg.startswith("w.json: tasks[1].gpus: ")
    assert "greater than or equal to 1" in msg and "(got 0)" in msg


def test_duplicate_task_ids_name_the_task_field():
    with pytest.raises(ValidationError) as ei:
        WorkloadTrace.model_validate({"name": "w", "synthetic": False, "tasks": [task(), task()]})
    assert str(from_validation_error(ei.value, "w.json")) == "w.json: tasks[1].id: duplicate task id 'a'"


@pytest.mark.parametrize("field,value", [
    ("arrival", -1.0), ("gpus", 0), ("samples_per_job", 0), ("seq_len", 0), ("id", "a/b"),
    ("eval_every_samples", 0), ("duration_s", -5.0), ("model", ""), ("unknown_key", 1),
])
def test_task_record_rejects(field, value):
    with pytest.raises(ValidationError) as ei:
        TaskRecord.model_validate(task(**{field: value}))
    assert from_validation_error(ei.value, "f").field == field


@pytest.mark.parametrize("space", [
    {**SPACE, "lr": []}, {**SPACE, "lr": [1e-4, 1e-4]}, {**SPACE, "rank": [0]},
    {**SPACE, "dropout": [1.0]}, {**SPACE, "subset": [99]}, {**SPACE, "subset": [2, 1]},
    {**SPACE, "lr": [float("nan")]},
])
def test_search_space_rejects(space):
    with pytest.raises(ValidationError):
        SearchSpace.model_validate(space)


def test_grid_order_job_ids_and_seeds():
    t = TaskRecord.model_validate(task(search_space={**SPACE, "seed": 3}))
    spec = t.to_task_spec()
    assert [j.job_id for j in spec.jobs] == [f"a/j{i:03d}" for i in range(8)]
    # fixed order: lr outermost, then rank, then batch size
    assert [(j.lr, j.rank, j.batch_size) for j in spec.jobs[:3]] == [(1e-4, 8, 1), (1e-4, 8, 4), (1e-4, 16, 1)]
    assert spec.jobs[4].lr == 2e-4
    assert all(j.alpha is None and j.weight_decay == 0.01 for j in spec.jobs)
    assert [j.seed for j in spec.jobs] == [job_seed(3, "a", i) for i in range(8)]
    assert len({j.seed for j in spec.jobs}) == 8
    assert spec.jobs == TaskRecord.model_validate(task(search_space={**SPACE, "seed": 3})).to_task_spec().jobs


def test_subset_keeps_grid_indices_and_alpha_dropout_expand():
    t = TaskRecord.model_validate(task(search_space={**SPACE, "alpha": [4, 8], "dropout": [0.0, 0.1],
                                                     "subset": [0, 7, 31]}))
    jobs = t.to_task_spec().jobs
    assert [j.job_id for j in jobs] == ["a/j000", "a/j007", "a/j031"]
    assert (jobs[1].rank, jobs[1].batch_size, jobs[1].alpha, jobs[1].dropout) == (8, 4, 8, 0.1)  # index 7 = lr 1e-4, rank 8, batch 4, alpha 8, dropout 0.1
    assert (jobs[2].lr, jobs[2].rank, jobs[2].batch_size) == (2e-4, 16, 4)


def test_loss_trace_defaults_to_model_dataset():
    assert TaskRecord.model_validate(task()).loss_trace == "m__d"
    assert TaskRecord.model_validate(task(loss_trace="x")).loss_trace == "x"


def test_cost_record_validation():
    ok = dict(model="m", gpu_type="H100", adapters=4, mean_rank=16, per_adapter_batch=2,
              seq_len=512, step_ms=12.5, peak_mem_bytes=10**9)
    assert CostRecord.model_validate(ok).parallel_degree == 1
    for bad in ({"step_ms": 0}, {"peak_mem_bytes": -1}, {"adapters": 0}, {"extra": 1}):
        with pytest.raises(ValidationError):
            CostRecord.model_validate({**ok, **bad})


# ------------------------------------------------------------------------------------------
# run configs
# ------------------------------------------------------------------------------------------


def test_default_config():
    c = load_config(None)
    assert c == RunConfig()
    assert (c.cluster.gpus, c.cluster.gpu_type, c.workload, c.loss_traces, c.cost_profile) == (
        8, "H100", "default", "default", "analytic")
    assert (c.policy.early_exit.name, c.policy.inter_task.name, c.policy.batching) == ("alto", "cpsat", True)
    assert c.file == "<config>"


def test_yaml_config_resolves_paths_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.json").write_text("{}")
    (tmp_path / "sub" / "c.yaml").write_text(
        "cluster: {gpus: 4}\nworkload: w.json\nout: runs/x\npolicy:\n  early_exit: asha\n"
        "  inter_task: {name: fifo, params: {k: 1}}\n")
    c = load_config(tmp_path / "sub" / "c.yaml")
    assert c.workload == str(tmp_path / "sub" / "w.json")
    assert c.out == str(tmp_path / "sub" / "runs" / "x")
    assert c.policy.early_exit.name == "asha" and c.policy.inter_task.params == {"k": 1}
    assert c.file == str(tmp_path / "sub" / "c.yaml")


def test_json_config_and_unknown_policy_name_passes(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"policy": {"early_exit": {"name": "no-such-policy"}}, "seed": 3}))
    c = load_config(p)
    assert c.policy.early_exit.name == "no-such-policy" and c.seed == 3


@pytest.mark.parametrize("text,field,line", [
    ("cluster: {gpus: 0}\n", "cluster.gpus", None),
    ("clustr: {gpus: 4}\n", "clustr", None),
    ("policy: {memory_margin: 1.5}\n", "policy.memory_margin", None),
    ("policy: {early_exit: {name: alto, parms: {}}}\n", "policy.early_exit.parms", None),
    ("seed: x\n", "seed", None),
    ("workload: nowhere.json\n", "workload", None),
    ("cluster: {gpus: 4\n", "<yaml>", 2),
    ("- a\n- b\n", "<root>", None),
])
def test_bad_config_one_line(tmp_path, text, field, line):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as ei:
        load_config(p)
    assert ei.value.file == str(p) and ei.value.field == field and ei.value.line == line
    assert "\n" not in str(ei.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_config(tmp_path / "none.yaml")


def test_task_larger_than_cluster_is_named():
    cfg = config_from_dict({"cluster": {"gpus": 2}})
    w = WorkloadTrace.model_validate({"name": "w", "synthetic": False,
                                      "tasks": [task(), task(id="big", gpus=4)]})
    with pytest.raises(InputError) as ei:
        cfg.check_workload(w, "w.json")
    assert str(ei.value).startswith("w.json: tasks[1].gpus: task 'big' needs 4 GPUs but the cluster has 2")
