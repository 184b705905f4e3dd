"""experiments/merge_e2e.py: baseline rows beside the e2e rows, a speedup column per baseline row."""

import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from merge_e2e import main, merge  # noqa: E402

walls = st.floats(0.1, 1e5, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(ours=st.lists(walls, min_size=1, max_size=3), theirs=st.lists(walls, min_size=1, max_size=2))
def test_each_baseline_row_gives_a_speedup_column(ours, theirs):
    e2e = pd.DataFrame({"method": [f"m{i}" for i in range(len(ours))], "wall_s": ours})
    base = pd.DataFrame({"method": [f"raytune_{i}" for i in range(len(theirs))], "wall_s": theirs})
    df = merge(e2e, [base])
    assert list(df["method"]) == list(e2e["method"]) + list(base["method"])
    for m, w in zip(base["method"], base["wall_s"]):
        col = df[f"speedup_vs_{m}"]
        assert col[df["method"] == m].iloc[0] == pytest.approx(1.0)
        assert (col * df["wall_s"]).tolist() == pytest.approx([w] * len(df))


def test_writes_the_merged_csv_and_plot(tmp_path):
    e2e, rt = tmp_path / "e2e_cpu_x.csv", tmp_path / "raytune_cpu.csv"
    pd.DataFrame({"gpu": ["cpu"], "dataset": ["x"], "method": ["early_exit"], "wall_s": [10.0], "configs": [4],
                  "samples_saved": [0.8], "val_loss_vs_full_sweep": [0.01]}).to_csv(e2e, index=False)
    pd.DataFrame({"gpu": ["cpu"] * 2, "dataset": ["x"] * 2, "method": ["raytune_asha_default", "raytune_asha_gentle"],
                  "wall_s": [15.0, 40.0], "configs": [4, 4], "regret": [0.0, 0.01]}).to_csv(rt, index=False)
    out = main([str(e2e), str(rt), "--out", str(tmp_path / "o")])
    df = pd.read_csv(out)
    assert out.name == "e2e_cpu_x_merged.csv" and out.with_suffix(".png").stat().st_size > 0
    ours = df[df["method"] == "early_exit"].iloc[0]
    assert ours["speedup_vs_raytune_asha_default"] == pytest.approx(1.5)
    assert ours["speedup_vs_raytune_asha_gentle"] == pytest.approx(4.0)


@pytest.mark.parametrize("content", [None, "a,b\n1,2\n", "method,wall_s\nx,-1\n"])
def test_bad_csv_is_one_line_and_exit_2(tmp_path, capsys, content):
    good, bad = tmp_path / "e2e.csv", tmp_path / "bad.csv"
    pd.DataFrame({"method": ["early_exit"], "wall_s": [1.0]}).to_csv(good, index=False)
    if content is not None:
        bad.write_text(content)
    with pytest.raises(SystemExit) as e:
        main([str(good), str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "bad.csv" in err[0]
    assert not (tmp_path / "o").exists()
