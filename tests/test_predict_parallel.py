"""experiments/predict_parallel.py: writes the predicted AP vs FSDP table, from a profile when given."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from altosim.schemas import CostProfile, CostRecord
from altosim.cost import write_cost_profile
from experiments import predict_parallel
NEEDED = {"gpus", "per_adapter_batch", "impl", "layers", "padded", "model", "predicted_step_ms",
          "predicted_speedup_vs_fsdp", "source", "extrapolated"}


def test_analytic_table(tmp_path):
    (path,) = predict_parallel.main(["--gpu", "H100", "--out", str(tmp_path), "--backbone", "llama-3.2-1b",
                              "--backbone", "llama-3.1-70b:layers=2"])
    df = pd.read_csv(path)
    assert path.name == "parallel_predicted_h100.csv" and NEEDED <= set(df.columns)
    assert len(df) == 2 * 4 * (1 + 3 * 2)  # 2 backbones x 4 batches x (single + 3 P x {ap, fsdp})
    fsdp = df[df.impl == "fsdp"]
    assert (fsdp.predicted_speedup_vs_fsdp == 1.0).all()
    assert set(df.layers) == {16, 2}
    b1 = df[(df.per_adapter_batch == 1) & (df.gpus == 4) & (df.model == "llama-3.2-1b")].set_index("impl")
    assert b1.loc["fsdp", "padded"] == 8 * 3 and b1.loc["ap", "predicted_speedup_vs_fsdp"] > 1.0


def test_profile_rows_are_used(tmp_path):
    rows = [CostRecord(model="smollm2-135m", gpu_type="H200", adapters=a, mean_rank=16, per_adapter_batch=b,
                       seq_len=l, step_ms=1.0 + a * b * l / 1000, peak_mem_bytes=0)
            for a, b, l in itertools.product((1, 8), (1, 8), (128, 512))]
    prof = tmp_path / "h200.csv"
    write_cost_profile(CostProfile(rows=rows, device="test", layers={"smollm2-135m": 30}), prof)
    (path,) = predict_parallel.main(["--gpu", "H200", "--profile", str(prof), "--out", str(tmp_path),
                              "--backbone", "smollm2-135m"])
    df = pd.read_csv(path)
    assert set(df.source) == {"profile"}
    single = df[(df.impl == "single") & (df.per_adapter_batch == 2)].iloc[0]
    assert single.predicted_step_ms == pytest.approx(1.0 + 8 * 2 * 256 / 1000, rel=1e-3)
    assert not df.extrapolated.any()
    with pytest.raises(ValueError, match="backbone"):
        predict_parallel.main(["--gpu", "H200", "--out", str(tmp_path), "--backbone", "smollm2-135m:depth=2"])
