"""Synthetic loss generator and the committed default workload."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter

import numpy as np
import pytest

from altosim import traces_io as tio
from altosim.policy.types import TaskSpec
from altosim.synthetic import SyntheticSpec, generate_loss_set
from altosim.workloads import (
    CREATED,
    LOSS_DIR,
    WORKLOAD_FILE,
    REAL_STANDIN,
    default_loss_dir,
    load_default_loss_sets,
    real_sets_in,
    default_workload_path,
    paper_loss_sets,
    paper_workload,
    repo_traces_dir,
)

SPEC = SyntheticSpec(model="Llama-3.2-1B", dataset="gsm8k", samples_per_job=2400, seed=1)


@pytest.fixture(scope="module")
def sets():
    return paper_loss_sets()


def test_deterministic_and_seeded():
    a, b = generate_loss_set(SPEC), generate_loss_set(SPEC)
    assert all(x.same_data(y) for x, y in zip(a.curves, b.curves))
    c = generate_loss_set(SyntheticSpec(**{**SPEC.__dict__, "seed": 2}))
    assert not all(x.same_data(y) for x, y in zip(a.curves, c.curves))


def test_marked_synthetic():
    s = generate_loss_set(SPEC, created="2026-01-01")
    assert s.synthetic and "synthetic" in s.name and "synthetic" in s.source
    assert s.meta["created"] == "2026-01-01" and "NOT measured" in s.meta["how"]


def test_eval_points_follow_task_rule_and_train_logged_more_often():
    s = generate_loss_set(SPEC)
    task = TaskSpec(task_id="t", arrival=0, model="m", dataset="d", gpus=1, jobs=(), samples_per_job=2400)
    for c in s.curves:
        assert c.samples[-1] == 2400
        evals = c.steps[~np.isnan(c.val)]
        assert 90 <= len(evals) <= 110
        assert all(task.is_eval_step(_job(c), int(st)) for st in evals)
        assert len(c.samples) >= 3 * len(evals) or c.batch_size >= 8


def _job(c):
    from altosim.policy.types import JobSpec
    return JobSpec(job_id="t/j", task_id="t", lr=c.lr, rank=c.rank, batch_size=c.batch_size)


def test_behaviours(sets):
    curves = [c for s in sets.values() for c in s.curves]
    by_lr = {lr: [c for c in curves if c.lr == lr] for lr in (1e-5, 2e-4)}
    # too low an lr converges slowly: by 25% progress it made a smaller share of its total drop
    def share(c):
        return (c.train_mean(0, 0.02) - c.train_mean(0.2, 0.3)) / (c.train_mean(0, 0.02) - c.train_mean(0.9, 1.0))
    assert np.nanmedian([share(c) for c in by_lr[1e-5]]) < 0.6 < np.nanmedian([share(c) for c in by_lr[2e-4]])
    # divergence exists, only at the higher learning rates, and some curves reach NaN
    diverged = [c for c in curves if not np.isfinite(c.train).all() or c.train[-1] > 2 * c.train[0]]
    assert diverged and all(c.lr >= 2e-4 for c in diverged)
    assert any(np.isnan(c.train).any() for c in diverged)
    # overfitting: val rises at the end while train keeps falling, for some configs
    ovf = [c for c in curves if c not in diverged and c.val_at(1.0) > 1.05 * c.best_val()
           and c.train_mean(0.9, 1.0) < c.train_mean(0.5, 0.6)]
    assert len(ovf) >= 20
    # noisier train loss at small batch (relative residual around a smooth fit)
    def rough(c):
        t = c.train[len(c.train) // 2:]
        return np.std(np.diff(t)) / np.mean(t)
    ok = [c for c in curves if c not in diverged]
    assert np.median([rough(c) for c in ok if c.batch_size == 1]) > np.median([rough(c) for c in ok if c.batch_size == 8])
    # within a task, the metric falls as val loss rises
    for s in sets.values():
        fine = [c for c in s.curves if c in ok]
        v = np.array([c.final_val() for c in fine])
        m = np.array([c.metric_at(1.0) for c in fine])
        assert np.corrcoef(v, m)[0, 1] < -0.8


@pytest.mark.parametrize("by", ["final", "min"])
def test_best_config_differs_between_tasks(sets, by):
    best = Counter(s.best_curve(by).config for s in sets.values())
    assert len(best) >= 4 and max(best.values()) <= len(sets) // 2


# ------------------------------------------------------------------------------------------
# default workload
# ------------------------------------------------------------------------------------------


def test_paper_workload_shape():
    w = paper_workload()
    assert w.synthetic and len(w.tasks) == 11
    assert {t.model: t.gpus for t in w.tasks} == {"Llama-3.2-1B": 1, "Llama-3.2-3B": 1, "Llama-3.1-8B": 2,
                                                  "Qwen2.5-14B": 4}
    assert all(len(t.search_space) == 60 and t.arrival == 0 for t in w.tasks)
    assert max(t.gpus for t in w.tasks) <= 8
    specs = w.to_task_specs()
    assert sum(len(s.jobs) for s in specs) == 660


def test_committed_files_equal_generator(sets):
    root = repo_traces_dir()
    assert (root / WORKLOAD_FILE).read_text() == tio.workload_json_text(paper_workload(real_sets_in(root)))
    files = sorted(p.name for p in (root / LOSS_DIR).iterdir())
    assert files == sorted([f"{n}.csv.gz" for n in sets] + [f"{n}.meta.json" for n in sets])
    for name, s in sets.items():
        assert gzip.decompress((root / LOSS_DIR / f"{name}.csv.gz").read_bytes()).decode() == tio.loss_traces_csv_text(s)
        meta = json.loads((root / LOSS_DIR / f"{name}.meta.json").read_text())
        assert meta == tio.loss_meta_dict(s) and meta["synthetic"] is True and meta["created"] == CREATED
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 8_000_000  # traces/ whole: 11 real grids, 6 datasets, the synthetic sets (5.7 MB on 2026-12-04)


def test_default_paths_point_at_repo_traces():
    assert default_workload_path() == repo_traces_dir() / WORKLOAD_FILE
    assert default_loss_dir() == repo_traces_dir() / LOSS_DIR


def test_default_workload_replays_the_committed_real_traces():
    """Tasks whose stand-in dataset has a measured trace replay it; the others stay synthetic;
    every name resolves among the default sets."""
    real = real_sets_in(repo_traces_dir())
    assert "SmolLM2-135M__arithmetic" in real
    wl = tio.read_workload(default_workload_path())
    sets = load_default_loss_sets()
    for t in wl.tasks:
        assert t.loss_trace in sets
        standin = f"SmolLM2-135M__{REAL_STANDIN[t.dataset]}"
        assert (t.loss_trace == standin) == (standin in real)
        assert sets[t.loss_trace].synthetic == (standin not in real)
    assert paper_workload(()).tasks[0].loss_trace.endswith("__synthetic")


def test_default_traces_generated_into_cache_when_repo_files_missing(tmp_path, monkeypatch, sets):
    import altosim.workloads as wl

    monkeypatch.setattr(wl, "repo_traces_dir", lambda: tmp_path / "absent")
    monkeypatch.setenv("ALTO_CACHE_DIR", str(tmp_path / "cache"))
    p = wl.default_workload_path()
    assert p.is_relative_to(tmp_path / "cache") and p.exists()
    assert tio.read_workload(p) == paper_workload()
    back = tio.load_trace_dir(wl.default_loss_dir())
    assert set(back) == set(sets)
    for name, s in sets.items():
        assert all(a.same_data(b) for a, b in zip(back[name].curves, s.curves))
        assert math.isclose(back[name].best_curve().final_val(), s.best_curve().final_val())
