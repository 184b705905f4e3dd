"""experiments/device/diag_shrink.py runs on CPU (tiny shape): one row per step, sizes in order."""

from __future__ import annotations

import math

import pytest

from experiments.device import diag_shrink


def test_shrinking_group_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))  # compiles counted in a private cache
    rows = diag_shrink.main(["--model", "tiny", "--sizes", "3,1", "--steps", "2", "--impls", "torch_grouped",
                     "--out", str(tmp_path / "d.csv"), "--profile-first", str(tmp_path / "p" / "first.txt")])
    assert [(r["impl"], r["adapters"]) for r in rows] == [("base_only", 3)] * 2 + [("base_only", 1)] * 2 + \
        [("torch_grouped", 3)] * 2 + [("torch_grouped", 1)] * 2
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows)
    assert all(r["new_compiles"] == 0 for r in rows)  # no Triton on CPU
    assert (tmp_path / "d.csv").read_text().splitlines()[0] == "impl,adapters,step,ms,new_compiles,rows,tokens,compiled,graph"
    assert all(r["compiled"] == "" for r in rows) and {r["graph"] for r in rows} == {"off"}
    prof = (tmp_path / "p" / "first.txt").read_text()  # the first LoRA step's profile, by both orders
    assert prof.startswith("# torch_grouped, 3 adapters, first step: ") and prof.count("Ordered by") == 2
    assert "trainer.py" in prof  # the step's own frames are in it


def test_compile_log_names_compiles_and_restores_the_listener():
    from triton import knobs

    before = knobs.compilation.listener
    log = diag_shrink.CompileLog()
    with log:
        assert knobs.compilation.listener is log

        class Src:  # as triton 3.9 hands it: keys are argument positions
            fn = type("K", (), {"__name__": "_shrink_kernel", "arg_names": ["x_ptr", "K", "BLOCK_M", "SPLIT_K"]})()
            constants = {(2,): 32, (3,): 2, (1,): 1}
            attrs = {(0,): [["tt.divisibility", 16]]}

        log(src=Src(), metadata={"num_warps": 4, "num_stages": 3}, cache_hit=False)
        log(src=Src(), metadata={}, cache_hit=True)  # a cache hit is not a compile
    assert knobs.compilation.listener is before
    assert log.take() == ("_shrink_kernel {'BLOCK_M': 32, 'SPLIT_K': 2, 'K': 1} "
                          "spec={'x_ptr': [['tt.divisibility', 16]]} warps=4 stages=3") and log.take() == ""


@pytest.mark.parametrize("flags, field", [(["--sizes", "1,3"], "largest first"), (["--sizes", "x"], "--sizes"),
                                          (["--sizes", "2,0"], "--sizes"), (["--impls", "nope"], "--impls"),
                                          (["--steps", "0"], "--steps")])
def test_bad_flags_are_one_line_and_exit_2(capsys, flags, field):
    with pytest.raises(SystemExit) as e:
        diag_shrink.main(["--model", "tiny", *flags])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and field in err


def test_a_step_that_fails_every_adapter_stops_with_the_reasons_and_the_graph_state():
    from altoruntime.backbone import tiny_llama
    from altoruntime.trainer import MultiAdapterTrainer

    tr = MultiAdapterTrainer(tiny_llama(**diag_shrink.SHAPES["tiny"]), capacity=3)
    diag_shrink.admit_grid(tr, 3)
    batches = diag_shrink.grid_batches(3)
    diag_shrink.checked_step(tr, batches)  # a real step: nothing fails
    assert tr.active == ["j0", "j1", "j2"]
    tr.step = lambda b: [tr.store.fail(j, "non-finite loss") for j in b]  # as a replay of an unwritten graph did
    with pytest.raises(diag_shrink.AllFailed, match=r"all 3 adapters failed.*graphs .*failures \{'non-finite loss': 3\}"):
        diag_shrink.checked_step(tr, batches)
    with pytest.raises(diag_shrink.AllFailed, match="no adapter is active"):
        diag_shrink.checked_step(tr, batches)
