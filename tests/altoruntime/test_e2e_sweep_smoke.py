"""experiments/e2e_sweep.py end to end on CPU with the tiny backbone: CSV columns and the trace."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from altosim.traces_io import read_loss_traces

ROOT = Path(__file__).resolve().parents[2]


def test_e2e_sweep_tiny(tmp_path):
    out = tmp_path / "e2e"
    cmd = [sys.executable, str(ROOT / "experiments" / "e2e_sweep.py"), "--backbone", "tiny", "--n-train", "8",
           "--n-val", "4", "--n-eval", "0", "--epochs", "1", "--evals", "2", "--ranks", "2", "--peft-steps", "1",
           "--seq-len", "256", "--methods", "batched,sequential,concurrent", "--concurrent-workers", "2",
           "--concurrent-seconds", "3", "--out", str(out), "--traces-out", str(out / "tr")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "ALTO_CALL_LOG": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    calls = [pd.read_csv(p) for p in out.glob("run_*/tasks/*/fused_calls.csv")]  # ALTO_CALL_LOG=1
    assert len(calls) == 1 and set(calls[0]["kind"]) == {"train", "eval"} and (calls[0]["ms"] > 0).all()
    df = pd.read_csv(out / "e2e_cpu_arithmetic.csv")
    assert (out / "e2e_cpu_arithmetic.png").stat().st_size > 0 and "warning: no plot" not in res.stderr
    assert list(df["method"]) == ["batched", "sequential_peft", "concurrent_peft_est", "concurrent_peft"]
    conc_row = df[df["method"] == "concurrent_peft"].iloc[0]
    assert conc_row["extrapolated"] and conc_row["wall_s"] > 0 and "speedup_vs_concurrent_peft" in df.columns
    for col in ("configs", "wall_s", "samples_trained", "best_config", "best_val_loss", "best_metric",
                "speedup_vs_sequential", "samples_saved", "extrapolated"):
        assert col in df.columns
    assert (df["configs"] == 20).all()
    assert df.loc[df["method"] == "batched", "samples_trained"].iloc[0] == 20 * 8
    seq = df.loc[df["method"] == "sequential_peft", "wall_s"].iloc[0]
    conc = df.loc[df["method"] == "concurrent_peft_est", "wall_s"].iloc[0]
    assert abs(seq / conc - 7.7) < 1e-9
    ts = read_loss_traces(out / "tr" / "SmolLM2-135M__arithmetic.csv.gz")
    assert len(ts.curves) == 20 and not ts.synthetic


def test_e2e_sweep_rejects_unknown_method(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "e2e_sweep.py"), "--backbone", "tiny", "--methods", "bogus",
           "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode != 0 and "bogus" in res.stderr


def test_concurrent_extrapolation_is_longest_first_over_workers():
    sys.path.insert(0, str(ROOT / "experiments"))
    from concurrent_peft import extrapolate

    step = {(16, 1): 1.0, (16, 2): 2.0, (64, 1): 3.0, (64, 2): 4.0}
    # durations: r16 b1 10 steps -> 10, r32 (nearest 16, tie -> the smaller) b2 5 -> 10, r64 b1 4 -> 12
    jobs = [(16, 1, 10), (32, 2, 5), (64, 1, 4)]
    assert extrapolate(jobs, step, 1) == 32
    assert extrapolate(jobs, step, 2) == 20  # 12 | 10 + 10
    assert extrapolate(jobs, step, 3) == 12


def test_e2e_sweep_sigterm_keeps_partial_traces(tmp_path):
    """A time limit (SIGTERM) mid-run: the batched run's curves so far and its event log survive."""
    import signal
    import time

    out = tmp_path / "e2e"
    cmd = [sys.executable, str(ROOT / "experiments" / "e2e_sweep.py"), "--backbone", "tiny", "--n-train", "64",
           "--n-val", "4", "--n-eval", "0", "--epochs", "50", "--evals", "400", "--ranks", "2", "--seq-len", "256",
           "--methods", "batched", "--log-every", "1", "--out", str(out), "--traces-out", str(out / "tr")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline, steps = time.time() + 300, 0
    for line in proc.stderr:  # wait until the fused run has made a few steps
        steps += "[none]" in line
        if steps >= 5 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) != 0
    assert "partial traces written" in rest, rest[-2000:]
    ts = read_loss_traces(out / "tr" / "SmolLM2-135M__arithmetic.partial.csv.gz")
    assert "partial" in ts.meta and ts.curves
    assert max(len(c.samples) for c in ts.curves) < 400  # cut short, not the full run
    first = (out / "run_batched" / "events.jsonl").read_text().splitlines()[0]
    assert '"interrupted": true' in first


def test_keep_layers_truncates_the_tiny_backbone():
    import pytest
    import torch

    from altoruntime.backbone import keep_layers, tiny_llama

    full, cut = tiny_llama(layers=3), tiny_llama(layers=3)
    keep_layers(cut, 1)
    assert len(cut.model.layers) == 1 and cut.config.num_hidden_layers == 1
    assert torch.equal(cut.model.layers[0].self_attn.q_proj.weight, full.model.layers[0].self_attn.q_proj.weight)
    x = torch.tensor([[1, 5, 9, 3]])
    y = cut(x).logits
    assert y.shape == full(x).logits.shape and not torch.allclose(y, full(x).logits)
    for bad in (0, 2):
        with pytest.raises(ValueError, match="backbone_layers"):
            keep_layers(cut, bad)


def test_e2e_sweep_on_a_data_file_with_a_cut_backbone(tmp_path):
    """--dataset PATH names the trace by the file's stem; --backbone-layers N labels it <model>-L<N>."""
    out = tmp_path / "e2e"
    cmd = [sys.executable, str(ROOT / "experiments" / "e2e_sweep.py"), "--backbone", "tiny", "--dataset",
           str(ROOT / "traces" / "datasets" / "date_iso.jsonl"), "--backbone-layers", "1", "--n-train", "8",
           "--n-val", "4", "--n-eval", "0", "--epochs", "1", "--evals", "2", "--ranks", "2", "--lrs", "1e-3,1e-2",
           "--batches", "2", "--methods", "batched", "--out", str(out), "--traces-out", str(out / "tr")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    ts = read_loss_traces(out / "tr" / "SmolLM2-135M-L1__date_iso.csv.gz")
    assert ts.model == "SmolLM2-135M-L1" and ts.dataset == "date_iso" and len(ts.curves) == 2
    assert {c.lr for c in ts.curves} == {1e-3, 1e-2} and all(c.batch_size == 2 for c in ts.curves)
    assert (out / "e2e_cpu_date_iso.csv").is_file() and (out / "e2e_date_iso_workload.json").is_file()
