"""`alto profile` on CPU with the tiny Llama: a valid CostProfile on disk, OOM points become
rows that say so, the memory line is fitted from measured peaks."""

from __future__ import annotations

import os

import pytest
import torch

import altoruntime.profile as rp
from altosim.cli import main
from altosim.cost import ProfileTable
from altosim.schemas import CostRecord
from altosim.cost import read_cost_profile

SMALL = ["--adapters", "1,2", "--ranks", "4", "--batches", "1,2", "--seqs", "16", "--steps", "1", "--warmup", "0"]


def test_profile_command_writes_a_valid_profile(tmp_path, capsys):
    out = tmp_path / "cpu.csv"
    assert main(["profile", "--backbone", "tiny", *SMALL, "--out", str(out), "--quiet"]) == 0
    prof = read_cost_profile(out)
    assert (tmp_path / "cpu.meta.json").exists() and "wrote" in capsys.readouterr().out
    assert prof.device == "cpu" and prof.date and not prof.synthetic and prof.layers == {"tiny": 2}
    assert len(prof.rows) == 4 and not prof.failed
    assert {(r.adapters, r.per_adapter_batch) for r in prof.rows} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    for r in prof.rows:
        assert r.model == "tiny" and r.gpu_type == "cpu" and r.mean_rank == 4 and r.seq_len == 16
        assert r.step_ms > 0 and r.peak_mem_bytes == 0 and "cpu: peak memory not measured" in r.note
    assert prof.memory_fits == {}  # nothing measured on CPU, nothing fitted
    t = ProfileTable(prof)
    p = t.predict("tiny", "cpu", 2, 4, 2, 16)
    assert p.step_ms == next(r.step_ms for r in prof.rows if (r.adapters, r.per_adapter_batch) == (2, 2))


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    assert main(["profile", "--backbone", "tiny", "--adapters", "1,x", "--out", str(tmp_path / "p.csv")]) == 2
    assert "--adapters" in capsys.readouterr().err
    assert main(["profile", "--backbone", "nope", "--out", str(tmp_path / "p.csv"), "--quiet"]) == 2
    assert "backbone" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_oom_points_become_rows_and_larger_ones_are_skipped(tmp_path, monkeypatch):
    real = rp._time_point

    def fake(trainer, adapters, rank, batch, seq, *a, **k):
        if adapters * batch * seq >= 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(trainer, adapters, rank, batch, seq, *a, **k)

    monkeypatch.setattr(rp, "_time_point", fake)
    grid = rp.Grid(adapters=(1, 2, 4), ranks=(4,), batches=(1, 2), seqs=(16,))
    prof, path = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=0, quiet=True)
    measured = {(r.adapters, r.per_adapter_batch) for r in prof.rows}
    assert measured == {(1, 1), (1, 2), (2, 1)}
    reasons = {(f.adapters, f.per_adapter_batch): f.reason for f in prof.failed}
    assert reasons[(2, 2)] == "oom"  # first of the 64-token points (ordered by tokens, then adapters)
    assert set(reasons) == {(2, 2), (4, 1), (4, 2)}
    assert sum(v == "oom" for v in reasons.values()) == 1  # the rest skipped, and say so
    assert all(v.startswith("skipped") for v in reasons.values() if v != "oom")
    assert read_cost_profile(path).failed == prof.failed


def test_oom_the_trainer_recovers_from_still_fails_the_point(tmp_path, monkeypatch):
    """The trainer catches OOM and splits the step; the allocator's OOM counter still tells."""
    from altoruntime.trainer import MultiAdapterTrainer

    real, ooms = MultiAdapterTrainer.step, [0]

    def step(self, batches):
        if sum(b[0].numel() for b in batches.values()) >= 64:
            ooms[0] += 1  # as if the allocator had failed once and the trainer split the step
        return real(self, batches)

    monkeypatch.setattr(MultiAdapterTrainer, "step", step)
    monkeypatch.setattr(rp, "_oom_count", lambda device: ooms[0])
    grid = rp.Grid(adapters=(1, 2, 4), ranks=(4,), batches=(1,), seqs=(16,))
    prof, _ = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=1, quiet=True)
    assert [r.adapters for r in prof.rows] == [1, 2]
    assert [(f.adapters, f.reason) for f in prof.failed] == [(4, "oom")]


def test_failed_adapters_are_readmitted_and_counted(tmp_path, monkeypatch):
    from altoruntime.trainer import MultiAdapterTrainer

    real, calls = MultiAdapterTrainer.step, []

    def step(self, batches):
        out = real(self, batches)
        calls.append(1)
        if len(calls) == 1:  # a non-finite first step for one adapter
            self.store.adapters["a0"].status = "failed"
        return out

    monkeypatch.setattr(MultiAdapterTrainer, "step", step)
    grid = rp.Grid(adapters=(2,), ranks=(4,), batches=(1,), seqs=(16,))
    prof, _ = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=2, warmup=1, quiet=True)
    assert len(calls) == 3 and len(prof.rows) == 1
    assert "1 adapter steps non-finite (re-admitted)" in prof.rows[0].note


def test_memory_fit_from_measured_peaks():
    rows = [CostRecord(model="m", gpu_type="H100", adapters=a, mean_rank=16, per_adapter_batch=b, seq_len=l,
                       step_ms=1.0, peak_mem_bytes=int(3e9 + 2e5 * a * b * l))
            for a in (1, 4) for b in (1, 4) for l in (128, 512)]
    fit = rp.fit_memory(rows, capacity=80e9)
    assert fit is not None and fit.points == 8 and fit.capacity == 80e9
    assert fit.k0 == pytest.approx(3e9, rel=1e-6) and fit.k1 == pytest.approx(2e5, rel=1e-6)
    assert fit.max_rel_err < 1e-6
    assert rp.fit_memory([r.model_copy(update={"peak_mem_bytes": 0}) for r in rows], 80e9) is None


def test_names_and_grid():
    assert rp.gpu_type_of("NVIDIA H100 80GB HBM3") == "H100"
    assert rp.gpu_type_of("NVIDIA H200") == "H200" and rp.gpu_type_of("cpu") == "cpu"
    assert rp.resolve_backbone("llama-3.2-1b", 4) == ("llama-3.2-1b:layers=4", "llama-3.2-1b")
    assert rp.resolve_backbone("llama-3.1-70b:layers=2", 4) == ("llama-3.1-70b:layers=2", "llama-3.1-70b")
    assert rp.resolve_backbone("smollm2", 4) == ("smollm2", "smollm2-135m")
    pts = rp.Grid().points()
    assert len(pts) == 4 * 2 * 2 * 2
    toks = [a * b * s for r, a, b, s in pts if r == 16]
    assert toks == sorted(toks)
    with pytest.raises(ValueError, match="seqs"):
        rp.Grid(seqs=(1,))


def test_every_point_gets_a_fresh_trainer(tmp_path, monkeypatch):
    """A trainer reused across points carried a larger earlier point's memory into later rows'
    peaks (H200, 2026-12-03); each point now builds its own, sized for its adapters."""
    import altoruntime.trainer as rt

    built: list[int] = []
    real_init = rt.MultiAdapterTrainer.__init__

    def counting_init(self, *args, **kwargs):
        built.append(kwargs.get("capacity"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(rt.MultiAdapterTrainer, "__init__", counting_init)
    seen: list[int] = []
    real = rp._time_point

    def spy(trainer, *a, **k):
        seen.append(id(trainer))
        return real(trainer, *a, **k)

    monkeypatch.setattr(rp, "_time_point", spy)
    grid = rp.Grid(adapters=(1, 2), ranks=(4, 8), batches=(1,), seqs=(16,))
    prof, _ = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=0, quiet=True)
    assert len(prof.rows) == 4
    assert sorted(built) == [1, 1, 2, 2]  # one per point, capacity = that point's adapters
    assert len(seen) == 4


def test_rows_keep_their_first_step_and_older_profiles_still_read(tmp_path):
    """The first (untimed) step of each point is kept, survives the CSV round trip, and a profile
    written before the column existed reads with it empty."""
    from altosim.cost import read_cost_profile

    grid = rp.Grid(adapters=(1, 2), ranks=(4,), batches=(1,), seqs=(16,))
    prof, path = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=1, quiet=True)
    assert all(r.first_step_ms is not None and r.first_step_ms > 0 for r in prof.rows)
    assert [r.first_step_ms for r in read_cost_profile(path).rows] == pytest.approx([r.first_step_ms for r in prof.rows])
    lines = path.read_text().splitlines()
    col = lines[0].split(",").index("first_step_ms")
    old = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != col) for line in lines) + "\n"
    (tmp_path / "old.csv").write_text(old)
    assert all(r.first_step_ms is None for r in read_cost_profile(tmp_path / "old.csv").rows)


def test_rows_keep_a_validation_call_and_the_meta_the_actions_costs(tmp_path):
    """Each row times a validation forward as the runtime calls it (one shared 16-row batch for
    min(adapters, 16) adapters) and keeps its first call; the meta keeps a task's start and finish
    (median over points) and admit, snapshot, stop per adapter (total over total count); all
    survive the round trip. `--evals 0` measures no validation."""
    from altosim.cost import read_cost_profile
    from altoruntime.trainer import MultiAdapterTrainer

    calls = []
    real = MultiAdapterTrainer.evaluate_tokens

    def spy(self, batches):
        calls.append(sorted((len(batches), b[0].shape[0], b[0].device.type) for b in batches.values())[0])
        return real(self, batches)

    import unittest.mock as um

    grid = rp.Grid(adapters=(1, 3, 20), ranks=(4,), batches=(1,), seqs=(16,))
    with um.patch.object(MultiAdapterTrainer, "evaluate_tokens", spy):
        prof, path = rp.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=0, evals=2, quiet=True)
    assert calls == [(1, 16, "cpu")] * 3 + [(3, 16, "cpu")] * 3 + [(16, 16, "cpu")] * 3  # 1 untimed + 2, capped at 16
    assert all(r.val_ms is not None and r.first_val_ms is not None and r.eval_ms is None for r in prof.rows)
    costs = prof.overheads["tiny"]
    for name in ("start_task_ms", "admit_ms", "snapshot_ms", "stop_ms", "finish_task_ms", "suspend_ms"):
        assert getattr(costs, name) is not None and getattr(costs, name) > 0, name
    back = read_cost_profile(path)
    assert back.overheads == prof.overheads
    assert [r.val_ms for r in back.rows] == pytest.approx([r.val_ms for r in prof.rows])
    assert [r.first_val_ms for r in back.rows] == pytest.approx([r.first_val_ms for r in prof.rows])
    calls.clear()
    with um.patch.object(MultiAdapterTrainer, "evaluate_tokens", spy):
        prof0, _ = rp.run_profile(["tiny"], grid, tmp_path / "q.csv", steps=1, warmup=0, evals=0, quiet=True)
    assert calls == [] and all(r.val_ms is None for r in prof0.rows)
    with pytest.raises(ValueError, match="evals"):
        rp.run_profile(["tiny"], grid, tmp_path / "r.csv", steps=1, warmup=0, evals=-1, quiet=True)


def test_per_adapter_actions_weigh_points_by_their_adapters():
    assert rp._action_ms([(100.0, 1), (40.0, 1), (70.0, 1)]) == 70.0  # once per point: the median
    assert rp._action_ms([(160.0, 1), (320.0, 4), (1600.0, 32)]) == pytest.approx(2080.0 / 37)


TINY_GRID = ("--backbone", "tiny", "--adapters", "1", "--ranks", "2", "--batches", "1", "--seqs", "8",
             "--steps", "1", "--warmup", "0", "--evals", "0", "--quiet")


@pytest.mark.parametrize("flag, value, words", [
    ("--device", "zzz", ("--device",)),  # was a RuntimeError traceback from torch.device
    ("--device", "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99", ("--device", "not on this machine")),
    ("--device", "meta", ("--device",)),
    ("--batches", "1000000000", ("batches", "at most")),  # was a 64 GB allocation, then a traceback
    ("--seqs", "99999999", ("seqs", "at most")),
    ("--adapters", "100000", ("adapters", "at most")),
    ("--layers", "0", ("--layers",)),  # was "target_modules: no linear layer named 'q_proj'"
    ("--out", "existing_folder", ("--out", "is a folder")),  # was found only after measuring, naming a temp file
    # session 15: unbounded counts (a trillion steps ran on; 0 and -1 failed after --out's folder was made,
    # naming no flag), a grid value listed twice (two rows of one cost-model key), a missing --gguf (measured anyway)
    ("--steps", "0", ("--steps",)), ("--steps", "1000000000000", ("--steps",)), ("--warmup", "-1", ("--warmup",)),
    ("--evals", "-1", ("--evals",)), ("--adapters", "1,1", ("--adapters", "twice")),
    ("--gguf", "nope.gguf", ("nope.gguf", "--gguf", "no such file")),
])
def test_profile_flags_are_checked_before_measuring(tmp_path, monkeypatch, flag, value, words):
    """Bad flags fail before any measuring, naming the flag, and write nothing."""
    from tests._hostile import assert_input_error, cli, deadline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_folder").mkdir()
    argv = [*TINY_GRID, "--out", "p.csv"]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    with deadline(60):  # --steps 1000000000000 measured on and on
        rc, _, err = cli("profile", *argv)
    assert_input_error(rc, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_folder"]


@pytest.mark.parametrize("flag", ["--out", "--gguf"])
def test_profile_never_reads_or_replaces_a_fifo(tmp_path, monkeypatch, flag):
    """--gguf naming a FIFO went to the Hugging Face hub (23 lines of retries); --out naming one
    (or a device: --out /dev/null) was replaced by the profile when it was written."""
    from tests._hostile import assert_input_error, cli, deadline

    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "f.gguf")
    argv = [*TINY_GRID, "--out", "p.csv", flag, "f.gguf"]
    with deadline(60):
        rc, _, err = cli("profile", *argv)
    assert_input_error(rc, err, "f.gguf", "FIFO" if flag == "--gguf" else "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gguf"] and (tmp_path / "f.gguf").is_fifo()
