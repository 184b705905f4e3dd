"""Property tests for `alto run` (issue 23's pattern, `tests/test_hostile_props.py`): malformed run
configs, workloads and task datasets end in exit code 2 with one line on stderr naming the file,
before any training, with nothing written under --out or anywhere else. The base inputs are a
valid CPU run (tiny backbone); the backbone loader is replaced by one that fails the test, so an
input accepted by mistake shows up at once instead of starting to train."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

import altoruntime.run as run
import altosim.outdir as outdir
from tests._hostile import CONFIG, TASK, assert_input_error, cli
from tests.test_hostile_props import (
    CONFIG_MUTATIONS, POLICY_MUTATIONS, RAW_FILES, SETTINGS, SPACE_MUTATIONS, TASK_MUTATIONS, TEXT, run_hostile,
    mutated, run_ok, set_path,
)

RUN_TASK = {**{k: v for k, v in TASK.items() if k != "loss_trace"}, "model": "tiny", "dataset": "list_ops",
            "search_space": {"lr": [1e-2, 1e-3], "rank": [2], "batch_size": [2]},
            "samples_per_job": 8, "eval_every_samples": 4, "seq_len": 160}
RUN_WORKLOAD = {"name": "tiny-run", "synthetic": True, "tasks": [RUN_TASK]}
ARGV = ("run", "cfg.json", "--out", "out", "--backbone", "tiny", "--n-train", "8", "--n-val", "2", "--n-eval", "0",
        "--quiet")
# fields `alto run` does not read (the backbone comes from --backbone, losses from training)
NOT_READ_BY_RUN = ("model", "loss_trace")


class Accepted(AssertionError):
    """Raised where training would start: the input got past every check."""


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise Accepted("the input was accepted: the run went on to load its backbone")

    monkeypatch.setattr(run, "open_backbone", refuse)


def files(cfg=None, wl=None, **extra) -> dict[str, str | bytes]:
    return {"cfg.json": json.dumps(CONFIG if cfg is None else cfg, allow_nan=True),
            "wl.json": json.dumps(RUN_WORKLOAD if wl is None else wl, allow_nan=True), **extra}


def test_positive_control_reaches_the_backbone(no_training):
    """The unmutated inputs pass every check: the run gets as far as loading its backbone."""
    with pytest.raises(Accepted):
        run_ok(files(), *ARGV)


@SETTINGS
@given(st.one_of(CONFIG_MUTATIONS, POLICY_MUTATIONS))
def test_run_rejects_malformed_configs(no_training, mutation):
    path, value = mutation
    run_hostile(files(cfg=set_path(CONFIG, path, value)), *ARGV, naming=("cfg.json",))


@SETTINGS
@given(RAW_FILES, st.sampled_from(["cfg.json", "cfg.yaml"]))
def test_run_rejects_unreadable_config_files(no_training, raw, name):
    run_hostile({name: raw, "wl.json": json.dumps(RUN_WORKLOAD)}, *ARGV[:1], name, *ARGV[2:], naming=(name,))


DATASETS = st.one_of(
    TEXT.filter(lambda s: s.strip() and "/" not in s and "." not in s and s not in ("arithmetic", "list_ops",
                                                                                     "python_docs")),
    st.sampled_from(["missing.jsonl", "missing/data.csv", "", 3, None, ["list_ops"]]),
)


@SETTINGS
@given(st.one_of(TASK_MUTATIONS.filter(lambda m: m[0] not in NOT_READ_BY_RUN).map(lambda m: ("task", m)),
                 SPACE_MUTATIONS.map(lambda m: ("space", m)),
                 DATASETS.map(lambda d: ("task", ("dataset", d))),
                 st.sampled_from(["id", "arrival", "dataset", "gpus", "search_space", "samples_per_job"])
                 .map(lambda k: ("drop", k)),
                 st.sampled_from([None, 3, "x", [1], {}]).map(lambda v: ("tasks", v))))
def test_run_rejects_malformed_workloads(no_training, mutation):
    run_hostile(files(wl=mutated(RUN_WORKLOAD, mutation)), *ARGV, naming=("wl.json",))


@SETTINGS
@given(RAW_FILES, st.sampled_from(["wl.json", "wl.csv"]))
def test_run_rejects_unreadable_workload_files(no_training, raw, name):
    run_hostile({name: raw, "cfg.json": json.dumps({**CONFIG, "workload": name})}, *ARGV, naming=(name,))


@SETTINGS
@given(st.one_of(RAW_FILES, st.sampled_from(["", "\n", '{"x": 1}\n', '{"prompt": "a"}\n', "[]\n"])))
def test_run_rejects_malformed_dataset_files(no_training, raw):
    """A task's own data file that cannot be read: the line names it (and the workload's field, or
    the missing column)."""
    wl = copy.deepcopy(RUN_WORKLOAD)
    wl["tasks"][0]["dataset"] = "data.jsonl"
    run_hostile(files(wl=wl, **{"data.jsonl": raw}), *ARGV, naming=("data.jsonl",))


def test_run_names_the_workload_for_an_unknown_dataset(tmp_path, no_training):
    (tmp_path / "wl.json").write_text(json.dumps(set_path(RUN_WORKLOAD, ("tasks",), [{**RUN_TASK, "dataset": "nope"}])))
    (tmp_path / "cfg.json").write_text(json.dumps({**CONFIG, "workload": str(tmp_path / "wl.json")}))
    rc, _, err = cli(*ARGV[:1], str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out"), *ARGV[4:])
    assert_input_error(rc, err, "wl.json", "tasks[0].dataset", "unknown dataset")
    assert not (tmp_path / "out").exists()


def test_run_refuses_an_out_without_room(tmp_path, monkeypatch, no_training):
    (tmp_path / "wl.json").write_text(json.dumps(RUN_WORKLOAD))
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    monkeypatch.setattr(outdir, "MIN_FREE_BYTES", shutil.disk_usage(tmp_path).free + 2**40)
    rc, _, err = cli(*ARGV[:1], str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out"), *ARGV[4:])
    assert_input_error(rc, err, "--out", "MiB free")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "wl.json"]
