"""`tuned`: a config naming a file of ALTO parameters; resolved to `alto` when the config loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.errors import InputError
from altosim.policy.early_exit import Alto, build_early_exit
from altosim.schemas.config import RunConfig, config_from_dict
from altosim.tuned_params import read_tuned_params, resolve_tuned, write_tuned_params

PARAMS = {"warmup_ratio": 0.1, "select_ratio": 0.35, "tau_gap": math.inf, "tau_slope": 1.0,
          "div_patience": 0.04, "ovf_patience": 0.04}


def test_a_config_naming_a_file_becomes_the_alto_with_its_params(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    write_tuned_params(f, PARAMS, held_out="x")
    cfg = RunConfig.model_validate({"policy": {"early_exit": {"name": "tuned", "params": {"file": str(f)}}}})
    assert cfg.policy.early_exit.name == "alto" and cfg.policy.early_exit.params == PARAMS
    p = build_early_exit(cfg.policy.early_exit.name, cfg.policy.early_exit.params)
    assert p == Alto(**PARAMS) and p != Alto()
    assert build_early_exit(p.name, p.params()) == p  # rebuilds from its logged params
    assert read_tuned_params(f) == PARAMS


def test_the_policy_core_cannot_read_a_file() -> None:
    with pytest.raises(ValueError, match="unknown early_exit policy 'tuned'"):
        build_early_exit("tuned", {"file": "x.json"})


def test_a_relative_file_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    write_tuned_params(tmp_path / "t.json", PARAMS)
    cfg = config_from_dict({"policy": {"early_exit": {"name": "tuned", "params": {"file": "t.json"}}}},
                           file="c.yaml", base=tmp_path)
    assert cfg.policy.early_exit.params == PARAMS


@settings(max_examples=20, deadline=None)
@given(w=st.floats(0.01, 1.0), s=st.floats(0.01, 1.0), gap=st.floats(0, 5), p=st.floats(0.01, 0.2))
def test_any_valid_params_round_trip(tmp_path_factory, w: float, s: float, gap: float, p: float) -> None:
    f = tmp_path_factory.mktemp("t") / "p.json"
    params = {"warmup_ratio": w, "select_ratio": s, "tau_gap": gap, "ovf_patience": p}
    write_tuned_params(f, params)
    assert resolve_tuned("tuned", {"file": str(f)}) == ("alto", params)


def test_other_policies_pass_through() -> None:
    assert resolve_tuned("asha", {"grace_period": 0.1}) == ("asha", {"grace_period": 0.1})


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"),
    ("{not json", "bad JSON"),
    ("[1, 2]", "'params' object"),
    ('{"params": {"warmup_ratio": 0.1, "bogus": 1}}', "unknown alto parameter 'bogus'"),
    ('{"params": {"warmup_ratio": 2.0}}', "warmup_ratio"),
    ('{"policy": "asha", "params": {}}', "'policy' must be 'alto'"),
    ('{"params": {"gap_requires_plateau": 1}}', "gap_requires_plateau"),
    ('{"params": {"plateau_ratio": 0}}', "plateau_ratio"),
])
def test_bad_file_is_one_line_error_naming_it(tmp_path: Path, content: str | None, needle: str) -> None:
    f = tmp_path / "bad.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ValueError) as e:
        resolve_tuned("tuned", {"file": str(f)})
    msg = str(e.value)
    assert str(f) in msg and needle in msg and "\n" not in msg
    with pytest.raises(InputError) as e2:  # the config loader names the field
        config_from_dict({"policy": {"early_exit": {"name": "tuned", "params": {"file": str(f)}}}}, file="c.yaml")
    assert "policy" in str(e2.value) and needle in str(e2.value)


def test_bad_params_are_not_written(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    with pytest.raises(ValueError, match="select_ratio"):
        write_tuned_params(f, {"select_ratio": 0.0})
    assert not f.exists()


def test_written_file_is_json_with_provenance(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    write_tuned_params(f, {"div_patience": 0.03}, held_out="taskA", train_tasks=["b", "c"])
    data = json.loads(f.read_text())
    assert data == {"policy": "alto", "params": {"div_patience": 0.03}, "held_out": "taskA", "train_tasks": ["b", "c"]}
