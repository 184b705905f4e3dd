"""Profile-backed step times: exact at measured points, monotone between, extrapolation flagged;
the cost model uses a profile where it covers a model and falls back to the analytic one."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.cost import ProfileTable, cost_model_for, cost_model_from_config, model_shape, write_cost_profile
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import CostProfile, CostRecord, RunConfig
from altosim.schemas.cost import MemoryFit

A, R, B, L = (1, 4, 16), (16, 64), (1, 4), (128, 512)


def cost_fn(a: float, r: float, b: float, l: float) -> float:
    """A multilinear step-time law (ms): floor + per-token work growing with rank."""
    return 5.0 + 1e-3 * a * b * l * (1 + 0.01 * r)


def grid_profile(model: str = "smollm2-135m", gpu: str = "H100", f=cost_fn, skip=(), **extra) -> CostProfile:
    rows = [CostRecord(model=model, gpu_type=gpu, adapters=a, mean_rank=r, per_adapter_batch=b, seq_len=l,
                       step_ms=f(a, r, b, l), peak_mem_bytes=0)
            for a, r, b, l in itertools.product(A, R, B, L) if (a, r, b, l) not in skip]
    return CostProfile(rows=rows, device="test", **extra)


def test_exact_at_every_measured_point():
    t = ProfileTable(grid_profile())
    for a, r, b, l in itertools.product(A, R, B, L):
        p = t.predict("SmolLM2-135M", "h100", a, r, b, l)  # names match case-insensitively
        assert p.step_ms == pytest.approx(cost_fn(a, r, b, l), rel=1e-12)
        assert not p.extrapolated
    assert t.extrapolations == 0


@settings(max_examples=60, deadline=None)
@given(a=st.floats(1, 16), r=st.floats(16, 64), b=st.floats(1, 4), l=st.floats(128, 512))
def test_inside_the_grid_reproduces_a_multilinear_law(a, r, b, l):
    p = ProfileTable(grid_profile()).predict("smollm2-135m", "H100", a, r, b, l)
    assert not p.extrapolated
    assert p.step_ms == pytest.approx(cost_fn(a, r, b, l), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(x=st.lists(st.floats(1, 16), min_size=2, max_size=6), r=st.sampled_from(R), b=st.floats(1, 4))
def test_monotone_between_points_for_monotone_data(x, r, b):
    # a law that is monotone but not multilinear in adapters (sub-linear): still monotone
    t = ProfileTable(grid_profile(f=lambda a, r_, b_, l: 3.0 + (a ** 0.5) * b_ * l / 100))
    ys = [t.predict("smollm2-135m", "H100", a, r, b, 256).step_ms for a in sorted(x)]
    assert all(y0 <= y1 + 1e-12 for y0, y1 in zip(ys, ys[1:]))


def test_extrapolation_is_flagged_and_counted():
    t = ProfileTable(grid_profile())
    above = t.predict("smollm2-135m", "H100", 32, 16, 4, 512)  # adapters past 16: last slope continued
    assert above.extrapolated and above.step_ms == pytest.approx(cost_fn(32, 16, 4, 512))
    below = t.predict("smollm2-135m", "H100", 4, 8, 1, 128)  # rank under 16: the edge value
    assert below.extrapolated and below.step_ms == pytest.approx(cost_fn(4, 16, 1, 128))
    assert t.extrapolations == 2
    with pytest.raises(ValueError, match="no profile rows"):
        t.predict("llama-3.2-1b", "H100", 1, 16, 1, 128)
    with pytest.raises(ValueError, match="seq_len"):
        t.predict("smollm2-135m", "H100", 1, 16, 1, 0)


def test_holes_are_bridged_by_the_points_that_exist():
    hole = (16, 64, 4, 512)  # an out-of-memory corner
    t = ProfileTable(grid_profile(skip={hole}))
    p = t.predict("smollm2-135m", "H100", *hole)
    assert p.extrapolated  # that corner's batch axis only reaches 1 now
    q = t.predict("smollm2-135m", "H100", 4, 16, 2, 256)  # far from the hole: unaffected
    assert not q.extrapolated and q.step_ms == pytest.approx(cost_fn(4, 16, 2, 256))


def test_cost_model_uses_the_profile_and_falls_back():
    prof = grid_profile(layers={"smollm2-135m": 30})
    cm = cost_model_for("H100", 50.0, profile=prof)
    est = cm.single_step("smollm2-135m", 4, 16, 4, 512)
    assert est.source == "profile" and est.seconds == pytest.approx(cost_fn(4, 16, 4, 512) / 1e3)
    other = cm.single_step("llama-3.2-1b", 4, 16, 4, 512)
    assert other.source == "analytic"
    assert other.seconds == pytest.approx(cost_model_for("H100").single_step("llama-3.2-1b", 4, 16, 4, 512).seconds)
    assert cost_model_for("H200", profile=prof).single_step("smollm2-135m", 4, 16, 4, 512).source == "analytic"


def test_truncated_profile_scales_to_full_depth_by_the_analytic_ratio():
    prof = grid_profile(model="llama-3.2-1b", layers={"llama-3.2-1b": 4})
    cm = cost_model_for("H100", profile=prof)
    at4 = cm.single_step("llama-3.2-1b", 4, 16, 4, 512, layers=4)
    assert at4.seconds == pytest.approx(cost_fn(4, 16, 4, 512) / 1e3)
    full = cm.single_step("llama-3.2-1b", 4, 16, 4, 512)
    shape = model_shape("llama-3.2-1b")
    ratio = cm.analytic_single(shape, 4, 16, 4, 512) / cm.analytic_single(shape.truncated(4), 4, 16, 4, 512)
    assert ratio > 1.5 and full.seconds == pytest.approx(at4.seconds * ratio)


def test_task_steps_and_memory_come_from_the_profile():
    fit = MemoryFit(k0=2e9, k1=3e5, capacity=80e9, points=8, max_rel_err=0.01)
    prof = grid_profile(layers={"smollm2-135m": 30}, memory_fits={"smollm2-135m": fit})
    cm = cost_model_for("H100", profile=prof)
    jobs = tuple(JobSpec(f"j{i}", "t", 1e-4, rank=16, batch_size=b) for i, b in enumerate((1, 4, 1, 4)))
    task = TaskSpec("t", 0.0, "SmolLM2-135M", "d", 1, jobs, 100, seq_len=512)
    assert cm.step_time(task, jobs) == pytest.approx(cost_fn(4, 16, 2.5, 512) / 1e3)
    mem = cm.memory_model(task, margin=0.1)
    assert (mem.k0, mem.k1, mem.margin) == (2e9, 3e5, 0.1)
    two = TaskSpec("t", 0.0, "SmolLM2-135M", "d", 2, jobs, 100, seq_len=512)
    assert cm.memory_model(two).k0 != 2e9  # sharded: analytic
    ap = cm.step_time(two, jobs)  # rank-local adapter parallelism: 2 adapters a rank
    assert cost_fn(2, 16, 2.5, 512) / 1e3 < ap < cost_fn(4, 16, 2.5, 512) / 1e3


def test_run_config_cost_profile_reaches_the_simulator(tmp_path):
    path = tmp_path / "h100.csv"
    write_cost_profile(grid_profile(layers={"smollm2-135m": 30}), path)
    cm = cost_model_from_config(RunConfig(cost_profile=str(path)))
    assert cm.profile is not None and cm.single_step("smollm2-135m", 1, 16, 1, 128).source == "profile"
    assert cost_model_from_config(RunConfig()).profile is None
    assert cm.profile.method == "interp"  # the default reading
    fit = cost_model_from_config(RunConfig(cost_profile=str(path), cost_profile_method="hostgpu"))
    assert fit.profile.method == "hostgpu" and fit.single_step("smollm2-135m", 3, 16, 2, 300).source == "profile"


def test_unknown_profile_method_in_a_config_is_one_line_error(tmp_path):
    from altosim.errors import InputError
    from altosim.schemas import load_config

    (tmp_path / "c.json").write_text('{"cost_profile_method": "spline"}')
    with pytest.raises(InputError, match="cost_profile_method"):
        load_config(tmp_path / "c.json")


def test_simulate_reports_how_often_the_profile_was_extrapolated(tmp_path, capsys):
    """The default workload's Llama tasks are outside a profile of one small grid of Llama-3.2-1B
    rows: `alto simulate` says how many step-time queries it extrapolated (0 without a profile)."""
    from altosim.cli import main
    from altosim.simulate import load_inputs, simulate

    path = tmp_path / "h100.csv"
    write_cost_profile(grid_profile(model="llama-3.2-1b", layers={"llama-3.2-1b": 16}), path)
    cfg = RunConfig(cost_profile=str(path), cluster={"gpus": 8})
    run = simulate(cfg, load_inputs(cfg))
    assert run.meta["cost"] == {"source": "profile", "extrapolations": run.meta["cost"]["extrapolations"]}
    assert run.meta["cost"]["extrapolations"] > 0
    plain = simulate(RunConfig(), load_inputs(RunConfig()))
    assert plain.meta["cost"] == {"source": "analytic", "extrapolations": 0}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"cost_profile: {path}\n")
    assert main(["simulate", str(cfg_file), "--out", str(tmp_path / "o"), "-q"]) == 0
    assert "step-time queries fell outside the measured range" in capsys.readouterr().out


def test_hostgpu_reading_follows_the_two_lines_and_flags_extrapolation():
    """method="hostgpu" answers from the host-floor / GPU-line fit: on rows that lie on the two
    lines it is exact between and beyond grid points (where interpolation is not), and still counts
    a query outside the measured range as an extrapolation."""
    def law(a, r, b, l):  # noqa: ANN001, ANN202
        return max(40.0 + 0.5 * a, 2.0 + 4e-3 * a * b * l)

    prof = grid_profile(f=law)
    fit, interp = ProfileTable(prof, method="hostgpu"), ProfileTable(prof)
    inside = fit.predict("smollm2-135m", "H100", 8, 16, 3, 300)
    assert not inside.extrapolated and inside.step_ms == pytest.approx(law(8, 16, 3, 300), rel=0.02)
    past = fit.predict("smollm2-135m", "H100", 4, 16, 16, 256)  # batch 16: past the batch axis
    assert past.extrapolated and past.step_ms == pytest.approx(law(4, 16, 16, 256), rel=0.1)
    assert fit.extrapolations == 1
    assert abs(interp.predict("smollm2-135m", "H100", 8, 16, 3, 300).step_ms - law(8, 16, 3, 300)) > 0.02 * law(8, 16, 3, 300)
    with pytest.raises(ValueError, match="method"):
        ProfileTable(prof, method="spline")
    cm = cost_model_for("H100", profile=prof, method="hostgpu")
    task = TaskSpec("t", 0.0, "smollm2-135m", "toy", 1, (), 100, seq_len=300)
    jobs = [JobSpec(f"j{i}", "t", 1e-4, 16, 3) for i in range(8)]
    assert cm.step_time(task, jobs) == pytest.approx(law(8, 16, 3, 300) / 1e3, rel=0.02)
