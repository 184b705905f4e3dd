"""Kill and resume: a run SIGKILLed mid-way resumes from its checkpoint and reaches the same losses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from altoruntime import checkpoint
from altoruntime.checkpoint import load_checkpoint, save_checkpoint
from tests.altoruntime import _kill_resume_run as script
from tests._signals import as_interrupt

TOTAL = 7


@pytest.mark.slow  # two real subprocesses (SIGKILL, then resume)
def test_killed_run_resumes_to_the_same_losses(tmp_path):
    reference = script.run(tmp_path / "ref.pt", None, TOTAL)
    ckpt, log = tmp_path / "ck.pt", tmp_path / "log.jsonl"
    cmd = [sys.executable, script.__file__, str(ckpt), str(log), str(TOTAL)]
    # timeouts guard against a hang, not for speed: the whole test took 67 s at load 8 (2-core machine)
    first = subprocess.run(cmd + ["5"], capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr  # really killed, after step 5 (checkpoint at 4)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 5, 6, 7]  # step 5 ran twice
    by_step = {r["step"]: r["losses"] for r in rows}  # the resumed run's value wins
    for ref in reference:
        for j, loss in ref["losses"].items():
            assert by_step[ref["step"]][j] == pytest.approx(loss, rel=1e-6), (ref["step"], j)


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    tr = script.new_trainer()
    path = save_checkpoint(tmp_path / "c.pt", tr, {"step": 1})
    tr.step({j: script.batch(j, 0) for j in script.JOBS})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, tr, {"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    fresh = script.new_trainer()
    assert load_checkpoint(path, fresh) == {"step": 1}
    assert fresh.step_count("a") == 0


class _SignalsWhilePickled:
    """Sends SIGTERM when torch.save pickles it: an interrupt in the middle of the zip record."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGTERM)
        return (dict, ())


def test_sigterm_while_saving_lands_the_checkpoint_then_interrupts(tmp_path):
    """`alto run` turns SIGTERM into Ctrl-C; one arriving inside torch.save could surface as torch's
    RuntimeError ("unexpected pos", a traceback in CI) or leave the older checkpoint. The interrupt now
    waits until the new file is in place."""
    tr = script.new_trainer()
    path = save_checkpoint(tmp_path / "c.pt", tr, {"step": 1})
    tr.step({j: script.batch(j, 0) for j in script.JOBS})
    before = signal.signal(signal.SIGTERM, as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, tr, {"step": 2, "probe": _SignalsWhilePickled()})
    finally:
        signal.signal(signal.SIGTERM, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    fresh = script.new_trainer()
    assert load_checkpoint(path, fresh) == {"step": 2, "probe": {}}
    assert fresh.step_count("a") == 1


def test_load_rejects_missing_or_foreign_file(tmp_path):
    tr = script.new_trainer()
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", tr)
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a runtime checkpoint"):
        load_checkpoint(tmp_path / "x.pt", tr)
