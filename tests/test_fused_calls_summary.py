"""experiments/fused_calls_summary.py: the table of a run's fused calls, and one line for a bad file."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import fused_calls_summary  # noqa: E402


def test_calls_are_tabled_by_kind_and_graph_outcome(tmp_path):
    rows = [("train", "eager", 200.0, 0), ("train", "captured", 300.0, 1), ("train", "replayed", 20.0, 1),
            ("train", "replayed", 30.0, 1), ("eval", "replayed", 10.0, 2)]
    pd.DataFrame([{"kind": k, "adapters": 2, "rows": 4, "length": 64, "labels": 64, "graph": g, "invalidated": i,
                   "ms": ms} for k, g, ms, i in rows]).to_csv(tmp_path / "calls.csv", index=False)
    assert fused_calls_summary.main([str(tmp_path / "calls.csv"), "--out", str(tmp_path / "o")]) == 0
    t = pd.read_csv(tmp_path / "o" / "fused_calls_summary.csv").set_index(["kind", "graph"])
    assert t.loc[("train", "replayed"), "calls"] == 2 and t.loc[("train", "replayed"), "seconds"] == 0.05
    assert t.loc[("train", "replayed"), "median_ms"] == 25.0 and set(t["graph_drops"]) == {2}


def test_memory_columns_give_the_run_s_gated_captures_and_peak_reservation(tmp_path):
    """The running counts of memory-gated and out-of-memory captures end at the run's totals; the
    reserved MiB peak; logs from before these columns table without them."""
    rows = [("eager", 0, 0, 10240), ("captured", 0, 0, 30720), ("eager", 1, 0, 51200), ("eager", 3, 1, 20480)]
    pd.DataFrame([{"kind": "train", "adapters": 2, "rows": 4, "length": 64, "labels": 64, "graph": g, "invalidated": 0,
                   "skipped_memory": sk, "capture_oom": oom, "reserved_mib": mib, "ms": 10.0}
                  for g, sk, oom, mib in rows]).to_csv(tmp_path / "calls.csv", index=False)
    t = fused_calls_summary.summarize(tmp_path / "calls.csv")
    assert set(t["captures_skipped_memory"]) == {3} and set(t["captures_oom"]) == {1}
    assert set(t["peak_reserved_gib"]) == {50.0}
    pd.DataFrame([{"kind": "train", "adapters": 2, "rows": 4, "length": 64, "graph": "eager", "ms": 1.0}]).to_csv(
        tmp_path / "old.csv", index=False)
    old = fused_calls_summary.summarize(tmp_path / "old.csv")
    assert old["captures_skipped_memory"].isna().all() and old["peak_reserved_gib"].isna().all()


def test_by_shape_splits_each_outcome_by_adapters_rows_and_length(tmp_path):
    rows = [(2, 64, 20.0), (2, 64, 22.0), (2, 64, 30.0), (2, 128, 40.0), (4, 64, 50.0)]
    pd.DataFrame([{"kind": "train", "adapters": a, "rows": 2, "length": n, "labels": n, "graph": "replayed",
                   "invalidated": 0, "ms": ms} for a, n, ms in rows]).to_csv(tmp_path / "calls.csv", index=False)
    assert fused_calls_summary.main([str(tmp_path / "calls.csv"), "--by-shape", "--out", str(tmp_path / "o")]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["fused_calls_by_shape.csv"]
    t = pd.read_csv(tmp_path / "o" / "fused_calls_by_shape.csv").set_index(["adapters", "rows", "length"])
    assert t.loc[(2, 2, 64), "calls"] == 3 and t.loc[(2, 2, 64), "median_ms"] == 22.0
    assert t.loc[(2, 2, 128), "median_ms"] == 40.0 and t.loc[(4, 2, 64), "median_ms"] == 50.0 and len(t) == 3


def test_a_file_that_is_not_a_call_log_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert fused_calls_summary.main([str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "x.csv" in err and "missing" in err and not (tmp_path / "o").exists()
