"""Workloads a cluster operator has: rigid (fixed-duration) jobs beside tuning tasks, backbones
named by shape or by a Hugging Face config.json, and their bad inputs as one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim import traces_io as tio
from altosim.cli import main
from altosim.cost import MODELS, cost_model_for
from altosim.errors import InputError
from altosim.importers import import_philly
from altosim.schemas import RunConfig, SearchSpace, TaskRecord, WorkloadTrace, config_from_dict
from altosim.schemas.model_shape import ShapeSpec, read_hf_config
from altosim.simulate import load_inputs, simulate
from altosim.synthetic import SyntheticSpec, generate_loss_set
from altosim.task_costs import workload_shapes

SPACE = SearchSpace(lr=[1e-4, 3e-4], rank=[16], batch_size=[4, 8])
LLAMA_1B = {"layers": 16, "hidden": 2048, "intermediate": 8192, "heads": 32, "kv_heads": 8, "vocab": 128256}
HF_1B = {"num_hidden_layers": 16, "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True}


def tuning(tid: str, model: str = "Llama-3.2-1B", gpus: int = 1, arrival: float = 0.0, **kw) -> TaskRecord:
    return TaskRecord(id=tid, arrival=arrival, model=model, dataset="gsm8k", gpus=gpus, search_space=SPACE,
                      samples_per_job=96, loss_trace="syn", **kw)


def rigid(tid: str, duration: float, gpus: int, arrival: float = 0.0) -> TaskRecord:
    return TaskRecord(id=tid, arrival=arrival, model="job", dataset="trace", gpus=gpus, duration_s=duration, rigid=True)


@pytest.fixture(scope="module")
def loss_sets():
    ts = generate_loss_set(SyntheticSpec(model="Llama-3.2-1B", dataset="gsm8k", samples_per_job=96,
                                         lrs=(1e-4, 3e-4), ranks=(16,), batch_sizes=(4, 8), evals=20, name="syn"))
    return {"syn": ts}


def run(tasks: list[TaskRecord], loss_sets, gpus: int = 4, inter: str = "fifo", wl_file: str = "<workload>",
        early_exit: str = "alto"):
    cfg = config_from_dict({"cluster": {"gpus": gpus}, "policy": {"inter_task": inter, "early_exit": early_exit}})
    wl = WorkloadTrace(name="mix", synthetic=True, tasks=tasks)
    if wl_file != "<workload>":
        cfg = cfg.model_copy(update={"workload": wl_file})
    return simulate(cfg, load_inputs(cfg, workload=wl, loss_sets=loss_sets), record_log=True)


# ------------------------------------------------------------------ schema


def test_rigid_needs_duration_and_has_nothing_to_tune():
    with pytest.raises(ValueError, match="duration_s"):
        TaskRecord(id="r", arrival=0, model="m", dataset="d", gpus=1, rigid=True)
    with pytest.raises(ValueError, match="search_space"):
        TaskRecord(id="r", arrival=0, model="m", dataset="d", gpus=1, rigid=True, duration_s=5, search_space=SPACE)
    with pytest.raises(ValueError, match="search_space"):
        TaskRecord(id="t", arrival=0, model="m", dataset="d", gpus=1, samples_per_job=8)
    assert tuning("t").loss_trace == "syn" and TaskRecord(
        id="t", arrival=0, model="m", dataset="d", gpus=1, samples_per_job=8, search_space=SPACE).loss_trace == "m__d"
    spec = rigid("r", 7.0, 3).to_task_spec()
    assert spec.rigid and len(spec.jobs) == 1 and spec.gpus == 3


shapes = st.one_of(st.none(), st.just("cfg/config.json"), st.builds(
    lambda layers, heads, kv, vocab, tied: ShapeSpec(layers=layers, hidden=64 * heads, intermediate=256, heads=heads,
                                                     kv_heads=kv, vocab=vocab, tied_embeddings=tied),
    st.integers(1, 96), st.sampled_from([8, 16, 32]), st.sampled_from([1, 2, 4, 8]), st.integers(1, 10**6),
    st.booleans()))


@settings(max_examples=30, deadline=None)
@given(tasks=st.lists(st.tuples(st.booleans(), st.floats(1, 1e6), st.integers(1, 64), st.floats(0, 1e5), shapes),
                      min_size=1, max_size=6),
       csv=st.booleans())
def test_mixed_workload_round_trips(tmp_path_factory, tasks, csv):
    recs = [rigid(f"r{i}", d, g, a) if is_rigid else tuning(f"t{i}", gpus=g, arrival=a, model_shape=shape)
            for i, (is_rigid, d, g, a, shape) in enumerate(tasks)]
    wl = WorkloadTrace(name="mix", synthetic=True, tasks=recs)
    p = tmp_path_factory.mktemp("wl") / ("w.csv" if csv else "w.json")
    tio.write_workload(wl, p)
    assert tio.read_workload(p).tasks == wl.tasks


@settings(max_examples=60, deadline=None)
@given(layers=st.integers(1, 128), head_dim=st.sampled_from([32, 64, 128]), heads=st.integers(1, 64),
       group=st.integers(1, 8), inter=st.integers(1, 50_000), vocab=st.integers(1, 300_000), tied=st.booleans())
def test_shape_spec_matches_hf_config(tmp_path_factory, layers, head_dim, heads, group, inter, vocab, tied):
    """A shape and the config.json naming the same numbers give the same shape (and params)."""
    heads *= group  # kv_heads divides heads
    spec = ShapeSpec(layers=layers, hidden=heads * head_dim, intermediate=inter, heads=heads, kv_heads=group,
                     vocab=vocab, tied_embeddings=tied)
    p = tmp_path_factory.mktemp("hf") / "config.json"
    p.write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": heads * head_dim, "intermediate_size": inter,
                             "num_attention_heads": heads, "num_key_value_heads": group, "vocab_size": vocab,
                             "tie_word_embeddings": tied, "model_type": "llama"}))
    assert read_hf_config(p) == spec
    assert spec.kv_dim == group * head_dim and spec.params > layers * 3 * spec.hidden * inter


@settings(max_examples=40, deadline=None)
@given(hidden=st.integers(2, 4096), heads=st.integers(2, 64), kv=st.integers(1, 64))
def test_bad_head_counts_are_rejected(hidden, heads, kv):
    ok = hidden % heads == 0 and kv <= heads and heads % kv == 0
    try:
        ShapeSpec(layers=2, hidden=hidden, intermediate=8, heads=heads, kv_heads=kv, vocab=10)
    except ValueError as e:
        assert not ok and ("heads" in str(e))
    else:
        assert ok


# ------------------------------------------------------------------ simulation


@pytest.mark.parametrize("inter", ["fifo", "sjf", "cpsat"])
def test_rigid_and_tuning_share_the_cluster(loss_sets, inter):
    tasks = [tuning("t1"), tuning("t2", gpus=2), rigid("r1", 500.0, 4, arrival=1.0), rigid("r2", 120.0, 1),
             tuning("t3", arrival=2.0)]
    res = run(tasks, loss_sets, gpus=4, inter=inter).result
    for t in ("r1", "r2"):  # held for exactly its duration, on its GPU count, and never cut
        o = res.tasks[t]
        assert math.isclose(o.finish - o.start, {"r1": 500.0, "r2": 120.0}[t]) and len(o.gpu_ids) == o.gpus
        assert res.jobs[f"{t}/run"].status == "finished"
    spans = [(o.start, o.finish, set(o.gpu_ids)) for o in res.tasks.values()]
    for i, (s1, e1, g1) in enumerate(spans):  # no GPU held by two tasks at once
        assert all(not (g1 & g2) or e1 <= s2 or e2 <= s1 for s2, e2, g2 in spans[i + 1:])
    assert res.samples_full == 3 * 4 * 96  # rigid tasks train nothing


def test_rigid_outputs_say_so(loss_sets):
    out = run([tuning("t1"), rigid("r1", 300.0, 2)], loss_sets, gpus=2)
    df = out.tasks_df.set_index("task")
    assert df.loc["r1", "kind"] == "rigid" and df.loc["t1", "kind"] == "tuning"
    assert df.loc["r1", "cost_source"] == "duration_s" and df.loc["r1", "configs"] == 0
    assert out.summary["rigid_tasks"] == 1
    assert math.isclose(out.summary["mean_jct_rigid_h"], df.loc["r1", "jct_s"] / 3600)
    arrived = [r["event"]["task"] for r in out.result.log if r["event"]["kind"] == "task_arrived"]
    assert {t["task_id"]: t.get("rigid", False) for t in arrived} == {"t1": False, "r1": True}
    assert all("rigid" not in t for t in arrived if t["task_id"] == "t1")  # tuning logs read as before


def test_model_by_shape_and_by_config_json(loss_sets, tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(HF_1B))
    big = {**LLAMA_1B, "layers": 32}
    tasks = [tuning("named"), tuning("shaped", model="Mine-1B", model_shape=LLAMA_1B),
             tuning("bigger", model="Mine-2B", model_shape=big),
             tuning("hf", model="Hf-1B", model_shape="hf"), tuning("hf2", model="Hf-1B", model_shape="hf/config.json")]
    out = run(tasks, loss_sets, gpus=5, early_exit="none", wl_file=str(tmp_path / "wl.json"))
    df = out.tasks_df.set_index("task")
    assert list(df["cost_source"]) == ["analytic", "shape", "shape", "config.json", "config.json"]
    dur = out.meta["durations"]
    assert dur["shaped"] == pytest.approx(dur["named"], rel=0.01)  # the same shape as the table's entry
    assert dur["hf"] == pytest.approx(dur["shaped"]) and dur["bigger"] > 1.5 * dur["shaped"]


def test_given_shape_beats_the_table_and_a_profile_beats_both():
    cm = cost_model_for("H100")
    from altosim.cost import shape_from_spec

    small = shape_from_spec("llama-3.1-8b", ShapeSpec(**LLAMA_1B))
    priced = cm.with_shapes({"Llama-3.1-8B": small}, {"Llama-3.1-8B": "shape"})
    t = tuning("t", model="Llama-3.1-8B").to_task_spec()
    assert priced.step_time(t, t.jobs) < cm.step_time(t, t.jobs) and priced.cost_source(t) == "shape"
    assert cm.cost_source(t) == "analytic" and MODELS["llama-3.1-8b"].layers == 32


def test_the_operator_example_resolves_its_shapes():
    from altosim.run_inputs import load_run_inputs
    from altosim.schemas import load_config

    root = Path(__file__).resolve().parents[1] / "traces" / "examples"
    ri = load_run_inputs(load_config(root / "operator.yaml"))
    shapes, sources = workload_shapes(ri.workload, ri.workload_file)
    assert sources == {"mistral-7b-v0.1": "shape", "tiny-llama": "config.json"}
    assert shapes["tiny-llama"].hidden == 64 and shapes["mistral-7b-v0.1"].params == pytest.approx(7.24e9, rel=0.01)
    assert sum(t.rigid for t in ri.workload.tasks) == 3


def test_one_name_two_shapes_is_an_error():
    wl = WorkloadTrace(name="w", synthetic=True, tasks=[tuning("a", model="M", model_shape=LLAMA_1B),
                                                         tuning("b", model="m", model_shape={**LLAMA_1B, "layers": 2})])
    with pytest.raises(InputError, match=r"tasks\[1\].model_shape"):
        workload_shapes(wl, "w.json")


# ------------------------------------------------------------------ CLI


def _cli(tmp_path: Path, tasks: list[dict], *argv: str) -> tuple[int, str, Path]:
    ts = generate_loss_set(SyntheticSpec(model="Llama-3.2-1B", dataset="gsm8k", samples_per_job=96,
                                         lrs=(1e-4,), ranks=(16,), batch_sizes=(8,), evals=10, name="syn"))
    tio.write_loss_traces(ts, tmp_path / "loss" / "syn.csv")
    (tmp_path / "wl.json").write_text(json.dumps({"name": "w", "synthetic": True, "tasks": tasks}))
    (tmp_path / "run.yaml").write_text("workload: wl.json\nloss_traces: loss\ncluster: {gpus: 4}\n"
                                       "policy: {inter_task: fifo}\n")
    out = tmp_path / "out"
    return main(["simulate", str(tmp_path / "run.yaml"), "--out", str(out), "-q", *argv]), str(tmp_path / "wl.json"), out


TASK = {"id": "t", "arrival": 0, "model": "Llama-3.2-1B", "dataset": "gsm8k", "gpus": 1, "loss_trace": "syn",
        "samples_per_job": 96, "search_space": {"lr": [1e-4], "rank": [16], "batch_size": [8]}}


def test_cli_simulates_a_mix(tmp_path, capsys):
    rc, _, out = _cli(tmp_path, [TASK, {"id": "r", "arrival": 0, "model": "x", "dataset": "y", "gpus": 4,
                                        "rigid": True, "duration_s": 60}])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out / "tasks.csv").set_index("task")
    assert df.loc["r", "kind"] == "rigid" and (out / "gantt.png").exists()


@pytest.mark.parametrize("change, where", [
    ({"rigid": True}, "duration_s"),  # rigid without a duration (it also has a search space: first error)
    ({"model": "Nobody-9B"}, "model"),  # unknown name, no shape
    ({"model": "Mine", "model_shape": {**LLAMA_1B, "heads": 3}}, "heads"),
    ({"model": "Mine", "model_shape": {**LLAMA_1B, "layers": 0}}, "layers"),
    ({"model": "Mine", "model_shape": "nowhere/config.json"}, "config.json: <file>: no such file"),
    ({"model": "Mine", "model_shape": "bad.json"}, "bad.json: line 1: <json>"),
    ({"model": "Mine", "model_shape": "partial.json"}, "partial.json: intermediate_size: missing"),
    ({"model": "Mine", "model_shape": "odd.json"}, "odd.json: num_attention_heads"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, change, where):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({k: v for k, v in HF_1B.items() if k != "intermediate_size"}))
    (tmp_path / "odd.json").write_text(json.dumps({**HF_1B, "num_attention_heads": 7}))
    if change.get("rigid"):
        change = {**change, "search_space": None, "samples_per_job": None, "loss_trace": None}
        task = {k: v for k, v in {**TASK, **change}.items() if v is not None}
    else:
        task = {**TASK, **change}
    rc, wl, out = _cli(tmp_path, [task])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("alto: error: ") and "\n" not in err and "Traceback" not in err, err
    assert where in err and not out.exists(), err


def test_import_trace_rigid_share(tmp_path, capsys, loss_sets):
    rows = [f"2017-10-01 00:{m:02d}:00,{60 + m},{1 + m % 4},0,c" for m in range(40)]
    trace = tmp_path / "p.csv"
    trace.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n" + "\n".join(rows) + "\n")
    plain = import_philly(trace, loss_sets=loss_sets, seed=4).workload
    half = import_philly(trace, loss_sets=loss_sets, seed=4, rigid_share=0.5).workload
    n = sum(t.rigid for t in half.tasks)
    assert 5 < n < 35 and half.meta["rigid"] == n
    for a, b in zip(plain.tasks, half.tasks):  # the tuning tasks left are the plain import's
        assert (b == a) if not b.rigid else (b.duration_s, b.gpus, b.arrival) == (a.duration_s, a.gpus, a.arrival)
    assert all(t.rigid for t in import_philly(trace, loss_sets=loss_sets, rigid_share=1).workload.tasks)
    out = tmp_path / "w.json"
    assert main(["import-trace", "philly", str(trace), "--out", str(out), "--rigid-share", "1"]) == 0
    assert "(40 rigid)" in capsys.readouterr().out and all(t.rigid for t in tio.read_workload(out).tasks)
    with pytest.raises(SystemExit, match="2"):
        main(["import-trace", "philly", str(trace), "--out", str(tmp_path / "x.json"), "--rigid-share", "2"])
    err = capsys.readouterr().err.strip()
    assert "rigid-share" in err and "\n" not in err and not (tmp_path / "x.json").exists()
