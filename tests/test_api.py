"""`alto.simulate`: the Python API over `alto simulate` (the CLI calls the same function)."""

from __future__ import annotations

import pytest

import alto
from altosim.errors import InputError

TASK = {"id": "t", "arrival": 0, "model": "SmolLM2-135M", "dataset": "arithmetic", "gpus": 1,
        "loss_trace": "SmolLM2-135M__arithmetic", "samples_per_job": 100,
        "search_space": {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3}, "rank": [8, 32],
                         "batch_size": [2], "n_configs": 6}}


def _config(tmp_path) -> dict:
    import json

    (tmp_path / "wl.json").write_text(json.dumps({"name": "w", "synthetic": True, "tasks": [TASK]}))
    return {"workload": str(tmp_path / "wl.json"), "cluster": {"gpus": 1}}


def test_simulate_returns_summary_and_tasks(tmp_path):
    r = alto.simulate(_config(tmp_path), out=tmp_path / "out", early_exit="asha")
    assert r.summary["tasks"] == 1 and r.summary["policy"].startswith("asha")
    assert list(r.tasks["task"]) == ["t"] and (tmp_path / "out" / "summary.csv") in r.files


def test_simulate_bad_policy_raises_naming_the_field(tmp_path):
    with pytest.raises(InputError) as ei:
        alto.simulate(_config(tmp_path), out=tmp_path / "out", early_exit="nope")
    assert "early_exit" in str(ei.value) and not (tmp_path / "out").exists()
