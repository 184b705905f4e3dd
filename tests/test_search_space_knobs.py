"""Training knobs (lr schedule, warm-up, clipping, gradient accumulation) as search-space axes:
each config's own values reach the runtime's admit arguments and the configs table; left unset,
workloads and event logs are written as before these axes existed."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from altosim.policy.types import TaskArrived, event_from_dict, to_dict
from altosim.results import config_table, label
from altosim.schemas import TaskRecord, WorkloadTrace
from altosim.traces_io.workload import workload_json_text

TASK = {"id": "t", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "samples_per_job": 100}
PLAIN = {"lr": [1e-4], "rank": [8], "batch_size": [2]}


def spec(space: dict, **task):
    return TaskRecord.model_validate({**TASK, "search_space": space, **task}).to_task_spec()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["constant", "linear", "cosine"]), min_size=1, max_size=3, unique=True),
       st.lists(st.floats(0.0, 0.9), min_size=1, max_size=2, unique=True),
       st.lists(st.floats(0.01, 10.0), min_size=1, max_size=2, unique=True))
def test_searched_knobs_reach_admit_and_the_table(schedules, warmups, clips):
    from altoruntime.task_runner import train_knobs

    t = spec({**PLAIN, "lr_schedule": schedules, "warmup_ratio": warmups, "max_grad_norm": clips},
             lr_schedule="linear", max_grad_norm=100.0)
    assert len(t.jobs) == len(schedules) * len(warmups) * len(clips)
    table = config_table(t, []).set_index("config")
    for j in t.jobs:
        knobs = train_knobs(t, j)
        assert knobs["lr_schedule"] == j.lr_schedule and knobs["max_grad_norm"] == j.max_grad_norm
        assert knobs["warmup_steps"] == math.ceil(j.warmup_ratio * t.total_steps(j))
        row = table.loc[j.job_id]
        assert (row["lr_schedule"], row["warmup_ratio"], row["max_grad_norm"]) == (j.lr_schedule, j.warmup_ratio,
                                                                                  j.max_grad_norm)
    assert len({label(j) for j in t.jobs}) == len(t.jobs)  # labels tell the configs apart


def test_unset_knobs_fall_back_to_the_task():
    from altoruntime.task_runner import train_knobs

    t = spec(PLAIN, lr_schedule="cosine", warmup_ratio=0.1, max_grad_norm=0.5)
    j = t.jobs[0]
    assert (j.lr_schedule, j.warmup_ratio, j.max_grad_norm) == (None, None, None)
    assert train_knobs(t, j) == {"lr_schedule": "cosine", "warmup_steps": 5, "total_steps": 50, "max_grad_norm": 0.5}


def test_defaults_leave_workloads_and_logs_as_before():
    t = spec(PLAIN)
    job = to_dict(TaskArrived(0.0, t))["task"]["jobs"][0]
    assert set(job) == {"job_id", "task_id", "lr", "rank", "batch_size", "alpha", "dropout", "weight_decay", "seed"}
    wl = WorkloadTrace.model_validate({"name": "w", "synthetic": True, "tasks": [{**TASK, "search_space": PLAIN}]})
    text = workload_json_text(wl)
    for key in ("grad_accum_steps", "lr_schedule", "warmup_ratio", "max_grad_norm", "epochs", "validation"):
        assert key not in text
    searched = spec({**PLAIN, "grad_accum_steps": [2], "lr_schedule": ["cosine"]})
    back = event_from_dict(json.loads(json.dumps(to_dict(TaskArrived(0.0, searched)))))
    assert back.task == searched  # a log of searched knobs replays to the same specs


@pytest.mark.parametrize("axis, value", [("lr_schedule", ["step"]), ("warmup_ratio", [1.0]),
                                         ("max_grad_norm", [0.0]), ("grad_accum_steps", [0])])
def test_bad_knob_axis_is_refused(axis, value):
    with pytest.raises(ValueError, match=axis):
        spec({**PLAIN, axis: value})
