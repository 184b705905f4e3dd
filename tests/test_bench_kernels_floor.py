"""experiments/bench_kernels.py's floor rows: the bytes the LoRA work must move, and the layer's bound."""

from __future__ import annotations

import math

import pytest

from experiments import bench_kernels as bk


def test_lora_bytes_of_the_llama_layer_at_batch_1():
    tokens = 32 * 512
    passes = bk.lora_bytes(bk.PROJS, tokens, 2, epilogue=False)
    assert passes == 4 * tokens * 2 * 44032 == pytest.approx(5.77e9, rel=1e-3)  # X, dY twice; Y, dX read + written
    assert bk.lora_bytes(bk.PROJS, tokens, 2, epilogue=True) * 2 == passes


def test_floor_rows_add_the_bytes_at_the_bandwidth_to_the_base():
    base = {"proj": "layer", "impl": "base_only", "ms": 5.0, "host_ms": 1.0, "tokens_per_adapter": 512, "adapters": 32,
            "batch": 1}
    other = {**base, "impl": "ours", "ms": 7.5}
    rows = bk.floor_rows([base, other, {**base, "proj": "q"}], bk.PROJS, 2, bandwidth=3.35e9)  # bytes per ms
    assert [r["impl"] for r in rows] == ["floor_cublas_passes", "floor_epilogue"]
    assert rows[0]["ms"] == pytest.approx(5.0 + 5.7706e9 / 3.35e9, rel=1e-4)  # ~1.72 ms of passes
    assert rows[1]["ms"] - 5.0 == pytest.approx((rows[0]["ms"] - 5.0) / 2)
    assert all(math.isnan(r["host_ms"]) for r in rows)


def test_smoke_run_writes_the_floor_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr("sys.argv", ["bench_kernels.py", "--smoke", "--impls", "base_only,torch_grouped", "--no-check",
                                     "--no-breakdown", "--batches", "1", "--out", str(tmp_path)])
    bk.main()
    import pandas as pd

    df = pd.read_csv(tmp_path / "kernels_cpu.csv")
    layer = df[df["proj"] == "layer"].set_index("impl")["ms"]
    assert layer["floor_epilogue"] > layer["base_only"] and layer["floor_cublas_passes"] > layer["floor_epilogue"]


@pytest.mark.parametrize("flags, field", [(["--adapters", "0"], "--adapters"), (["--seq", "-1"], "--seq"),
                                          (["--batches", "x"], "--batches"), (["--batches", "1,0"], "--batches"),
                                          (["--impls", "nope"], "--impls")])
def test_bad_sizes_are_one_line_and_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys, flags, field):
    monkeypatch.setattr("sys.argv", ["bench_kernels.py", *flags, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        bk.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and field in err and not (tmp_path / "o").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU's refusals")
@pytest.mark.parametrize("flags, words", [
    ([], "needs a CUDA device"),
    (["--smoke", "--impls", "ours", "--no-check", "--no-breakdown"], "TRITON_INTERPRET=1"),
    (["--smoke", "--impls", "base_only"], "TRITON_INTERPRET=1"),  # the check runs the fused path
])
def test_on_the_cpu_without_smoke_or_the_interpreter_it_says_so_in_one_line(tmp_path, monkeypatch, capsys, flags, words):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("sys.argv", ["bench_kernels.py", *flags, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        bk.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and words in err and not (tmp_path / "o").exists()
