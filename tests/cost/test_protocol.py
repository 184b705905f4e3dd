"""Every step-cost source answers the one StepCost protocol, and whatever prices through it (the
worst-case planner's step, the replay's validation) takes any of them."""

from __future__ import annotations

import pytest

from altosim.cost import (
    FEATURES, CostModel, EvalShape, LinearStepCost, MeasuredCost, RuntimeCalibration, StepCost, ValidationCost,
    cost_model_for,
)
from altosim.policy.types import JobSpec, TaskSpec

JOBS = (JobSpec("t/a", "t", 1e-4, 8, 2), JobSpec("t/b", "t", 1e-4, 16, 4))
TASK = TaskSpec("t", 0.0, "smollm2-135m", "d", 1, JOBS, 64, seq_len=128)
LINE = RuntimeCalibration({f: 0.0 for f in FEATURES} | {"steps": 0.1, "steps_x_adapters": 0.01,
                                                          "steps_x_samples": 0.001}, intervals=2)


def sources() -> list[StepCost]:
    measured = MeasuredCost({("t", frozenset({"t/a", "t/b"})): (3.0, 10), ("t", frozenset({"t/a"})): (1.0, 10)})
    return [cost_model_for("H100"), LinearStepCost(LINE), measured]


def test_every_source_is_a_step_cost_and_prices_a_group():
    for src in sources():
        assert isinstance(src, StepCost)
        t = src.step_time(TASK, list(JOBS))
        assert t > 0 and t == src.step_time(TASK, JOBS)  # a list or a tuple of jobs, same answer
    assert LinearStepCost(LINE).step_time(TASK, JOBS) == pytest.approx(0.1 + 0.02 + 0.006)
    assert sources()[2].step_time(TASK, JOBS) == pytest.approx(0.3)  # the composition the run measured
    assert not isinstance(object(), StepCost)


def test_validation_prices_through_any_step_cost():
    """ValidationCost(cost, rows): ceil(rows / 16) forwards of the jobs at 16 rows each, a third
    of a step each by default: with the linear cost, exactly that arithmetic."""
    ev = ValidationCost(LinearStepCost(LINE), val_rows=32)
    one = LINE.step_s(2, 2 * 16) / 3
    assert ev(TASK, list(JOBS)) == pytest.approx(2 * one)
    assert EvalShape(val_rows=32).calls(2) == [2, 2]  # the calibration's view of the same call pattern
    model = ValidationCost(cost_model_for("H100"), val_rows=32)
    assert isinstance(model.cost, CostModel) and model(TASK, list(JOBS)) > 0


def test_a_cut_backbone_is_its_base_model_with_fewer_layers():
    from altosim.cost.specs import MODELS, model_shape

    cut = model_shape("SmolLM2-135M-L12")
    base = MODELS["smollm2-135m"]
    assert cut.layers == 12 and cut.name == "smollm2-135m-l12"
    assert cut.params == base.params - 18 * base.layer_params and cut.hidden == base.hidden
    for bad in ("SmolLM2-135M-L0", "SmolLM2-135M-L31", "nope-L3", "SmolLM2-135M-Lx"):
        with pytest.raises(ValueError, match="unknown model"):
            model_shape(bad)
