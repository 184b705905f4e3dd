"""experiments/plot_e2e.py: a PNG from an e2e CSV; a CSV that is not one is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from experiments import plot_e2e

ROOT = Path(__file__).resolve().parents[1]


def test_plots_the_committed_csv(tmp_path):
    out = plot_e2e.main([str(ROOT / "results" / "e2e_nvidia_h200.csv"), "--out", str(tmp_path / "e.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_say_speedup_savings_and_regret():
    r = pd.Series({"speedup_vs_sequential": 20.39, "samples_saved": 0.802, "val_loss_vs_full_sweep": 0.0019})
    assert plot_e2e._label(r) == "20.4x vs sequential, 80% samples saved, best val +0.19%"


def test_not_an_e2e_csv(tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as e:
        plot_e2e.main([str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing columns" in err[0] and "x.csv" in err[0]
