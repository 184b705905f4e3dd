"""Costs measured from a run log: a simulated `alto run` log with known costs is taken apart
exactly, its profile holds the simulator's own step costs, and a held-out replay predicts another
log; bad run folders are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from altosim.build import runtime_controller
from altosim.cli import main
from altosim.cost import (
    FEATURES, CalibratedOverheads, EvalShape, LinearStepCost, RuntimeCalibration, fit_calibration, read_cost_profile,
)
from altosim.fidelity import completion_times, profile_from_run, read_run, run_intervals
from altosim.fidelity.heldout import heldout_fidelity
from altosim.policy.event_order import EVENT_ORDER
from altosim.schemas import load_config
from altosim.sim.engine import Simulator
from altosim.sim.runtime_costs import RuntimeCosts
from tests.sim.toy import toy_curve

TRUE = RuntimeCalibration({"startup": 7.0, "steps": 0.45, "steps_x_adapters": 0.012, "steps_x_samples": 0.003,
                           "eval_jobs": 0.09, "eval_calls": 0.02, "new_step_shapes": 3.0, "new_eval_shapes": 1.5,
                           "jobs_left": 0.3}, 0)
SHAPE = EvalShape(val_rows=48)


def sim_run(tmp: Path, name: str, samples: int, every: int, early_exit: str = "none",
            batches=(1, 2, 4, 8), lrs=(1e-4, 3e-4, 5e-4)) -> Path:
    """An `alto run`-style folder from the simulator with the runtime's protocol and known costs
    (TRUE: host-bound steps, validation, autotuning at new shape buckets, startup)."""
    folder = tmp / name
    folder.mkdir()
    space = {"lr": list(lrs), "rank": [16, 64], "batch_size": list(batches)}
    task = {"id": "t0", "arrival": 0.0, "model": "SmolLM2-135M", "dataset": "toy", "gpus": 1, "search_space": space,
            "samples_per_job": samples, "eval_every_samples": every, "seq_len": 256}
    (folder / "workload.json").write_text(json.dumps({"name": name, "synthetic": True, "tasks": [task]}))
    cfg = {"workload": "workload.json", "cluster": {"gpus": 1, "gpu_type": "H100"},
           "policy": {"early_exit": {"name": early_exit, "params": {}}, "inter_task": {"name": "fifo"}}}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "run_args.json").write_text(json.dumps({"n_val": SHAPE.val_rows}))
    from altosim.traces_io import read_workload

    tasks = read_workload(str(folder / "workload.json")).to_task_specs()
    over = CalibratedOverheads(TRUE, SHAPE)
    res = Simulator(tasks, runtime_controller(load_config(folder / "config.json")), LinearStepCost(TRUE), toy_curve,
                    costs=RuntimeCosts(eval_time=over, before_steps=over.before_steps)).run()
    flat = [x for rec in res.log for x in (rec["event"], *rec["actions"])]
    lines = [{"meta": {"backbone": "synthetic", "device": "SIM H100", "event_order": EVENT_ORDER}}, *flat]
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_intervals_of_a_simulated_log_are_its_costs_exactly(tmp_path):
    run = read_run(sim_run(tmp_path, "a", 48, 6))
    ivs = run_intervals(run, SHAPE)
    assert ivs[0].first and not any(iv.first for iv in ivs[1:])
    assert sum(iv.seconds for iv in ivs) == pytest.approx(max(completion_times(run.trace).values()))
    np.testing.assert_allclose(TRUE.predict(ivs), [iv.seconds for iv in ivs], rtol=1e-9)
    fit = fit_calibration(ivs)
    np.testing.assert_allclose(fit.predict(ivs), [iv.seconds for iv in ivs], rtol=1e-6)
    assert fit.fit_median_rel_err < 1e-6


def test_profile_from_run_recovers_the_simulators_step_costs(tmp_path):
    folder = sim_run(tmp_path, "a", 48, 6)
    run = read_run(folder)
    for prof in (profile_from_run(run, "H100", TRUE, SHAPE), profile_from_run(run, "H100", shape=SHAPE)):
        assert not prof.synthetic and prof.source.startswith(f"measured from alto run log {folder}")
        assert len(prof.rows) >= 3
        for r in prof.rows:  # each record: the true step of its group (mean batch rounded in the key)
            exact = float(r.note.split("mean per-adapter batch ")[1].split(";")[0])
            want = 1e3 * TRUE.step_s(r.adapters, exact * r.adapters)
            assert r.step_ms == pytest.approx(want, rel=2e-3), r
    raw = profile_from_run(run, "H100", shape=SHAPE, overheads="include")
    assert sum(r.step_ms for r in raw.rows) > sum(r.step_ms for r in prof.rows)  # validation etc. inside


def test_heldout_replay_of_another_sim_log_predicts_it(tmp_path):
    # early exits separate "jobs left" from "new shape" (in a no-exit grid they always coincide)
    fit = read_run(sim_run(tmp_path, "fit", 96, 12, early_exit="alto", lrs=(1e-4, 2e-4, 3e-4, 5e-4)))
    test = read_run(sim_run(tmp_path, "test", 64, 8, early_exit="asha"))
    cal = fit_calibration(run_intervals(fit, SHAPE))
    assert cal.coef == pytest.approx(TRUE.coef, rel=1e-6, abs=1e-9)
    cfg = load_config(test.folder / "config.json")
    rows, frames, prof = heldout_fidelity(fit, test, cfg, SHAPE, SHAPE, predictors=("linear", "profile"))
    v = {r["metric"]: r["value"] for r in rows}
    assert v["linear.makespan_rel_err"] < 1e-6
    assert v["linear.decisions_identical"] == v["linear.decisions_real"] and v["linear.first_divergence"] == -1
    assert v["profile.first_divergence"] == -1
    assert v["profile.makespan_rel_err"] < 0.10  # interpolation of a 4-point profile, not the exact line
    assert v["interval_s.heldout.median_rel_err"] < 1e-6
    assert [s for s, _ in frames] == ["real", "linear", "profile"]


def test_slower_test_run_shows_as_heldout_error(tmp_path):
    fit = read_run(sim_run(tmp_path, "fit", 48, 6))
    folder = sim_run(tmp_path, "test", 48, 6)
    lines = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
    for d in lines[1:]:
        if "now" in d:
            d["now"] *= 1.5
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows, _, _ = heldout_fidelity(fit, read_run(folder), load_config(folder / "config.json"), SHAPE, SHAPE)
    v = {r["metric"]: r["value"] for r in rows}
    assert v["linear.makespan_rel_err"] == pytest.approx(1 / 3, rel=1e-6)


def test_cli_profile_from_run_and_heldout_check(tmp_path, capsys):
    fit = sim_run(tmp_path, "fit", 48, 6)
    test = sim_run(tmp_path, "test", 48, 12)
    assert main(["profile-from-run", str(fit), "--out", str(tmp_path / "p.csv")]) == 0
    prof = read_cost_profile(tmp_path / "p.csv")
    assert prof.rows and not prof.synthetic and "alto run log" in prof.source
    assert main(["check-fidelity", "--run", str(test), "--calibrate-from", str(fit), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "fidelity_SIM_H100.png").is_file()
    assert "linear.makespan_rel_err" in (tmp_path / "o" / "fidelity_SIM_H100.csv").read_text()


@pytest.mark.parametrize("argv", [
    ["profile-from-run", "{tmp}/missing", "--out", "{tmp}/p.csv"],
    ["profile-from-run", "{tmp}/empty", "--out", "{tmp}/p.csv"],
    ["check-fidelity", "--run", "{tmp}/empty", "--calibrate-from", "{tmp}/missing", "--out", "{tmp}/o"],
    ["check-fidelity", "--calibrate-from", "{tmp}/empty", "--out", "{tmp}/o"],
])
def test_bad_run_folder_is_one_line_error(tmp_path, capsys, argv):
    (tmp_path / "empty").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alto: error:") and "\n" not in err
    assert not (tmp_path / "p.csv").exists()


def test_fit_needs_intervals_and_known_terms(tmp_path):
    ivs = run_intervals(read_run(sim_run(tmp_path, "a", 48, 6)), SHAPE)
    with pytest.raises(ValueError, match="intervals"):
        fit_calibration(ivs[:1])
    with pytest.raises(ValueError, match="fixed"):
        fit_calibration(ivs, fixed={"nope": 1.0})
    held = fit_calibration(ivs, fixed={"startup": 0.0})
    assert held.coef["startup"] == 0.0 and set(held.coef) == set(FEATURES) and math.isfinite(held.coef["steps"])


def test_predict_makespan_of_a_run_without_log(tmp_path):
    """Policy none: decisions do not depend on losses, so a run with no kept log is predicted
    from the workload alone (here: exactly, costs from a log with the same true costs)."""
    from altosim.fidelity.heldout import predict_makespan
    from altosim.traces_io import read_workload

    fit = read_run(sim_run(tmp_path, "fit", 96, 12, early_exit="alto", lrs=(1e-4, 2e-4, 3e-4, 5e-4)))
    other = read_run(sim_run(tmp_path, "other", 64, 8))
    tasks = read_workload(str(other.folder / "workload.json")).to_task_specs()
    cfg = load_config(other.folder / "config.json")
    want = max(completion_times(other.trace).values())
    assert predict_makespan(tasks, cfg, fit, SHAPE, SHAPE, "linear") == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="predictor"):
        predict_makespan(tasks, cfg, fit, SHAPE, SHAPE, "nope")


def test_term_sensitivity_finds_the_terms_that_matter(tmp_path):
    from altosim.fidelity.heldout import term_sensitivity

    fit = read_run(sim_run(tmp_path, "fit", 96, 12, early_exit="alto", lrs=(1e-4, 2e-4, 3e-4, 5e-4)))
    test = read_run(sim_run(tmp_path, "test", 48, 6))
    rows = term_sensitivity(fit, test, load_config(test.folder / "config.json"), SHAPE, SHAPE)
    err = {(r["left_out"], r["predictor"]): r["makespan_rel_err"] for r in rows}
    assert err[("-", "linear")] < 1e-6
    assert err[("eval_jobs", "linear")] > 0.01 and err[("startup", "linear")] > 0.01  # true terms, left out
    assert {r["left_out"] for r in rows} == {"-", *(f for f in FEATURES if f != "steps")}


def test_cli_profile_json_with_overheads_included_and_alias(tmp_path):
    fit = sim_run(tmp_path, "fit", 48, 6)
    assert main(["profile-from-run", str(fit), "--out", str(tmp_path / "p.json"), "--overheads", "include"]) == 0
    from altosim.cost import read_profile

    prof = read_profile(tmp_path / "p.json")
    assert "overheads included" in prof.source and all("overheads included" in r.note for r in prof.rows)
    assert main(["check-fidelity", "--run", str(fit), "--profile-from-run", str(fit), "--out", str(tmp_path / "o")]) == 0
