"""experiments/device/diag_host.py runs on CPU (tiny shape): a row per style, then the profiled steps."""

from __future__ import annotations

import math

import pytest

from experiments.device import diag_host


def test_styles_and_profiled_steps(tmp_path):
    rows = diag_host.main(["--model", "tiny", "--sizes", "2", "--steps", "1", "--styles", "profile,mixed,run",
                           "--out", str(tmp_path / "h.csv")])
    assert [r["style"] for r in rows] == ["profile", "mixed", "run", "run/profiled", "profile/profiled"]
    assert all(math.isfinite(r["ms_median"]) and r["ms_median"] > 0 for r in rows)
    assert all(r["aten_ops"] > 0 for r in rows if r["style"].endswith("/profiled"))
    assert (tmp_path / "h_ops.txt").read_text().count("## 2 adapters") == 2
    timed = {r["style"]: r["ms_median"] for r in rows if "/" not in r["style"]}
    for r in (r for r in rows if r["style"].endswith("/profiled")):  # busy share of the unprofiled step of its style
        assert r["step_ms"] == timed[r["style"].split("/")[0]]
        assert r["gpu_busy_pct"] == diag_host.busy_pct(r["gpu_busy_ms"], r["step_ms"])
        assert r["same_batch_ms"] > 0 and r["busy_pct_same_batch"] == diag_host.busy_pct(r["gpu_busy_ms"], r["same_batch_ms"])
    assert diag_host.busy_pct(30.0, 40.0) == 75.0 and math.isnan(diag_host.busy_pct(1.0, 0.0))


@pytest.mark.parametrize("flags, field", [(["--styles", "nope"], "--styles"), (["--sizes", "x"], "--sizes"),
                                          (["--sizes", "0"], "--sizes"), (["--graphs", "2"], "--graphs"),
                                          (["--fused", "0,x"], "--fused"), (["--steps", "0"], "--steps")])
def test_bad_flags_are_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, flags, field):
    with pytest.raises(SystemExit) as e:
        diag_host.main(["--model", "tiny", *flags, "--out", str(tmp_path / "d" / "h.csv")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and field in err and not (tmp_path / "d").exists()
