"""experiments/stress_interrupts.py classes each SIGTERMed run by how it ended; a wrong class would
hide a traceback or a lost stop."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pandas as pd
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


@pytest.mark.parametrize("folder", ["stress_interrupts", "stress_interrupts_ray", "stress_interrupts_ray_start"])
def test_the_readme_command_beside_each_committed_table_draws_its_delays(folder):
    """The README names, beside each committed table's figures, the command that made it: its runs,
    delays and seed draw the table's `delay_s` column again."""
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    cmds = {}
    for m in re.finditer(r"`results/(stress_interrupts[a-z_]*)/`, from `python\s+experiments/stress_interrupts\.py([^`]*)`",
                         readme):
        args = shlex.split(m.group(2))
        cmds[m.group(1)] = {k.lstrip("-"): v for k, v in zip(args[::2], args[1::2])}
    a = cmds[folder]
    table = pd.read_csv(ROOT / "results" / folder / "stress_interrupts.csv")
    got = stress.delays(int(a.get("runs", 60)), float(a.get("min-delay", 0.5)), float(a.get("max-delay", 7.0)),
                        int(a.get("seed", 0)))
    assert [round(d, 3) for d in got] == table["delay_s"].tolist()
    assert set(table["engine"]) == {a.get("engine", "local")}
