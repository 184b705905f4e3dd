"""Readers/writers: round trips, one-line errors with file/line/field, atomic writes, curve queries."""

from __future__ import annotations

import gzip
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import altosim.traces_io as tio
from altosim.cost import read_cost_profile, write_cost_profile
from altosim.errors import InputError
from altosim.policy.types import JobSpec
from altosim.run_inputs import load_run_inputs
from altosim.schemas import (
    CostProfile,
    CostRecord,
    LossCurve,
    LossTraceSet,
    RunConfig,
    SearchSpace,
    TaskRecord,
    WorkloadTrace,
    config_from_dict,
)


def workload(n: int = 3, **kw) -> WorkloadTrace:
    space = SearchSpace(lr=[1e-4, 3e-4], rank=[16], batch_size=[1, 2], alpha=[32.0], subset=[0, 3])
    tasks = [TaskRecord(id=f"t{i}", arrival=i * 1.5, model="Llama-3.2-1B", dataset="gsm8k", gpus=1 + i % 2,
                        search_space=space, samples_per_job=1000 + i, eval_every_samples=None if i else 10,
                        duration_s=None if i % 2 else 3600.25 + i)
             for i in range(n)]
    return WorkloadTrace(name="w", description="d, with comma", synthetic=True, source="test",
                         meta={"k": [1, 2], "s": "x"}, tasks=tasks, **kw)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_workload_round_trip(tmp_path, suffix):
    w = workload()
    p = tmp_path / f"w{suffix}"
    tio.write_workload(w, p)
    assert tio.read_workload(p) == w
    assert [t.to_task_spec() for t in tio.read_workload(p).tasks] == w.to_task_specs()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e7, allow_nan=False), st.integers(1, 64), st.integers(1, 10**6),
                          st.one_of(st.none(), st.floats(0.001, 1e7, allow_nan=False))), min_size=0, max_size=6),
       st.sampled_from([".json", ".csv"]))
def test_workload_round_trip_property(tmp_path_factory, rows, suffix):
    space = SearchSpace(lr=[2e-4], rank=[8, 16], batch_size=[4])
    tasks = [TaskRecord(id=f"x{i}", arrival=a, model="m", dataset="d", gpus=g, search_space=space,
                        samples_per_job=s, duration_s=d) for i, (a, g, s, d) in enumerate(rows)]
    w = WorkloadTrace(name="p", synthetic=False, tasks=tasks)
    p = tmp_path_factory.mktemp("w") / f"w{suffix}"
    tio.write_workload(w, p)
    assert tio.read_workload(p) == w


def test_workload_csv_errors_name_line_and_field(tmp_path):
    p = tmp_path / "w.csv"
    tio.write_workload(workload(), p)
    lines = p.read_text().splitlines()
    assert lines[0].startswith("# alto-workload ") and lines[1].startswith("id,arrival")
    lines[3] = lines[3].replace(",2,1001,", ",-2,1001,", 1)  # t1 gpus (header = line 2, t1 = line 4)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as ei:
        tio.read_workload(p)
    assert (ei.value.file, ei.value.line, ei.value.field) == (str(p), 4, "gpus")
    assert str(ei.value).startswith(f"{p}: line 4: gpus: ")


def test_workload_csv_bad_json_and_missing_column(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("id,arrival,model,dataset,gpus,samples_per_job,search_space\na,0,m,d,1,10,{not json\n")
    with pytest.raises(InputError) as ei:
        tio.read_workload(p)
    assert (ei.value.line, ei.value.field) == (2, "search_space")
    p.write_text("id,arrival,model,dataset,samples_per_job,search_space\n")
    with pytest.raises(InputError, match="gpus: missing column"):
        tio.read_workload(p)


def test_workload_json_errors(tmp_path):
    p = tmp_path / "w.json"
    p.write_text('{"name": "w",\n "synthetic": true,\n "tasks": [\n')
    with pytest.raises(InputError) as ei:
        tio.read_workload(p)
    assert ei.value.field == "<json>" and ei.value.line is not None
    tio.write_workload(workload(), p)
    p.write_text(p.read_text().replace('"samples_per_job":1001', '"samples_per_job":"many"'))
    with pytest.raises(InputError, match=r"w.json: tasks\[1\].samples_per_job: "):
        tio.read_workload(p)
    with pytest.raises(InputError, match="no such file"):
        tio.read_workload(tmp_path / "none.json")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "w.json"
    tio.write_workload(workload(1), p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        tio.write_workload(workload(3), p)
    with pytest.raises(OSError):
        tio.write_workload(workload(3), tmp_path / "new.csv")
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.json"]


def test_atomic_write_of_pair_writes_none_when_one_fails(tmp_path):
    with pytest.raises(TypeError):
        tio.atomic_write([(tmp_path / "a.txt", "ok"), (tmp_path / "b.txt", 123)])  # type: ignore[list-item]
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------
# loss traces
# ------------------------------------------------------------------------------------------


def curve(lr=2e-4, rank=16, batch=2, n=40, diverge=False) -> LossCurve:
    samples = np.arange(1, n + 1) * 10.0
    train = 2.0 * np.exp(-samples / 200) + 0.5
    if diverge:
        train[-5:] = [5.0, 50.0, np.inf, np.nan, np.nan]
    val = np.where(np.arange(n) % 4 == 3, train * 1.05, np.nan)
    metric = np.where(np.isnan(val), np.nan, 1 - val / 3)
    return LossCurve(lr=lr, rank=rank, batch_size=batch, alpha=None, samples=samples, train=train,
                     val=val, metric=metric)


def loss_set() -> LossTraceSet:
    curves = [curve(lr, r, b, diverge=(lr == 5e-4 and b == 1)) for lr in (1e-5, 2e-4, 5e-4)
              for r in (16, 64) for b in (1, 8)]
    curves[1] = LossCurve(lr=1e-5, rank=16, batch_size=8, alpha=8.0, samples=curves[1].samples,
                          train=curves[1].train, val=curves[1].val, metric=None)
    return LossTraceSet(name="m__d", model="m", dataset="d", synthetic=True, source="unit test",
                        curves=curves, meta={"how": "hand-made", "created": "2026-01-01"})


@pytest.mark.parametrize("name", ["m__d.csv", "m__d.csv.gz"])
def test_loss_round_trip(tmp_path, name):
    s = loss_set()
    tio.write_loss_traces(s, tmp_path / name)
    assert (tmp_path / "m__d.meta.json").exists()
    r = tio.read_loss_traces(tmp_path / name)
    assert (r.name, r.model, r.dataset, r.synthetic, r.source) == ("m__d", "m", "d", True, "unit test")
    assert r.meta == s.meta
    assert len(r.curves) == len(s.curves)
    for a, b in zip(r.curves, s.curves):
        assert a.same_data(b, rtol=1e-4)
    assert np.isnan(r.curves[-4].train[-1]) and np.isinf(r.curves[-4].train[-3])  # divergence kept
    assert r.curves[1].metric is None and r.curves[1].alpha == 8.0
    assert set(tio.load_trace_dir(tmp_path)) == {"m__d"}


def test_gzip_output_is_deterministic(tmp_path):
    tio.write_loss_traces(loss_set(), tmp_path / "a.csv.gz")
    tio.write_loss_traces(loss_set(), tmp_path / "b.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.csv.gz").read_bytes()).decode() == tio.loss_traces_csv_text(loss_set())


def _write_loss_csv(tmp_path, text: str):
    p = tmp_path / "s.csv"
    p.write_text(text)
    (tmp_path / "s.meta.json").write_text('{"name": "s", "model": "m", "dataset": "d", "synthetic": true}')
    return p


HEAD = "lr,rank,batch_size,alpha,step,samples,train_loss,val_loss,metric\n"


@pytest.mark.parametrize("rows,line,field", [
    ("2e-4,16,1,,1,1,1.0,,\n2e-4,16,1,,2,1,0.9,,\n", 3, "samples"),      # samples not increasing
    ("2e-4,16,1,,1,1,1.0,,\n2e-4,16,1,,1,2,0.9,,\n", 3, "step"),         # step not increasing
    ("2e-4,16,1,,-1,1,1.0,,\n", 2, "step"),                               # negative step
    ("2e-4,16,1,,1,1,1.0,,\n2e-4,16,1.5,,2,2,0.9,,\n", 3, "batch_size"),  # non-integer
    ("2e-4,16,1,,1,1,1.0,,\nabc,16,1,,2,2,0.9,,\n", 3, "lr"),            # not a number
    ("2e-4,16,1,,1,1,1.0,,\n,16,1,,2,2,0.9,,\n", 3, "lr"),               # missing value
    ("2e-4,16,1,,1,1,1.0,,\n\n2e-4,16,1,,2,2,0.9,,\n", 3, "lr"),          # blank line
    ("2e-4,16,1,,1,1,1.0,oops,\n", 2, "val_loss"),
    ("0,16,1,,1,1,1.0,,\n", 2, "lr"),
    ("2e-4,16,1,,1,-4,1.0,,\n", 2, "samples"),
])
def test_loss_csv_errors(tmp_path, rows, line, field):
    p = _write_loss_csv(tmp_path, HEAD + rows)
    with pytest.raises(InputError) as ei:
        tio.read_loss_traces(p)
    assert (ei.value.file, ei.value.line, ei.value.field) == (str(p), line, field)


def test_loss_csv_missing_column_and_sidecar(tmp_path):
    p = _write_loss_csv(tmp_path, "lr,rank,batch_size,step,samples,train_loss\n2e-4,16,1,1,1,1.0\n")
    with pytest.raises(InputError, match="val_loss: missing column"):
        tio.read_loss_traces(p)
    (tmp_path / "s.meta.json").unlink()
    with pytest.raises(InputError, match="missing provenance sidecar"):
        tio.read_loss_traces(p)


def test_loss_csv_accepts_nan_and_inf_train(tmp_path):
    p = _write_loss_csv(tmp_path, HEAD + "2e-4,16,1,,1,1,1.0,1.1,\n2e-4,16,1,,2,2,inf,,\n2e-4,16,1,,3,3,nan,50,\n"
                        "1e-4,16,1,,1,1,1.0,,\n")
    s = tio.read_loss_traces(p)
    assert len(s.curves) == 2 and math.isnan(s.curves[0].train[2]) and s.curves[0].val_at(1.0) == 50


# ------------------------------------------------------------------------------------------
# curve queries
# ------------------------------------------------------------------------------------------


def _brute_mean(c: LossCurve, f0: float, f1: float) -> float:
    xs = np.linspace(f0, f1, 20001)
    return float(np.trapezoid([c.train_at(x) for x in xs], xs) / (f1 - f0))


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_train_mean_matches_numeric_integral(a, b):
    c = curve()
    f0, f1 = min(a, b), max(a, b)
    if f1 - f0 < 1e-3:
        f1 = min(1.0, f0 + 1e-3)
        f0 = f1 - 1e-3
    assert c.train_mean(f0, f1) == pytest.approx(_brute_mean(c, f0, f1), rel=1e-5)


def test_curve_queries():
    c = curve(diverge=True)
    x = c.samples / c.samples[-1]
    assert c.train_at(x[3]) == pytest.approx(c.train[3])
    assert c.train_mean(x[2], x[2]) == pytest.approx(c.train[2])
    assert c.train_mean(0.0, x[0]) == pytest.approx(c.train[0])  # constant before the first log
    assert math.isnan(c.train_mean(0.5, 1.0))  # diverged inside the interval
    assert math.isfinite(c.train_mean(0.1, 0.5))
    assert c.val_at(x[3]) == pytest.approx(c.val[3])
    assert c.val_at((x[3] + x[7]) / 2) == pytest.approx((c.val[3] + c.val[7]) / 2)
    assert c.metric_at(x[7]) == pytest.approx(c.metric[7])
    with pytest.raises(ValueError):
        c.train_mean(0.6, 0.5)
    with pytest.raises(ValueError):
        LossCurve(lr=1e-4, rank=1, batch_size=1, alpha=None, samples=[1, 1], train=[1, 1], val=[1, 1])


def test_curve_for_exact_then_nearest():
    s = loss_set()
    job = JobSpec(job_id="t/j0", task_id="t", lr=2e-4, rank=64, batch_size=8)
    assert s.curve_for(job).config == (2e-4, 64, 8)
    near = JobSpec(job_id="t/j1", task_id="t", lr=1.5e-4, rank=48, batch_size=6)
    assert s.curve_for(near).config == (2e-4, 64, 8)
    far_lr = JobSpec(job_id="t/j2", task_id="t", lr=3e-5, rank=16, batch_size=1)
    assert s.curve_for(far_lr).config == (1e-5, 16, 1)


def test_best_curve_ignores_diverged():
    s = loss_set()
    assert math.isfinite(s.best_curve().final_val())
    assert s.samples_per_job == 400


# ------------------------------------------------------------------------------------------
# cost profiles and run inputs
# ------------------------------------------------------------------------------------------


def test_cost_profile_round_trip_and_errors(tmp_path):
    rows = [CostRecord(model="m", gpu_type="H100", adapters=a, mean_rank=16.0, per_adapter_batch=2, seq_len=512,
                       parallel_degree=1, step_ms=10.0 * a, peak_mem_bytes=10**9 * a, note="n, with comma")
            for a in (1, 2, 4)]
    prof = CostProfile(rows=rows, device="NVIDIA H100 80GB HBM3", date="2026-11-23", synthetic=False, source="x")
    p = tmp_path / "cost.csv"
    write_cost_profile(prof, p)
    assert read_cost_profile(p) == prof
    p.write_text(p.read_text().replace(",20.0,", ",-1,"))
    with pytest.raises(InputError) as ei:
        read_cost_profile(p)
    assert (ei.value.line, ei.value.field) == (3, "step_ms")


def test_load_run_inputs_default_and_errors(tmp_path):
    ri = load_run_inputs(RunConfig())
    assert len(ri.workload.tasks) == 11 and set(ri.loss_sets) == {t.loss_trace for t in ri.workload.tasks}
    assert ri.cost_profile is None
    w = workload(2)
    tio.write_workload(w, tmp_path / "w.json")
    tio.write_loss_traces(loss_set(), tmp_path / "loss" / "m__d.csv")
    cfg = config_from_dict({"workload": "w.json", "loss_traces": "loss"}, str(tmp_path / "c.yaml"), tmp_path)
    with pytest.raises(InputError, match=r"tasks\[0\].loss_trace: task 't0': no loss-trace set"):
        load_run_inputs(cfg)
    small = config_from_dict({"workload": "w.json", "cluster": {"gpus": 1}}, "c.yaml", tmp_path)
    with pytest.raises(InputError, match=r"w.json: tasks\[1\].gpus: task 't1' needs 2 GPUs"):
        load_run_inputs(small)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.floats(0.01, 10)), min_size=1, max_size=30),
       st.floats(0, 1), st.floats(0, 1))
def test_train_mean_and_val_at_on_random_curves(points, a, b):
    samples = np.cumsum([p[0] for p in points]).astype(float)
    train = np.array([p[1] for p in points])
    val = np.where(np.arange(len(train)) % 3 == 0, train + 0.1, np.nan)
    c = LossCurve(lr=1e-4, rank=8, batch_size=1, alpha=None, samples=samples, train=train, val=val)
    f0, f1 = min(a, b), max(a, b)
    x = samples / samples[-1]
    if f1 - f0 > 1e-3:
        xs = np.linspace(f0, f1, 40001)
        brute = np.trapezoid(np.interp(xs, x, train), xs) / (f1 - f0)
        assert c.train_mean(f0, f1) == pytest.approx(brute, rel=1e-4)
    assert min(train) - 1e-9 <= c.train_mean(f0, f1) <= max(train) + 1e-9
    ev = ~np.isnan(val)
    assert c.val_at(f0) == pytest.approx(np.interp(f0, x[ev], val[ev]))
