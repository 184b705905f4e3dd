"""experiments/device/diag_shrink.py runs on CPU (tiny shape): one row per step, sizes in order."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("diag_shrink", ROOT / "experiments" / "device" / "diag_shrink.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shrinking_group_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))  # the script's setdefault keeps it
    mod = _load()
    rows = mod.main(["--model", "tiny", "--sizes", "3,1", "--steps", "2", "--impls", "torch_grouped",
                     "--out", str(tmp_path / "d.csv")])
    assert [(r["impl"], r["adapters"]) for r in rows] == [("base_only", 3)] * 2 + [("base_only", 1)] * 2 + \
        [("torch_grouped", 3)] * 2 + [("torch_grouped", 1)] * 2
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows)
    assert all(r["new_compiles"] == 0 for r in rows)  # no Triton on CPU
    assert (tmp_path / "d.csv").read_text().splitlines()[0] == "impl,adapters,step,ms,new_compiles,rows,tokens"


def test_sizes_must_shrink(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    with pytest.raises(SystemExit, match="largest first"):
        _load().main(["--model", "tiny", "--sizes", "1,3"])
