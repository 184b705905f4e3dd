"""`alto check-fidelity`: a run replayed against itself matches; perturbed runs are caught."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.cli import main
from altosim.build import runtime_controller
from altosim.cost import (
    MeasuredCost, ValidationCost, analytic_predictor, cost_model_for, cost_predictor, interior, split_profile,
    step_time_errors,
)
from altosim.errors import InputError
from altosim.fidelity import (
    ReportedCurve, check_fidelity, compare_decisions, completion_times, job_curves,
    measured_step_times, read_run,
)
from altosim.policy.event_order import EVENT_ORDER, LEGACY_ORDER
from altosim.schemas import CostProfile, CostRecord, load_config
from altosim.sim.engine import Simulator
from altosim.sim.runtime_costs import RuntimeCosts
from tests.sim.toy import toy_curve

COST = cost_model_for("H100")


def _inputs(tmp: Path, early_exit: str = "alto", loss_trace: str | None = None,
            params: dict | None = None) -> Path:
    """A 2-task workload (one batch size: the analytic predictor sees each group exactly) + config."""
    space = {"lr": [1e-4, 2e-4, 3e-4, 4e-4], "rank": [8, 16], "batch_size": [4]}
    tasks = [{"id": f"t{i}", "arrival": 0.0 if i < 2 else 12.0, "model": "llama-3.2-1b", "dataset": "toy", "gpus": 1,
              "search_space": space, "samples_per_job": 400, "eval_every_samples": 20, "seq_len": 256}
             for i in range(3)]
    if loss_trace:
        tasks = [{**t, "loss_trace": loss_trace} for t in tasks]
    (tmp / "workload.json").write_text(json.dumps({"name": "fid", "synthetic": True, "tasks": tasks}))
    cfg = {"workload": "workload.json", "cluster": {"gpus": 1, "gpu_type": "H100"},
           "policy": {"early_exit": {"name": early_exit, "params": params or {}}, "inter_task": {"name": "fifo"}}}
    (tmp / "config.json").write_text(json.dumps(cfg))
    return tmp / "config.json"


def runtime_sim(tasks, controller, curve, order: int = EVENT_ORDER, eval_time=None, failures=None, cost=COST):
    """The simulator as a stand-in for `alto run`: the runtime's costs, its log's event order."""
    return Simulator(tasks, controller, cost, curve, event_order=order, costs=RuntimeCosts(eval_time),
                     failures=failures).run()


def synthetic_run(tmp: Path, early_exit: str = "alto", val_rows: int = 0, params: dict | None = None,
                  order: int = EVENT_ORDER) -> Path:
    """A run folder as `alto run` writes it (header `event_order: order`, none for the legacy
    order), produced by the simulator (with `val_rows`, each evaluation also takes the time the
    runtime's validation would)."""
    folder = tmp / "run"
    folder.mkdir()
    cfg = load_config(_inputs(folder, early_exit, params=params))
    from altosim.traces_io import read_workload

    tasks = read_workload(str(folder / "workload.json")).to_task_specs()
    ev = ValidationCost(COST, val_rows) if val_rows else None
    res = runtime_sim(tasks, runtime_controller(cfg), toy_curve, order, eval_time=ev)
    flat = [x for rec in res.log for x in (rec["event"], *rec["actions"])]
    meta = {"backbone": "synthetic", "device": "SIM H100", **({"event_order": order} if order != LEGACY_ORDER else {})}
    lines = [{"meta": meta}, *flat]
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["metric"]: r for r in csv.DictReader(open(path))}


def _edit_events(folder: Path, edit) -> None:
    lines = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
    lines = [lines[0], *edit(lines[1:])]
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.mark.parametrize("order", [EVENT_ORDER, LEGACY_ORDER])
def test_self_replay_identical_decisions_and_zero_makespan_error(tmp_path, order):
    run = synthetic_run(tmp_path, order=order)
    rep = check_fidelity(tmp_path / "out", run_dir=run)
    rows = _rows(tmp_path / "out" / "fidelity_SIM_H100.csv")
    for mode in ("measured", "model"):
        assert rows[f"{mode}.first_divergence"]["value"] == "-1"
        assert rows[f"{mode}.decisions_identical"]["value"] == rows[f"{mode}.decisions_real"]["value"]
        assert int(rows[f"{mode}.decisions_real"]["value"]) > 10
        assert float(rows[f"{mode}.makespan_rel_err"]["value"]) < 1e-6
        assert float(rows[f"{mode}.completion_rel_err[t2]"]["value"]) < 1e-6
    assert rep.passed
    assert (tmp_path / "out" / "fidelity_SIM_H100.png").stat().st_size > 0
    tl = list(csv.DictReader(open(tmp_path / "out" / "fidelity_SIM_H100_timeline.csv")))
    assert {r["source"] for r in tl} == {"real", "measured", "model"}


def test_changed_loss_changes_a_decision_and_is_reported(tmp_path):
    run = synthetic_run(tmp_path)
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()[1:]]
    stopped = next(a["job_id"] for a in events if a["kind"] == "stop")
    # the stopped job's reports now look like the best job's: early exit must keep it
    _edit_events(run, lambda xs: [{**x, "val_loss": 0.01, "train_loss": 0.01}
                                  if x["kind"] == "step_report" and x["job_id"] == stopped else x for x in xs])
    rep = check_fidelity(tmp_path / "out", run_dir=run, modes=("measured",))
    rows = _rows(rep.files[0])
    assert int(rows["measured.first_divergence"]["value"]) >= 0
    assert rows["measured.decisions_identical"]["pass"] == "False"
    assert "real {" in rows["measured.decisions_identical"]["note"]
    assert not rep.passed


def test_slower_real_run_shows_as_model_makespan_error(tmp_path):
    # one cut: the GPU stays busy past the last arrival, so the modelled makespan is the
    # unscaled run's exactly (with the default two cuts it idles until then)
    run = synthetic_run(tmp_path, params={"warmup_ratio": 0.05, "cuts": 1})
    def slower(x):  # every time 1.5x later, arrivals included
        if "task" in x:
            x = {**x, "task": {**x["task"], "arrival": 1.5 * x["task"]["arrival"]}}
        return {**x, "now": 1.5 * x["now"]} if "now" in x else x

    _edit_events(run, lambda xs: [slower(x) for x in xs])
    rows = _rows(check_fidelity(tmp_path / "out", run_dir=run).files[0])
    assert float(rows["measured.makespan_rel_err"]["value"]) < 1e-6  # measured costs follow the run
    assert abs(float(rows["model.makespan_rel_err"]["value"]) - 1 / 3) < 1e-6  # 1/1.5 of the real time
    assert rows["model.makespan_rel_err"]["pass"] == "False"
    assert rows["model.decisions_identical"]["pass"] == "True"  # time does not change these decisions


def test_measured_step_times_per_group():
    trace = [
        {"kind": "task_arrived", "now": 0.0}, {"kind": "start_task", "task_id": "t", "gpus": [0]},
        {"kind": "admit", "task_id": "t", "job_id": "a"}, {"kind": "admit", "task_id": "t", "job_id": "b"},
        {"kind": "step_report", "now": 4.0, "task_id": "t", "job_id": "a", "step": 2},
        {"kind": "stop", "task_id": "t", "job_id": "b"},
        {"kind": "step_report", "now": 5.0, "task_id": "t", "job_id": "a", "step": 3},
        {"kind": "admit", "task_id": "t", "job_id": "c"},
        {"kind": "step_report", "now": 8.0, "task_id": "t", "job_id": "c", "step": 2},
    ]
    run = type("R", (), {"trace": trace})()
    got = measured_step_times(run)  # type: ignore[arg-type]
    assert got == {("t", frozenset("ab")): (4.0, 2), ("t", frozenset("a")): (1.0, 1), ("t", frozenset("ac")): (3.0, 2)}


def _profile(scale: float = 1.0) -> CostProfile:
    predict = analytic_predictor()
    rows = []
    for n in (1, 2, 4, 8):
        for b in (1, 2, 4):
            for r in (8.0, 16.0):
                q = CostRecord(model="llama-3.2-1b", gpu_type="H100", adapters=n, mean_rank=r, per_adapter_batch=b,
                               seq_len=256, step_ms=1.0, peak_mem_bytes=0)
                rows.append(q.model_copy(update={"step_ms": scale * predict(q)}))
    return CostProfile(rows=rows, device="SIM H100", date="2026-11-23", synthetic=True)


def test_step_time_check_on_held_out_rows():
    fit, held = split_profile(_profile(), every=4)
    assert len(held) == 6 and len(fit.rows) == 18 and held[0] == _profile().rows[3]
    exact = step_time_errors(_profile(), analytic_predictor, every=4)
    assert exact[0]["model"] == "llama-3.2-1b" and exact[0]["points"] == 6 and exact[0]["median_rel_err"] < 1e-9
    off = step_time_errors(_profile(scale=1.25), analytic_predictor, every=4)[0]
    assert abs(off["median_rel_err"] - 0.2) < 1e-9 and abs(off["p90_rel_err"] - 0.2) < 1e-9
    seen = []
    step_time_errors(_profile(), factory=lambda fit: seen.append(len(fit.rows)) or analytic_predictor(), every=4)
    assert seen == [18]  # the predictor is fitted on the other rows only


def test_cli_writes_csv_and_png(tmp_path, capsys):
    run = synthetic_run(tmp_path)
    prof = tmp_path / "p.json"
    prof.write_text(_profile().model_dump_json())
    rc = main(["check-fidelity", "--run", str(run), "--profile", str(prof), "--out", str(tmp_path / "o"), "--strict"])
    assert rc == 0
    rows = _rows(tmp_path / "o" / "fidelity_SIM_H100.csv")
    assert rows["step_ms.median_rel_err[llama-3.2-1b]"]["pass"] == "True"
    assert "model.decisions_identical" in rows and (tmp_path / "o" / "fidelity_SIM_H100.png").exists()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("setup, field", [
    (lambda d: None, "--run"),
    (lambda d: d.mkdir(), "events.jsonl"),
    (lambda d: (d.mkdir(), (d / "events.jsonl").write_text('{"meta": {}}\n{not json\n')), "<json>"),
    (lambda d: (d.mkdir(), (d / "events.jsonl").write_text('{"kind": "admit"}\n')), "meta"),
    (lambda d: (d.mkdir(), (d / "events.jsonl").write_text('{"meta": {}}\n{"kind": "launch"}\n')), "kind"),
])
def test_bad_run_folder_is_one_line_error(tmp_path, capsys, setup, field):
    d = tmp_path / "r"
    setup(d)
    with pytest.raises(InputError) as e:
        read_run(d)
    assert e.value.field == field
    rc = main(["check-fidelity", "--run", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("alto: error:") and field in err
    assert not (tmp_path / "o").exists()


def test_runtime_log_without_config_is_one_line_error(tmp_path, capsys):
    run = synthetic_run(tmp_path)
    (run / "config.json").unlink()
    rc = main(["check-fidelity", "--run", str(run), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--config" in capsys.readouterr().err


def test_alto_simulate_log_replays_identically(tmp_path):
    cfg = _inputs(tmp_path, loss_trace="Llama-3.2-1B__gsm8k__synthetic")
    assert main(["simulate", str(cfg), "--out", str(tmp_path / "sim"), "-q"]) == 0
    rows = _rows(check_fidelity(tmp_path / "o", run_dir=tmp_path / "sim", modes=("measured",)).files[0])
    assert rows["measured.first_divergence"]["value"] == "-1"
    assert float(rows["measured.makespan_rel_err"]["value"]) < 1e-6


def test_bad_profile_is_one_line_error(tmp_path, capsys):
    run = synthetic_run(tmp_path)
    (tmp_path / "p.json").write_text('{"rows": [{"model": "m"}]}')
    for prof in (tmp_path / "missing.csv", tmp_path / "p.json"):
        rc = main(["check-fidelity", "--run", str(run), "--profile", str(prof), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(prof) in err
    assert not (tmp_path / "o").exists()


def test_validation_time_is_charged_when_the_run_says_how_much_it_validated(tmp_path):
    run = synthetic_run(tmp_path, val_rows=48)
    unknown = _rows(check_fidelity(tmp_path / "a", run_dir=run, modes=("model",)).files[0])
    assert float(unknown["model.makespan_rel_err"]["value"]) > 0.05  # validation time missing
    assert unknown["model.val_rows_modelled"]["value"] == "0"
    (run / "run_args.json").write_text(json.dumps({"n_val": 48}))
    known = _rows(check_fidelity(tmp_path / "b", run_dir=run, modes=("model",)).files[0])
    assert float(known["model.makespan_rel_err"]["value"]) < 1e-6
    assert known["model.first_divergence"]["value"] == "-1"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(2, 8), st.sampled_from([1, 2]), st.floats(0, 30)), min_size=1, max_size=4),
       st.sampled_from(["alto", "none", "asha", "median"]), st.sampled_from(["fifo", "sjf"]), st.sampled_from([1, 3]),
       st.sampled_from([EVENT_ORDER, LEGACY_ORDER]))
def test_any_runtime_log_replays_itself_exactly(tmp_path_factory, specs, ee, inter, gpus, order):
    """Measured costs rebuilt from a log (groups that shrink, tasks side by side on several GPUs)
    give back the same decisions and the same completion times, in either event order."""
    from altosim.policy.controller import Controller, ControllerConfig
    from tests.sim.toy import toy_task

    tasks = [toy_task(f"t{i}", n, min(g, gpus), a, 200) for i, (n, g, a) in enumerate(specs)]
    ccfg = ControllerConfig(num_gpus=gpus, early_exit=ee, inter_task=inter)
    make = lambda: Controller(ccfg, duration_for=lambda t: COST.worst_case_duration(t),  # noqa: E731
                              memory_for=lambda t: COST.memory_model(t))
    res = runtime_sim(tasks, make(), toy_curve, order)
    folder = tmp_path_factory.mktemp("run")
    flat = [x for rec in res.log for x in (rec["event"], *rec["actions"])]
    meta = {"event_order": order} if order != LEGACY_ORDER else {}
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [{"meta": meta}, *flat]))
    run = read_run(folder)
    got = replay_run_with(run, make(), MeasuredCost(measured_step_times(run)))
    d = compare_decisions(run.trace, got)
    assert d.first is None and d.identical == d.real > 0
    real, sim = completion_times(run.trace), completion_times(got)
    assert real.keys() == sim.keys()
    assert all(abs(real[t] - sim[t]) <= 1e-6 * max(1.0, real[t]) for t in real)


def replay_run_with(run, controller, cost):
    """replay_run's loop with a given Controller (the property test builds no config file)."""
    from altosim.fidelity import ReportedCurve, job_curves, log_order

    curves = job_curves(run)
    total = {j.job_id: t.total_steps(j) for t in run.tasks for j in t.jobs}
    res = runtime_sim(run.tasks, controller, lambda job: ReportedCurve(curves[job.job_id], total[job.job_id]),
                      log_order(run), cost=cost)
    return [x for rec in res.log for x in (rec["event"], *rec["actions"])]


def test_interior_rows_are_interpolated_exactly_by_the_profile_model():
    prof = _profile()  # adapters 1,2,4,8 x rank 8,16 x batch 1,2,4, step = the analytic model's
    inner = interior(prof)
    assert [(prof.rows[i].adapters, prof.rows[i].per_adapter_batch) for i in inner] == [(2, 2)] * 2 + [(4, 2)] * 2
    e = step_time_errors(prof, cost_predictor, 2, inner)[0]  # multilinear data, multilinear interpolation
    assert e["points"] == 2 and e["median_rel_err"] < 1e-9 and e["extrapolated"] == 0
    edges = step_time_errors(prof, cost_predictor, 4)[0]  # every 4th row: some at the grid's edge
    assert edges["extrapolated"] > 0 and edges["p90_rel_err"] > 0.05


@pytest.mark.parametrize("batches, step", [((1, 2, 4, 8), 4), ((1,), 3)])  # 3: no report shares that step
def test_failed_job_is_replayed_at_its_step(tmp_path, batches, step):
    from altosim.fidelity import failure_steps
    from altosim.policy.controller import Controller, ControllerConfig
    from tests.sim.toy import toy_task

    tasks = [toy_task("t0", 6, 1, 0.0, 200, batches=batches)]
    make = lambda: Controller(ControllerConfig(num_gpus=1, early_exit="none", inter_task="fifo"),  # noqa: E731
                              duration_for=lambda t: COST.worst_case_duration(t), memory_for=COST.memory_model)
    fail = {"t0/j000": (step, "non-finite loss")}
    res = runtime_sim(tasks, make(), toy_curve, LEGACY_ORDER, failures=fail)
    flat = [x for rec in res.log for x in (rec["event"], *rec["actions"])]
    assert [x["kind"] for x in flat].count("job_failed") == 1
    assert any(x["kind"] == "stop" and x["reason"] == "failed" for x in flat)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [{"meta": {}}, *flat]))
    run = read_run(tmp_path)
    assert failure_steps(run) == fail
    curves = job_curves(run)
    total = {j.job_id: tasks[0].total_steps(j) for j in tasks[0].jobs}
    got = runtime_sim(run.tasks, make(), lambda job: ReportedCurve(curves[job.job_id], total[job.job_id]),
                      LEGACY_ORDER, failures=failure_steps(run), cost=MeasuredCost(measured_step_times(run)))
    again = [x for rec in got.log for x in (rec["event"], *rec["actions"])]
    d = compare_decisions(run.trace, again)
    assert d.first is None and d.identical == d.real
    real = completion_times(run.trace)["t0"]  # the span around a failure mixes two groups: close, not exact
    assert abs(completion_times(again)["t0"] - real) < 0.01 * real


def test_new_step_shapes_are_charged_from_the_profiles_first_steps(tmp_path):
    """A profile that kept its first steps makes the model replay pay each new step shape once
    (Triton compiles and autotuning in the runtime); one without them charges nothing."""
    from altosim.cost import new_shape_cost
    from altosim.policy.types import JobSpec, TaskSpec

    plain = _profile()
    firsts = plain.model_copy(update={"rows": [r.model_copy(update={"first_step_ms": r.step_ms + 2000.0})
                                               for r in plain.rows]})
    assert new_shape_cost(plain) is None
    shapes = new_shape_cost(firsts)
    assert shapes.per_model == {"llama-3.2-1b": pytest.approx(2.0)}
    jobs = [JobSpec(f"t/j{i}", "t", 1e-4, 8, 4) for i in range(3)]
    task = TaskSpec("t", 0.0, "llama-3.2-1b", "toy", 1, tuple(jobs), 400, seq_len=256)
    assert shapes.before_steps(task, jobs) == pytest.approx(2.0)  # 12 samples a step: bucket 16, new
    assert shapes.before_steps(task, jobs[:2]) == pytest.approx(2.0)  # 8 samples: bucket 8, new
    assert shapes.before_steps(task, jobs) == shapes.before_steps(task, jobs[:2]) == 0.0  # both seen
    other = TaskSpec("u", 0.0, "smollm2-135m", "toy", 1, tuple(jobs), 400, seq_len=256)
    assert shapes.before_steps(other, jobs) == 0.0  # no first steps for that model

    run = synthetic_run(tmp_path)
    for name, prof in (("plain", plain), ("firsts", firsts)):
        (tmp_path / f"{name}.json").write_text(prof.model_dump_json())
    got = {}
    for name in ("plain", "firsts"):
        from altosim.cost import read_profile
        rows = _rows(check_fidelity(tmp_path / name, run_dir=run, profile=read_profile(tmp_path / f"{name}.json"),
                                    modes=("model",)).files[0])
        got[name] = float(rows["model.makespan_sim_s"]["value"])
        assert rows["model.decisions_identical"]["pass"] == "True"
    extra = got["firsts"] - got["plain"]
    assert extra >= 2.0 - 1e-6 and abs(extra / 2.0 - round(extra / 2.0)) < 1e-6  # whole new shapes


def test_action_costs_and_measured_evaluations_are_charged_and_broken_down(tmp_path):
    """A profile with action overheads charges each start, admit, stop, snapshot and finish (the
    runtime runs them inline, on one host thread); one with eval_ms prices validation from it
    instead of a third of a step; the replay reports its charged seconds beside the run's phases."""
    from altosim.cost import HostOverheads
    from altosim.fidelity import replay_run
    from altosim.schemas.cost import ActionCosts

    costs = ActionCosts(start_task_ms=1500.0, admit_ms=40.0, snapshot_ms=10.0, stop_ms=20.0, finish_task_ms=300.0)
    run = synthetic_run(tmp_path, val_rows=32)
    (run / "run_args.json").write_text(json.dumps({"n_val": 32}))
    cfg = load_config(run / "config.json")
    rr = read_run(run)
    base_charged, with_charged = {}, {}
    plain = completion_times(replay_run(rr, cfg, COST, charged=base_charged))
    over = HostOverheads({"llama-3.2-1b": costs})
    slow = completion_times(replay_run(rr, cfg, COST, overheads=over, charged=with_charged))
    tasks, jobs = len(rr.tasks), sum(len(t.jobs) for t in rr.tasks)
    assert with_charged["start_task"] == pytest.approx(1.5 * tasks)
    assert with_charged["admit"] == pytest.approx(0.04 * jobs)  # no job resumes under fifo + alto
    assert with_charged["finish_task"] == pytest.approx(0.3 * tasks)
    assert with_charged["snapshot"] > 0 and with_charged["snapshot"] / 0.01 == pytest.approx(
        round(with_charged["snapshot"] / 0.01))  # whole snapshots
    finished = sum(1 for x in rr.trace if x["kind"] == "job_finished")
    assert finished > 0 and with_charged["job_finished"] == pytest.approx(0.02 * finished)  # freed as a stop frees
    assert "start_task" not in base_charged and base_charged["step"] > 0
    extra = max(slow.values()) - max(plain.values())
    actions = sum(v for k, v in with_charged.items() if k not in ("step", "validate", "new_shape"))
    # everything but the last task's finish (and its stops after the last step) lands before the end
    assert actions - 0.3 - 0.02 * jobs - 1e-6 <= extra <= actions + 1e-6

    prof = _profile()
    prof = prof.model_copy(update={"overheads": {"llama-3.2-1b": costs}, "rows": [
        r.model_copy(update={"eval_ms": r.step_ms / 2}) for r in prof.rows]})
    (run / "summary.csv").write_text("backbone,wall_s,step_s,validate_s,policy_s,start_task_s\nx,9,5,2,1,0.5\n")
    rows = _rows(check_fidelity(tmp_path / "o", run_dir=run, profile=prof, modes=("model",), method="interp").files[0])
    assert rows["model.eval_cost"]["value"] == "measured (interp)"
    assert rows["model.action_costs"]["value"] == "llama-3.2-1b"
    assert float(rows["model.phase_s[start_task]"]["value"]) == pytest.approx(1.5 * tasks)
    assert "real 0.5 s" in rows["model.phase_s[start_task]"]["note"]
    assert "not modelled" in rows["model.phase_s[policy]"]["note"]
    assert float(rows["model.phase_s[validate]"]["value"]) > 0
    # measured evaluations at half a step cost 1.5x the "third of a step" estimate
    third = _rows(check_fidelity(tmp_path / "p", run_dir=run, modes=("model",), method="interp",
                                 profile=_profile().model_copy(update={"overheads": {"llama-3.2-1b": costs}})).files[0])
    assert third["model.eval_cost"]["value"] == "a third of a step"
    assert float(rows["model.phase_s[validate]"]["value"]) == pytest.approx(
        1.5 * float(third["model.phase_s[validate]"]["value"]), rel=0.02)


def test_a_fresh_process_pays_the_profiles_first_steps_in_order(tmp_path):
    """The k-th new step shape of a replay costs the profile's k-th point's first-step extra (the
    profiler is one fresh process meeting new shapes in turn: cold compiles first), then the median."""
    from altosim.cost import new_shape_cost
    from altosim.policy.types import JobSpec, TaskSpec

    plain = _profile()
    extras = [20000.0, 8000.0] + [300.0] * (len(plain.rows) - 2)
    prof = plain.model_copy(update={"rows": [r.model_copy(update={"first_step_ms": r.step_ms + e})
                                             for r, e in zip(plain.rows, extras)]})
    shapes = new_shape_cost(prof)
    assert shapes.curve["llama-3.2-1b"][:3] == pytest.approx([20.0, 8.0, 0.3])
    jobs = [JobSpec(f"t/j{i}", "t", 1e-4, 8, b) for i, b in enumerate((1, 2, 4, 8, 16, 32, 64, 128))]
    task = TaskSpec("t", 0.0, "llama-3.2-1b", "toy", 1, tuple(jobs), 400, seq_len=256)
    got = [shapes.before_steps(task, jobs[i:i + 1]) for i in range(len(jobs))]  # each a new bucket
    assert got[:3] == pytest.approx([20.0, 8.0, 0.3]) and got[-1] == pytest.approx(0.3)
    assert shapes.before_steps(task, jobs[:1]) == 0.0  # seen
    longer = plain.model_copy(update={"rows": prof.rows[:2]})  # fewer points than new shapes: the median after
    s2 = new_shape_cost(longer)
    assert [s2.before_steps(task, jobs[i:i + 1]) for i in range(3)] == pytest.approx([20.0, 8.0, 14.0])


def test_auto_picks_the_profile_reading_with_the_lower_held_out_error(tmp_path):
    """`auto` reads the profile the way that predicts its own held-out rows better (never judged
    on the run being checked); the choice and both errors are in the report."""
    from altosim.cost import best_method

    errs = {"interp": [{"model": "smollm2-135m", "median_rel_err": 0.18}, {"model": "other", "median_rel_err": 0.01}],
            "hostgpu": [{"model": "smollm2-135m", "median_rel_err": 0.06}, {"model": "other", "median_rel_err": 0.5}]}
    assert best_method(errs, {"smollm2-135m"})[0] == "hostgpu"
    assert best_method(errs, {"other"})[0] == "interp"
    assert best_method(errs, {"nothing"})[0] == "interp"
    run = synthetic_run(tmp_path)
    rows = _rows(check_fidelity(tmp_path / "o", run_dir=run, profile=_profile(), modes=("model",)).files[0])
    assert rows["model.profile_method"]["value"] in ("interp", "hostgpu")
    assert "held-out median error" in rows["model.profile_method"]["note"]
    forced = _rows(check_fidelity(tmp_path / "p", run_dir=run, profile=_profile(), modes=("model",),
                                  method="hostgpu").files[0])
    assert forced["model.profile_method"]["value"] == "hostgpu"
    with pytest.raises(InputError, match="profile-method"):
        check_fidelity(tmp_path / "q", run_dir=run, profile=_profile(), method="spline")


def test_validation_is_priced_at_the_shape_the_profile_timed_it_and_new_eval_shapes_cost_once():
    from altosim.cost import eval_profile, new_shape_cost
    from altosim.policy.types import JobSpec, TaskSpec

    plain = _profile()
    prof = plain.model_copy(update={"rows": [r.model_copy(update={"val_ms": 50.0 + r.adapters,
                                                                  "first_val_ms": 1050.0 + r.adapters})
                                             for r in plain.rows]})
    ev = eval_profile(prof)
    assert {(r.adapters, r.per_adapter_batch) for r in ev.rows} == {(n, 16) for n in (1, 2, 4, 8)}
    firsts = [r for r in ev.rows if r.first_step_ms is not None]  # one per evaluation shape, not per point
    assert len(firsts) == len({(r.adapters, r.mean_rank, r.seq_len) for r in ev.rows}) == 8
    assert all(r.first_step_ms - r.step_ms == pytest.approx(1000.0) for r in firsts)
    assert eval_profile(plain) is None
    older = plain.model_copy(update={"rows": [r.model_copy(update={"eval_ms": 7.0}) for r in plain.rows]})
    assert {r.step_ms for r in eval_profile(older).rows} == {7.0}  # the session-6 column still reads
    cost = ValidationCost(cost_model_for("H100", profile=ev), 32, forward_fraction=1.0, shapes=new_shape_cost(ev))
    jobs = [JobSpec(f"t/j{i}", "t", 1e-4, 8, 4) for i in range(4)]
    task = TaskSpec("t", 0.0, "llama-3.2-1b", "toy", 1, tuple(jobs), 400, seq_len=256)
    first, again = cost(task, jobs), cost(task, jobs)
    assert again == pytest.approx(2 * 0.054)  # two 16-row batches of one 4-adapter forward each
    assert first - again == pytest.approx(1.0)  # the new evaluation shape, once


def test_a_committed_run_from_before_the_contract_replays_in_its_legacy_order():
    """session 7's H200 run (no `event_order` in its header: the trainer's slot order) replays with
    every decision identical in the order it was logged in; fed in the contract's order, its
    same-step reports come in another order and a decision moves (what `log_order` guards)."""
    from altosim.fidelity import log_order, replay_run, run_config_for

    run = read_run(Path(__file__).parents[2] / "results/device_h200/session7/python_docs_ee")
    assert "event_order" not in run.meta and log_order(run) == LEGACY_ORDER
    cfg, cost = run_config_for(run.folder), MeasuredCost(measured_step_times(run))
    d = compare_decisions(run.trace, replay_run(run, cfg, cost))
    assert d.first is None and d.identical == d.real == 275
    run.meta["event_order"] = EVENT_ORDER
    assert compare_decisions(run.trace, replay_run(run, cfg, cost)).first is not None
    run.meta["event_order"] = 2
    with pytest.raises(InputError, match="event_order"):
        replay_run(run, cfg, cost)
