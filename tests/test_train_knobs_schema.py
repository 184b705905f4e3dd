"""Per-task training knobs (lr schedule with warm-up, gradient clipping): validation, the task
spec, the workload files and configs.csv."""

from __future__ import annotations

import json

import pytest

from altosim.errors import InputError
from altosim.results import COLUMNS, config_table
from altosim.schemas import TaskRecord, WorkloadTrace
from altosim.traces_io import read_workload
from altosim.traces_io.workload import workload_csv_text, workload_json_text

SPACE = {"lr": [1e-4], "rank": [8], "batch_size": [3]}
KNOBS = {"lr_schedule": "cosine", "warmup_ratio": 0.1, "max_grad_norm": 1.0}


def task(**kw) -> dict:
    return {"id": "a", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "search_space": SPACE,
            "samples_per_job": 100, **kw}


def test_defaults_keep_constant_lr_and_no_clipping():
    spec = TaskRecord.model_validate(task()).to_task_spec()
    assert (spec.lr_schedule, spec.warmup_ratio, spec.max_grad_norm) == ("constant", 0.0, None)
    assert spec.warmup_steps(spec.jobs[0]) == 0


def test_knobs_reach_the_task_spec():
    spec = TaskRecord.model_validate(task(**KNOBS)).to_task_spec()
    job = spec.jobs[0]
    assert (spec.lr_schedule, spec.warmup_ratio, spec.max_grad_norm) == ("cosine", 0.1, 1.0)
    assert spec.total_steps(job) == 34 and spec.warmup_steps(job) == 4  # ceil(3.4)


@pytest.mark.parametrize("field, value", [
    ("lr_schedule", "step"), ("warmup_ratio", 1.0), ("warmup_ratio", -0.1), ("warmup_ratio", float("nan")),
    ("max_grad_norm", 0), ("max_grad_norm", -1.0), ("max_grad_norm", "inf"),
])
def test_bad_knob_is_one_line_naming_file_and_field(tmp_path, field, value):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"name": "w", "synthetic": True, "tasks": [task(**{field: value})]}))
    with pytest.raises(InputError) as e:
        read_workload(p)
    msg = str(e.value)
    assert "\n" not in msg and f"tasks[0].{field}" in msg and msg.startswith(str(p))


def test_json_writes_knobs_only_when_set_and_csv_refuses_them():
    plain = WorkloadTrace(name="w", synthetic=True, tasks=[TaskRecord.model_validate(task())])
    assert "lr_schedule" not in workload_json_text(plain) and "lr_schedule" not in workload_csv_text(plain)
    tuned = WorkloadTrace(name="w", synthetic=True, tasks=[TaskRecord.model_validate(task(**KNOBS))])
    assert json.loads(workload_json_text(tuned))["tasks"][0]["max_grad_norm"] == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        workload_csv_text(tuned)


def test_configs_csv_lists_the_knobs():
    spec = TaskRecord.model_validate(task(**KNOBS)).to_task_spec()
    df = config_table(spec, [])
    assert {"lr_schedule", "warmup_ratio", "max_grad_norm"} <= set(COLUMNS)
    assert df[["lr_schedule", "warmup_ratio", "max_grad_norm"]].iloc[0].tolist() == ["cosine", 0.1, 1.0]
