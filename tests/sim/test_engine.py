"""Simulator + Controller invariants on generated workloads (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.cost import cost_model_for
from altosim.policy.controller import Controller, ControllerConfig
from altosim.replay import replay_records
from altosim.sim.engine import Simulator
from altosim.policy.types import to_dict
from tests.sim.toy import toy_curve, toy_task

COST = cost_model_for("H100")


def run(tasks, num_gpus=8, early_exit="alto", inter="fifo", batching=True, max_jobs=None):
    ctl = Controller(
        ControllerConfig(num_gpus=num_gpus, early_exit=early_exit, inter_task=inter, batching=batching,
                         max_jobs_per_group=max_jobs),
        duration_for=lambda t: COST.worst_case_duration(t, batching, max_jobs),
        memory_for=lambda t: COST.memory_model(t),
    )
    return Simulator(tasks, ctl, COST, toy_curve).run()


workloads = st.lists(
    st.tuples(st.integers(2, 10), st.sampled_from([1, 1, 2, 4]), st.floats(0, 500), st.integers(200, 1200)),
    min_size=1, max_size=6,
).map(lambda specs: [toy_task(f"t{i}", n, g, a, s) for i, (n, g, a, s) in enumerate(specs)])
policies = st.sampled_from(["alto", "none", "asha", "median"])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _intervals(res):
    return sorted(res.gantt, key=lambda r: (r[1], r[2]))


@SETTINGS
@given(workloads, policies, st.sampled_from(["fifo", "sjf", "cpsat"]), st.booleans(), st.sampled_from([None, 3]))
def test_no_gpu_double_booked_and_all_tasks_finish(tasks, ee, inter, batching, max_jobs):
    res = run(tasks, early_exit=ee, inter=inter, batching=batching, max_jobs=max_jobs)
    assert all(o.finish is not None and o.finish >= o.arrival for o in res.tasks.values())
    per_gpu: dict[int, list] = {}
    for task, gpu, start, end in _intervals(res):
        per_gpu.setdefault(gpu, []).append((start, end, task))
    for gpu, spans in per_gpu.items():
        assert 0 <= gpu < 8
        for (s0, e0, t0), (s1, e1, t1) in zip(spans, spans[1:]):
            assert e0 <= s1 + 1e-9, f"GPU {gpu} double-booked by {t0} and {t1}"
    for o in res.tasks.values():
        assert o.start is not None and o.start >= o.arrival - 1e-9


@SETTINGS
@given(workloads, policies, st.booleans())
def test_stopped_job_never_runs_again(tasks, ee, batching):
    res = run(tasks, early_exit=ee, batching=batching)
    ended: set[str] = set()
    for rec in res.log:
        ev = rec["event"]
        if ev["kind"] == "step_report":
            assert ev["job_id"] not in ended, f"{ev['job_id']} reported after it ended"
        if ev["kind"] == "job_finished":
            ended.add(ev["job_id"])
        for a in rec["actions"]:
            if a["kind"] == "admit":
                assert a["job_id"] not in ended, f"{a['job_id']} admitted after it ended"
            if a["kind"] == "stop":
                assert a["job_id"] not in ended, f"{a['job_id']} stopped twice"
                ended.add(a["job_id"])
    all_jobs = {j.job_id for t in tasks for j in t.jobs}
    assert ended == all_jobs  # every job ends exactly once


@SETTINGS
@given(workloads, policies)
def test_samples_accounting(tasks, ee):
    res = run(tasks, early_exit=ee)
    assert res.samples_trained == sum(j.samples for j in res.jobs.values())
    assert res.samples_trained <= res.samples_full
    if ee == "none":
        assert res.samples_trained >= res.samples_full  # every job ran all its steps
        assert all(j.status == "finished" for j in res.jobs.values())


@settings(max_examples=10, deadline=None)
@given(workloads, policies, st.sampled_from(["fifo", "cpsat"]))
def test_replay_reproduces_decisions(tasks, ee, inter):
    res = run(tasks, early_exit=ee, inter=inter)
    durations = {t.task_id: COST.worst_case_duration(t) for t in tasks}
    meta = {
        "controller": vars(ControllerConfig(num_gpus=8, early_exit=ee, inter_task=inter)),
        "durations": durations,
        "memory": {t.task_id: vars(COST.memory_model(t)) for t in tasks},
    }
    records = json.loads(json.dumps([{"meta": meta}, *res.log]))
    out = replay_records(records)
    assert out.events == len(res.log)
    assert out.identical, out.mismatches[:1]


def test_replay_detects_a_changed_decision():
    tasks = [toy_task("a", 8), toy_task("b", 8, arrival=10.0)]
    res = run(tasks)
    meta = {"controller": vars(ControllerConfig(num_gpus=8, inter_task="fifo")),
            "durations": {t.task_id: COST.worst_case_duration(t) for t in tasks},
            "memory": {t.task_id: vars(COST.memory_model(t)) for t in tasks}}
    records = json.loads(json.dumps([{"meta": meta}, *res.log]))
    i = next(i for i, r in enumerate(records[1:], 1) if any(a["kind"] == "stop" for a in r["actions"]))
    records[i]["actions"] = []
    assert not replay_records(records).identical


def test_early_exit_saves_samples_and_keeps_best():
    tasks = [toy_task("a", 24, samples=2000)]
    full = run(tasks, early_exit="none")
    alto = run(tasks, early_exit="alto")
    assert alto.samples_trained < 0.6 * full.samples_trained
    assert alto.tasks["a"].best_job == full.tasks["a"].best_job
    assert alto.makespan < full.makespan


def test_batching_beats_sequential():
    tasks = [toy_task("a", 16, samples=2000)]
    assert run(tasks, early_exit="none").makespan < run(tasks, early_exit="none", batching=False).makespan


def test_warmup_rotation_tries_every_config():
    """With room for 2 jobs at a time, all 12 configs still report before the cut."""
    tasks = [toy_task("a", 12, samples=4000)]
    res = run(tasks, max_jobs=2)
    reported = {r["event"]["job_id"] for r in res.log if r["event"]["kind"] == "step_report"}
    assert reported == {j.job_id for j in tasks[0].jobs}
    kinds = [a["kind"] for r in res.log for a in r["actions"]]
    assert "suspend" in kinds and any(
        a["kind"] == "admit" and a["resume"] for r in res.log for a in r["actions"])


def test_report_memo_changes_no_event(monkeypatch):
    """Tasks sharing curves and budgets repeat report queries, which the engine memoizes: the
    event log is the same with the memo emptied at every query (LOSS_MEMO_SIZE 1)."""
    import altosim.sim.engine as engine

    shared: dict[str, object] = {}

    def curve(job):  # one curve object per config index, shared by every task
        key = job.job_id.rsplit("/", 1)[1]
        return shared.setdefault(key, toy_curve(job))

    def log(memo_size):
        monkeypatch.setattr(engine, "LOSS_MEMO_SIZE", memo_size)
        tasks = [toy_task(f"t{i}", 8, 1, 40.0 * i, 800) for i in range(4)]
        ctl = Controller(ControllerConfig(num_gpus=2, early_exit="alto", inter_task="fifo"),
                         duration_for=lambda t: COST.worst_case_duration(t, True, None),
                         memory_for=lambda t: COST.memory_model(t))
        return json.dumps(Simulator(tasks, ctl, COST, curve).run().log)

    assert log(1 << 16) == log(1)
