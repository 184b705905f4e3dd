"""An --out on a file system with less free space than `altosim.outdir.MIN_FREE_BYTES` is refused
with one line before any work (`alto simulate` here; `alto run` in
tests/altoruntime/test_run_hostile_props.py): a run must not stop half-written on a full disk."""

from __future__ import annotations

import shutil

import pytest

import altosim.outdir as outdir
from altosim.errors import InputError
from tests._hostile import assert_input_error, cli, write_run


def test_simulate_refuses_an_out_without_room(tmp_path, monkeypatch):
    cfg = write_run(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setattr(outdir, "MIN_FREE_BYTES", shutil.disk_usage(tmp_path).free + 2**40)
    rc, _, err = cli("simulate", cfg, "--out", str(tmp_path / "runs" / "out"), "-q")
    assert_input_error(rc, err, "--out", "runs/out", "MiB free", "MiB needed")
    assert sorted(tmp_path.rglob("*")) == before  # nothing made, not even the parent folder


def test_simulate_runs_with_room(tmp_path, monkeypatch):
    monkeypatch.setattr(outdir, "MIN_FREE_BYTES", 0)
    rc, _, err = cli("simulate", write_run(tmp_path), "--out", str(tmp_path / "out"), "-q")
    assert rc == 0, err


def test_the_floor_is_a_parameter(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    outdir.check_free_space(tmp_path / "a" / "b", floor=0)  # measured on the nearest existing folder
    with pytest.raises(InputError, match="at least"):
        outdir.check_free_space(tmp_path / "a" / "b", floor=free + 2**40)
    assert outdir.MIN_FREE_BYTES == 64 * 2**20
