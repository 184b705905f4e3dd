"""Session 17's audit of the other experiment scripts a user runs (README "Commands"): a bad flag
or input was a traceback (ValueError, FileExistsError, InputError uncaught), `--out` naming a file
was said only after the whole study, and fused_calls_summary.py blocked forever on a FIFO. Each
now ends in one line on stderr and exit code 2 (experiments/script_errors.py), nothing written."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import tempfile
from pathlib import Path

import pytest

from tests._hostile import deadline

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, files: dict[str, str | None], *argv: str) -> tuple[int, str, set[str]]:
    """`python experiments/NAME.py ARGV` in-process (its __main__ block), in a fresh folder holding
    `files` (None: a FIFO with no writer): exit code, stderr, the folder's files afterwards."""
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for f, text in files.items():
            os.mkfifo(f) if text is None else Path(f).write_text(text)
        err = io.StringIO()
        old_argv, old_path = sys.argv, list(sys.path)
        sys.argv, sys.path[:0] = [name, *argv], [str(ROOT / "experiments")]
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), deadline(60):
                try:
                    runpy.run_path(str(ROOT / "experiments" / f"{name}.py"), run_name="__main__")
                    rc = 0
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv, sys.path[:] = old_argv, old_path
        return rc, err.getvalue(), {str(p.relative_to(d)) for p in Path(d).rglob("*")}


@pytest.mark.parametrize("name, files, argv, words", [
    ("fused_calls_summary", {"c.csv": None}, ("c.csv", "--out", "o"), ("c.csv", "FIFO")),  # blocked forever
    ("sim_ablation", {"f.txt": "x"}, ("--out", "f.txt"), ("--out", "is a file")),  # FileExistsError after 12 s
    ("bench_sim", {"f.txt": "x"}, ("--tasks", "2", "--gpus", "2", "--out", "f.txt"), ("--out", "is a file")),
    ("bench_sim", {}, ("--tasks", "0"), ("--tasks", "must be in [1,")),  # InputError traceback, then the parser's range
    ("predict_parallel", {}, ("--gpus", "0", "--out", "o"), ("gpus",)),  # ValueError traceback
    ("predict_parallel", {}, ("--batches", "abc", "--out", "o"), ("abc",)),  # ValueError traceback
    ("predict_parallel", {}, ("--profile", "nope.csv", "--out", "o"), ("nope.csv", "no such file")),
])
def test_a_script_given_bad_input_says_one_line(name, files, argv, words):
    rc, err, after = _script(name, files, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    # the script's own one-line error, or the parser's (`<script>.py: error: <args>: ...`)
    assert (lines[0].startswith("error: ") or lines[0].startswith(f"{name}.py: error: <args>: ")), lines[0]
    assert all(w in lines[0] for w in words), lines[0]
    assert after == set(files)
