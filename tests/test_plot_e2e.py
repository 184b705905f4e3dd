"""experiments/plot_e2e.py: a PNG from an e2e CSV; a CSV that is not one is a one-line error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mod():
    spec = importlib.util.spec_from_file_location("plot_e2e", ROOT / "experiments" / "plot_e2e.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plots_the_committed_csv(tmp_path):
    out = _mod().main([str(ROOT / "results" / "e2e_nvidia_h200.csv"), "--out", str(tmp_path / "e.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_say_speedup_savings_and_regret():
    r = pd.Series({"speedup_vs_sequential": 20.39, "samples_saved": 0.802, "val_loss_vs_full_sweep": 0.0019})
    assert _mod()._label(r) == "20.4x vs sequential, 80% samples saved, best val +0.19%"


def test_not_an_e2e_csv(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="missing columns"):
        _mod().main([str(bad)])
