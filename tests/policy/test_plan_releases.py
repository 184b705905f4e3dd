"""Offline planning with known future arrivals: CP-SAT with release times, in the planner and in a run."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.cli import main
from altosim.policy.inter import RunningTask, WaitingTask
from altosim.policy.inter.base import fifo_order, lpt_order, makespan_of, sjf_order
from altosim.policy.inter.cpsat import CpSatScheduler
from altosim.policy.inter.releases import release_schedule
from altosim.policy.inter.validate import validate_plan
from altosim.schemas import TaskRecord, WorkloadTrace, config_from_dict
from altosim.simulate import load_inputs, simulate
from tests.policy._cpsat import budget_of

task = st.tuples(st.integers(1, 4), st.sampled_from([50.0, 100.0, 300.0, 1000.0]), st.sampled_from([0.0, 10.0, 75.0, 400.0]))


@settings(max_examples=25, deadline=None)
@given(now=st.sampled_from([0.0, 5.0]), run=st.lists(st.floats(1, 500), max_size=2),
       tasks=st.lists(task, min_size=1, max_size=7))
def test_plan_honours_releases_and_beats_the_greedy_rules(now, run, tasks):
    num_gpus = 4
    running = [RunningTask(f"run{i}", (i,), r) for i, r in enumerate(run)]
    all_tasks = [WaitingTask(f"t{i}", g, d, a) for i, (g, d, a) in enumerate(tasks)]
    waiting = [w for w in all_tasks if w.arrival <= now]
    future = [w for w in all_tasks if w.arrival > now]
    plan = CpSatScheduler(time_limit_s=0.3).plan_with_releases(now, num_gpus, running, waiting, future)
    validate_plan(plan, now, num_gpus, running, all_tasks)  # every task once, capacity, no start before now
    starts = {a.task_id: a.start for a in plan.assignments}
    assert all(starts[w.task_id] >= w.arrival for w in future)
    for order in (fifo_order, sjf_order, lpt_order):  # never worse than a release-aware greedy rule
        greedy = release_schedule(now, num_gpus, running, order(all_tasks))
        assert plan.makespan <= makespan_of(now, running, all_tasks, greedy) + 1e-6
    assert plan.makespan >= plan.lower_bound - 1e-6


# an instance where the online planner, blind to arrivals, does worse (found by a seeded search)
TASKS = [(200.0, 1, 2000.0), (50.0, 1, 300.0), (50.0, 4, 1000.0), (0.0, 1, 2000.0), (10.0, 1, 300.0), (10.0, 1, 2000.0)]


def _workload() -> WorkloadTrace:
    return WorkloadTrace(name="w", synthetic=True, tasks=[
        TaskRecord(id=f"r{i}", arrival=a, model="x", dataset="y", gpus=g, rigid=True, duration_s=d)
        for i, (a, g, d) in enumerate(TASKS)])


def test_known_arrivals_shorten_the_makespan_and_replay(tmp_path, capsys):
    ms = {}
    for offline in (False, True):
        cfg = config_from_dict({"cluster": {"gpus": 4}, "policy": {"planner_sees_arrivals": offline,
                                "inter_task": {"name": "cpsat", "params": budget_of(0.5)}}})
        run = simulate(cfg, load_inputs(cfg, workload=_workload(), loss_sets={}), regret=False)
        ms[offline] = run.result.makespan
        assert all(o.start >= o.arrival for o in run.result.tasks.values())
    assert ms[True] < ms[False]
    (tmp_path / "wl.json").write_text(_workload().model_dump_json())
    (tmp_path / "run.yaml").write_text("workload: wl.json\ncluster: {gpus: 4}\n"
                                       f"policy: {{inter_task: {{name: cpsat, params: {json.dumps(budget_of(0.5))}}}}}\n")
    out = tmp_path / "out"
    assert main(["simulate", str(tmp_path / "run.yaml"), "--out", str(out), "-q", "--planner-sees-arrivals"]) == 0
    first = json.loads((out / "events.jsonl").read_text().splitlines()[1])
    assert first["event"]["kind"] == "tasks_announced" and len(first["event"]["tasks"]) == len(TASKS)
    capsys.readouterr()
    assert main(["replay", str(out / "events.jsonl")]) == 0
    assert "identical decisions" in capsys.readouterr().out


def test_only_cpsat_plans_known_arrivals(tmp_path, capsys):
    (tmp_path / "wl.json").write_text(_workload().model_dump_json())
    (tmp_path / "run.yaml").write_text("workload: wl.json\ncluster: {gpus: 4}\n"
                                       "policy: {inter_task: fifo, planner_sees_arrivals: true}\n")
    out = tmp_path / "out"
    assert main(["simulate", str(tmp_path / "run.yaml"), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.yaml" in err and "policy.planner_sees_arrivals" in err and "\n" not in err and not out.exists()
