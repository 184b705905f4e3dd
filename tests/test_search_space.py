"""Search spaces as Optuna / Ray Tune users write them: grids unchanged, seeded draws within bounds,
malformed spaces one line naming the field (exit 2 through `alto simulate` and `alto run`)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from altosim.cli import main
from altosim.errors import from_validation_error
from altosim.schemas import SearchSpace, TaskRecord, WorkloadTrace, job_seed

GRID = {"lr": [1e-4, 2e-4], "rank": [8, 16], "batch_size": [1, 4]}


def task(space: dict, **kw) -> dict:
    return {"id": "a", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "search_space": space,
            "samples_per_job": 100, **kw}


def error(space: dict) -> str:
    with pytest.raises(ValidationError) as ei:
        WorkloadTrace.model_validate({"name": "w", "synthetic": False, "tasks": [task(space)]})
    return str(from_validation_error(ei.value, "w.json"))


def test_grid_lists_expand_as_before():
    s = SearchSpace.model_validate({**GRID, "weight_decay": 0.05, "seed": 3})
    assert s.kind == "grid" and len(s) == 8
    cfgs = [c for _, c in s.configs()]
    assert [(c["lr"], c["rank"], c["batch_size"]) for c in cfgs][:3] == [(1e-4, 8, 1), (1e-4, 8, 4), (1e-4, 16, 1)]
    spec = TaskRecord.model_validate(task({**GRID, "weight_decay": 0.05, "seed": 3})).to_task_spec()
    assert [j.seed for j in spec.jobs] == [job_seed(3, "a", i) for i in range(8)]
    assert {j.weight_decay for j in spec.jobs} == {0.05}


def test_grid_over_weight_decay_and_seeds_appends_axes_last():
    spec = TaskRecord.model_validate(task({**GRID, "weight_decay": [0.0, 0.1], "seed": [7, 8]})).to_task_spec()
    assert len(spec.jobs) == 32
    assert [(j.weight_decay, j.seed) for j in spec.jobs[:4]] == [(0.0, 7), (0.0, 8), (0.1, 7), (0.1, 8)]


SPACE = {
    "lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3},
    "rank": {"distribution": "int", "low": 2, "high": 64, "log": True},
    "batch_size": {"distribution": "categorical", "choices": [1, 2, 4]},
    "alpha": [8.0, 16.0],
    "dropout": {"distribution": "uniform", "low": 0.0, "high": 0.2},
    "weight_decay": {"distribution": "log_uniform", "low": 1e-4, "high": 0.1},
}


def _in_bounds(c: dict) -> bool:
    return (1e-5 <= c["lr"] <= 1e-3 and 2 <= c["rank"] <= 64 and isinstance(c["rank"], int)
            and c["batch_size"] in (1, 2, 4) and c["alpha"] in (8.0, 16.0) and 0.0 <= c["dropout"] <= 0.2
            and 1e-4 <= c["weight_decay"] <= 0.1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), sampler=st.sampled_from(["random", "quasi-random"]))
def test_draws_are_seeded_and_within_bounds(seed, n, sampler):
    space = {**SPACE, "sampler": sampler, "n_configs": n, "seed": seed}
    a = SearchSpace.model_validate(space).configs()
    assert a == SearchSpace.model_validate(json.loads(json.dumps(space))).configs()  # same space + seed: same set
    assert len(a) == n and all(_in_bounds(c) for _, c in a)
    assert all(c["seed"] is None for _, c in a)  # the base seed is not an axis: job seeds derive from it


@settings(max_examples=20, deadline=None)
@given(low=st.floats(1e-6, 1.0), span=st.floats(1.01, 1e4), n=st.integers(2, 30), seed=st.integers(0, 1000))
def test_float_draws_respect_any_bounds(low, span, n, seed):
    high = low * span
    for kind in ("uniform", "log_uniform"):
        s = SearchSpace.model_validate({"lr": {"distribution": kind, "low": low, "high": high}, "rank": [4],
                                        "batch_size": [1], "n_configs": n, "seed": seed, "sampler": "quasi-random"})
        assert all(low <= c["lr"] <= high and math.isfinite(c["lr"]) for _, c in s.configs())


def test_other_seed_other_draws_and_quasi_random_covers_the_range():
    base = {**SPACE, "n_configs": 16}
    a, b = (SearchSpace.model_validate({**base, "seed": s}).configs() for s in (0, 1))
    assert a != b
    q = SearchSpace.model_validate({**base, "sampler": "quasi-random"}).configs()
    logs = sorted(math.log10(c["lr"]) for _, c in q)  # 16 Sobol points: one per sixteenth of the log range
    assert all(-5 + k * 2 / 16 <= x <= -5 + (k + 1) * 2 / 16 for k, x in enumerate(logs))


def test_searched_seed_is_the_jobs_seed():
    spec = TaskRecord.model_validate(task({**GRID, "seed": {"distribution": "int", "low": 0, "high": 9},
                                           "n_configs": 5, "sampler_seed": 2})).to_task_spec()
    assert len(spec.jobs) == 5 and all(0 <= j.seed <= 9 for j in spec.jobs)


@pytest.mark.parametrize("space,where", [
    ({}, "search_space.lr"),  # an empty space
    ({**GRID, "lr": {"distribution": "log_uniform", "low": 0, "high": 1e-3}, "n_configs": 4}, "search_space.lr.low"),
    ({**GRID, "lr": {"distribution": "uniform", "low": 1e-3, "high": 1e-4}, "n_configs": 4}, "search_space.lr.high"),
    ({**GRID, "lr": {"distribution": "gauss", "low": 1, "high": 2}, "n_configs": 4}, "search_space.lr.distribution"),
    ({**GRID, "lr": {"distribution": "uniform", "low": 1e-4}, "n_configs": 4}, "search_space.lr.high"),
    ({**GRID, "rank": {"distribution": "int", "low": 0, "high": 8}, "n_configs": 4}, "search_space.rank.low"),
    ({**GRID, "rank": {"distribution": "uniform", "low": 1, "high": 8}, "n_configs": 4}, "search_space.rank.distribution"),
    ({**GRID, "batch_size": {"distribution": "categorical", "choices": []}, "n_configs": 4},
     "search_space.batch_size.choices"),
    ({**GRID, "dropout": {"distribution": "uniform", "low": 0, "high": 1.0}, "n_configs": 4},
     "search_space.dropout.high"),
    ({**GRID, "lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3}}, "search_space.n_configs"),
    ({**GRID, "lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3}, "sampler": "grid"},
     "search_space.lr"),
    ({**GRID, "n_configs": 3}, "search_space.n_configs"),
    ({**GRID, "lr": "fast"}, "search_space.lr"),
    ({**GRID, "lr": []}, "search_space.lr"),
    ({**GRID, "sampler": "sobol"}, "search_space.sampler"),
    ({**GRID, "lr": {"distribution": "uniform", "low": 1e-4, "high": 1e-3, "mean": 1}, "n_configs": 2},
     "search_space.lr.mean"),
])
def test_malformed_space_names_the_field(space, where):
    msg = error(space)
    assert msg.startswith(f"w.json: tasks[0].{where}: "), msg
    assert "\n" not in msg


def _workload(tmp_path, space: dict) -> str:
    wl = {"name": "w", "synthetic": True, "tasks": [task(space, model="tiny", dataset="list_ops", samples_per_job=6,
                                                         eval_every_samples=4, seq_len=160)]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 1},
           "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return str(tmp_path / "cfg.json")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bad=st.sampled_from([
    {"distribution": "log_uniform", "low": -1.0, "high": 1e-3},
    {"distribution": "uniform", "low": 1e-3, "high": 1e-3},
    {"distribution": "categorical"},
    {"low": 1e-5, "high": 1e-3},
    [1e-4, 1e-4],
    "1e-4",
]), command=st.sampled_from(["simulate", "run"]))
def test_malformed_space_is_one_line_exit_2_through_the_cli(tmp_path_factory, capsys, bad, command):
    tmp = tmp_path_factory.mktemp("cli")
    cfg = _workload(tmp, {**GRID, "lr": bad, "n_configs": 4})
    argv = [command, cfg, "--out", str(tmp / "out")] + (["--backbone", "tiny", "--quiet"] if command == "run" else [])
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "tasks[0].search_space.lr" in err, err
    assert not (tmp / "out").exists()


def test_sampled_space_simulates(tmp_path, capsys):
    space = {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3}, "rank": [8, 16, 32],
             "batch_size": [2, 4], "sampler": "quasi-random", "n_configs": 10, "seed": 1}
    wl = {"name": "w", "synthetic": True, "tasks": [task(space, model="SmolLM2-135M", dataset="arithmetic",
                                                         loss_trace="SmolLM2-135M__arithmetic")]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.json", "cluster": {"gpus": 1}}))
    rc = main(["simulate", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "tasks.csv").is_file()


def test_shipped_tune_own_example_draws_eight_configs():
    from pathlib import Path

    from altosim.traces_io import read_workload

    root = Path(__file__).resolve().parents[1]
    spec = read_workload(root / "traces" / "examples" / "tune_own_workload.json").to_task_specs()[0]
    assert len(spec.jobs) == 8 and {j.rank for j in spec.jobs} <= {4, 8} and len({j.lr for j in spec.jobs}) == 8
