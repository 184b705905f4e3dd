"""experiments/stress_interrupts.py classes each SIGTERMed run by how it ended; a wrong class would
hide a traceback or a lost stop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stress_interrupts", ROOT / "experiments" / "stress_interrupts.py")
stress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stress)


def _out(tmp_path: Path, summary: bool, ckpt: bool) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    if summary:
        (out / "summary.csv").write_text("x\n")
    if ckpt:
        (out / "run.ckpt").write_bytes(b"")
    return out


@pytest.mark.parametrize("rc, err, summary, ckpt, expected", [
    (130, "alto run: interrupted after 3 s; partial outputs in o/; rerun ...\n", False, True, "stopped"),
    (130, "alto: interrupted\n", True, False, "stopped"),
    (0, "", True, False, "finished"),
    (-15, "", True, False, "killed_in_teardown"),
    (-15, "", True, True, "bad"),  # killed before the run finished: the checkpoint is still there
    (-15, "", False, False, "bad"),
    (0, "Exception ignored in: <function Group.__del__>\nTraceback ...\nKeyboardInterrupt\n", True, False, "bad"),
    (-6, "Fatal Python error: Aborted\n", False, True, "bad"),
    (-2, "alto: interrupted\n", False, True, "bad"),
    (130, "alto: interrupted\nTraceback (most recent call last):\n", False, True, "bad"),
])
def test_verdicts(tmp_path, rc, err, summary, ckpt, expected):
    assert stress.verdict(rc, err, _out(tmp_path, summary, ckpt)) == expected
