"""A task's train/validation split given as files, as a folder of split files, or as a seeded
fraction (through `datasets`); missing, empty and overlapping splits are one-line errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from altosim.errors import InputError
from altoruntime.data import files


def write(path, lo, hi, fmt="Q{i:03d}:"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": fmt.format(i=i), "completion": f" {i}"}) + "\n"
                            for i in range(lo, hi)))
    return path


def prompts(split):
    return {ex.prompt for ex in split}


def test_validation_file_gives_the_validation_rows(tmp_path):
    train = write(tmp_path / "train_rows.jsonl", 0, 30)
    held = write(tmp_path / "held.jsonl", 100, 110)
    ds = files.build(train, n_train=100, n_val=6, n_eval=8, validation=held)
    assert prompts(ds.train) == {f"Q{i:03d}:" for i in range(30)}  # at most n_train: every train row
    assert len(ds.val) == 6 and prompts(ds.val) <= {f"Q{i:03d}:" for i in range(100, 110)}
    assert prompts(ds.eval) == {f"Q{i:03d}:" for i in range(100, 110)} - prompts(ds.val)  # the rest held out
    small = files.build(train, n_train=10, n_val=10, n_eval=3, validation=held)
    assert len(small.train) == 10 and prompts(small.eval) <= prompts(small.val)  # nothing left: the val rows


def test_folder_of_split_files_follows_the_datasets_names(tmp_path):
    write(tmp_path / "d" / "train.jsonl", 0, 20)
    write(tmp_path / "d" / "dev.jsonl", 50, 58)
    write(tmp_path / "d" / "test.jsonl", 80, 85)
    ds = files.build(tmp_path / "d", n_train=50, n_val=50, n_eval=50)
    assert len(ds.train) == 20 and len(ds.val) == 8
    assert prompts(ds.eval) == {f"Q{i:03d}:" for i in range(80, 85)}
    # a folder whose names are no split names stays one pool, split by prompt hash
    write(tmp_path / "p" / "a.jsonl", 0, 40)
    write(tmp_path / "p" / "b.jsonl", 40, 80)
    pool = files.build(tmp_path / "p", n_train=30, n_val=2, n_eval=2)
    assert len(pool.train) == 30 and not prompts(pool.train) & prompts(pool.val)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.05, 0.5), st.integers(0, 2**32 - 1))
def test_fraction_split_is_seeded_and_disjoint(tmp_path_factory, fraction, seed):
    path = tmp_path_factory.getbasetemp() / "frac.jsonl"
    if not path.exists():
        write(path, 0, 60)
    a = files.build(path, n_train=1000, n_val=1000, n_eval=10, validation_fraction=fraction, split_seed=seed)
    b = files.build(path, n_train=1000, n_val=1000, n_eval=10, validation_fraction=fraction, split_seed=seed)
    assert prompts(a.train) == prompts(b.train) and prompts(a.val) == prompts(b.val)
    assert not prompts(a.train) & prompts(a.val)
    assert len(a.train) + len(a.val) == 60 and abs(len(a.val) - fraction * 60) <= 1


def test_fraction_seed_moves_the_split(tmp_path):
    path = write(tmp_path / "d.jsonl", 0, 60)
    vals = {frozenset(prompts(files.build(path, n_val=100, n_eval=1, validation_fraction=0.2, split_seed=s).val))
            for s in range(4)}
    assert len(vals) > 1


@pytest.mark.parametrize("setup, kwargs, field, problem", [
    (lambda t: write(t / "d.jsonl", 0, 20), {"validation": "missing.jsonl"}, "validation", "no such file"),
    (lambda t: (write(t / "d.jsonl", 0, 20), (t / "v.jsonl").write_text("")), {"validation": "v.jsonl"},
     "validation", "empty"),
    (lambda t: (write(t / "d.jsonl", 0, 20), write(t / "v.jsonl", 15, 25)), {"validation": "v.jsonl"},
     "validation", "share a prompt with the train split"),
    (lambda t: write(t / "d.jsonl", 0, 1), {"validation_fraction": 0.5}, "validation_fraction", "leaves a split empty"),
    (lambda t: write(t / "d" / "validation.jsonl", 0, 5), {}, "dataset", "no train file"),
    (lambda t: write(t / "d" / "train.jsonl", 0, 5), {}, "dataset", "no validation file"),
    (lambda t: (write(t / "d" / "train.jsonl", 0, 5), write(t / "d" / "val.jsonl", 9, 12)),
     {"validation_fraction": 0.2}, "validation_fraction", "validation split already"),
])
def test_bad_splits_are_one_line(tmp_path, setup, kwargs, field, problem):
    setup(tmp_path)
    data = tmp_path / ("d" if (tmp_path / "d").is_dir() else "d.jsonl")
    if "validation" in kwargs:
        kwargs = {**kwargs, "validation": tmp_path / kwargs["validation"]}
    with pytest.raises(InputError) as e:
        files.build(data, n_train=4, n_val=2, n_eval=1, **kwargs)
    assert e.value.field == field and problem in e.value.problem and "\n" not in str(e.value)


def test_run_names_the_workload_field_for_a_missing_split(tmp_path, capsys):
    from tests.altoruntime.test_own_model import _rows, alto_run, write_run

    cfg = write_run(tmp_path, "tiny", rows=_rows(), validation="nowhere.jsonl")
    assert alto_run(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wl.json: tasks[0].validation: " in err and "no such file" in err
    assert not (tmp_path / "out").exists()


def test_validation_file_and_fraction_exclude_each_other():
    from altosim.schemas import TaskRecord

    with pytest.raises(ValueError, match="not both"):
        TaskRecord.model_validate({"id": "t", "arrival": 0, "model": "m", "dataset": "d.jsonl", "gpus": 1,
                                   "samples_per_job": 8, "search_space": {"lr": [1e-4], "rank": [2], "batch_size": [1]},
                                   "validation": "v.jsonl", "validation_fraction": 0.1})
