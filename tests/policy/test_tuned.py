"""The `tuned` early-exit policy: an Alto whose parameters come from a tuner file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.controller import Controller, ControllerConfig
from altosim.policy.early_exit import Alto, build_early_exit
from altosim.policy.early_exit.tuned import read_tuned_params, write_tuned_params

PARAMS = {"warmup_ratio": 0.1, "select_ratio": 0.35, "tau_gap": math.inf, "tau_slope": 0.01, "p_div": 4, "p_ovf": 4}


def test_loads_from_file_and_equals_the_alto_with_those_params(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    write_tuned_params(f, PARAMS, held_out="x")
    p = build_early_exit("tuned", {"file": str(f)})
    assert p == Alto(**PARAMS)
    assert p != Alto()
    assert build_early_exit(p.name, p.params()) == p  # rebuilds from its logged params
    assert read_tuned_params(f) == PARAMS


@settings(max_examples=20, deadline=None)
@given(w=st.floats(0.01, 1.0), s=st.floats(0.01, 1.0), gap=st.floats(0, 5), p=st.integers(1, 6))
def test_any_valid_params_round_trip(tmp_path_factory, w: float, s: float, gap: float, p: int) -> None:
    f = tmp_path_factory.mktemp("t") / "p.json"
    params = {"warmup_ratio": w, "select_ratio": s, "tau_gap": gap, "p_ovf": p}
    write_tuned_params(f, params)
    assert build_early_exit("tuned", {"file": str(f)}) == Alto(**params)


def test_paper_rule_and_plateau_patience_load_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "paper.json"
    f.write_text('{"params": {"gap_requires_plateau": false, "p_plateau": 3, "tau_gap": Infinity}}')
    p = build_early_exit("tuned", {"file": str(f)})
    assert p == Alto(gap_requires_plateau=False, p_plateau=3, tau_gap=math.inf)
    assert p != Alto(p_plateau=3, tau_gap=math.inf)
    assert build_early_exit(p.name, p.params()) == p


def test_controller_loads_it_by_name(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    write_tuned_params(f, PARAMS)
    ctl = Controller(ControllerConfig(num_gpus=1, early_exit="tuned", early_exit_params={"file": str(f)},
                                      inter_task="fifo"), duration_for=lambda t: 1.0)
    assert ctl._prior_shrink == pytest.approx(Alto(**PARAMS).expected_work_fraction())


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"),
    ("{not json", "bad JSON"),
    ("[1, 2]", "'params' object"),
    ('{"params": {"warmup_ratio": 0.1, "bogus": 1}}', "unknown alto parameter 'bogus'"),
    ('{"params": {"warmup_ratio": 2.0}}', "warmup_ratio"),
    ('{"policy": "asha", "params": {}}', "'policy' must be 'alto'"),
    ('{"params": {"gap_requires_plateau": 1}}', "gap_requires_plateau"),
    ('{"params": {"p_plateau": 0}}', "p_plateau"),
])
def test_bad_file_is_one_line_error_naming_it(tmp_path: Path, content: str | None, needle: str) -> None:
    f = tmp_path / "bad.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ValueError) as e:
        build_early_exit("tuned", {"file": str(f)})
    msg = str(e.value)
    assert str(f) in msg and needle in msg and "\n" not in msg


def test_bad_params_are_not_written(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    with pytest.raises(ValueError, match="select_ratio"):
        write_tuned_params(f, {"select_ratio": 0.0})
    assert not f.exists()


def test_written_file_is_json_with_provenance(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    write_tuned_params(f, {"p_div": 3}, held_out="taskA", train_tasks=["b", "c"])
    data = json.loads(f.read_text())
    assert data == {"policy": "alto", "params": {"p_div": 3}, "held_out": "taskA", "train_tasks": ["b", "c"]}
