"""Session 17's audit of the experiment scripts users run with --out: experiments/plot_e2e.py and
merge_e2e.py met a FIFO by blocking forever, an --out that is a file, non-UTF-8 bytes, an empty
file or a wall time of text or inf with a traceback, a wall time of 0 or -5 with a plot of a log
axis from 0 (exit 0), a row wider than its header by shifting every value one column over, and
`--out ""` by writing into the working folder. Each ends in one line on stderr naming the file
and the field, exit code 2, nothing written. Each test failed on the code before the fix."""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._hostile import deadline
from tests.test_hostile_props import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import merge_e2e  # noqa: E402
import plot_e2e  # noqa: E402

OK = "method,wall_s\nbatched,10\n"
BASELINE = "method,wall_s\nraytune_asha_default,20\n"


def _script(main, files: dict[str, str | bytes | None], *argv: str) -> tuple[int, str, set[str]]:
    """`main(argv)` in a fresh folder holding `files` (None: a FIFO with no writer), under a
    deadline: (exit code, stderr, the folder's files afterwards)."""
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for name, data in files.items():
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                os.mkfifo(name)
            else:
                Path(name).write_bytes(data if isinstance(data, bytes) else data.encode())
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), deadline(30):
            try:
                main(list(argv))
                rc = 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
        return rc, err.getvalue(), {str(p.relative_to(d)) for p in Path(d).rglob("*")}


def _one_line(rc: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


BAD_CSVS = [  # (file content, words the line names)
    (None, ("FIFO",)),  # blocked forever
    (b"\xff\xfe\x00m", ("cannot read",)),  # UnicodeDecodeError traceback
    ("", ("empty",)),  # EmptyDataError traceback
    ("method,wall_s\nbatched,abc\n", ("line 2", "wall_s", "'abc'")),  # TypeError traceback
    ("method,wall_s\nbatched,inf\n", ("line 2", "wall_s", "'inf'")),  # "Axis limits cannot be NaN or Inf"
    ("method,wall_s\nbatched,0\n", ("line 2", "wall_s")),  # exit 0, a log axis from 0
    ("method,wall_s\nbatched,-5\n", ("line 2", "wall_s")),  # exit 0
    ("method,wall_s\nbatched,10,5\n", ("more cells than the header",)),  # '10' became the index, wall_s 5
]


@pytest.mark.parametrize("content, words", BAD_CSVS)
def test_plot_e2e_refuses_a_csv_it_cannot_plot(content, words):
    rc, err, files = _script(plot_e2e.main, {"x.csv": content}, "x.csv")
    _one_line(rc, err, "x.csv", *words)
    assert files == {"x.csv"}


@pytest.mark.parametrize("content, words", BAD_CSVS)
def test_merge_e2e_refuses_a_csv_it_cannot_merge(content, words):
    """merge_e2e.py said bytes, an empty file and wall times of text, 0 or -5 in one line already
    (naming no row); the FIFO (blocked), inf and the too-wide row (exit 0) escaped it."""
    rc, err, files = _script(merge_e2e.main, {"e2e.csv": OK, "x.csv": content}, "e2e.csv", "x.csv", "--out", "o")
    _one_line(rc, err, "x.csv", *words)
    assert files == {"e2e.csv", "x.csv"}


@pytest.mark.parametrize("main, argv, words", [
    (merge_e2e.main, ("e2e.csv", "b.csv", "--out", "b.csv"), ("--out", "is a file")),  # FileExistsError traceback
    (merge_e2e.main, ("e2e.csv", "b.csv", "--out", ""), ("--out", "empty path")),  # wrote into the working folder
    (merge_e2e.main, ("e2e.csv", "e2e_merged.csv", "--out", "."), ("--out", "e2e_merged.csv", "input")),  # replaced it
    (plot_e2e.main, ("e2e.csv", "--out", "sub"), ("--out", "is a folder")),  # IsADirectoryError traceback
    (plot_e2e.main, ("e2e.csv", "--out", "e2e.csv"), ("--out", "input")),  # the CSV replaced by its plot
])
def test_an_out_that_cannot_be_written_is_one_line(main, argv, words):
    files = {"e2e.csv": OK, "b.csv": BASELINE, "e2e_merged.csv": BASELINE, "sub/keep": "x"}
    rc, err, after = _script(main, files, *argv)
    _one_line(rc, err, *words)
    assert after == set(files) | {"sub"}


def test_good_csvs_still_merge_and_plot():
    rc, err, files = _script(merge_e2e.main, {"e2e.csv": OK, "b.csv": BASELINE}, "e2e.csv", "b.csv", "--out", "o")
    assert rc == 0, err
    assert {"o/e2e_merged.csv", "o/e2e_merged.png"} <= files and not [f for f in files if "/." in f]


@SETTINGS
@given(st.one_of(st.floats(max_value=0), st.sampled_from([math.inf, -math.inf, math.nan]),
                 st.text(alphabet="abcxyz ,;-", min_size=1, max_size=6)))
def test_any_wall_time_that_is_not_a_positive_number_is_refused(wall):
    """Every row's wall_s must be a finite number > 0: a speedup is a ratio of two of them."""
    text = f'method,wall_s\nbatched,10\nother,"{wall}"\n'
    rc, err, files = _script(merge_e2e.main, {"e2e.csv": OK, "x.csv": text}, "e2e.csv", "x.csv", "--out", "o")
    _one_line(rc, err, "x.csv", "wall_s")
    assert files == {"e2e.csv", "x.csv"}


# ------------------------------------------------ experiments/e2e_sweep.py: every bad flag was a traceback

TINY = ("--backbone", "tiny", "--n-train", "8", "--n-val", "4", "--n-eval", "0", "--epochs", "1", "--evals", "2",
        "--ranks", "2", "--methods", "batched")


@pytest.mark.parametrize("argv, words", [
    (("--ranks", "abc"), ("--ranks",)),  # ValueError traceback
    (("--lrs", "nan"), ("--lrs",)),  # pydantic traceback
    (("--n-train", "0"), ("--n-train",)),  # pydantic traceback
    (("--evals", "0"), ("--evals",)),  # ZeroDivisionError traceback
    (("--seq-len", "1"), ("--seq-len",)),  # InputError traceback, the workload written
    (("--dataset", "nope"), ("--dataset", "unknown dataset")),  # InputError traceback, the workload written
    (("--backbone", "nope"), ("--backbone",)),  # InputError traceback, the workload written
    (("--out", "f.csv"), ("--out", "is a file")),  # FileExistsError traceback
    (("--methods", "bogus"), ("--methods", "bogus")),  # exit 1
    (("--methods", "batched,batched"), ("--methods", "twice")),  # the second run replaced the first
    (("--warmup", "inf"), ("--warmup",)),
    (("--methods", "early_exit", "--reference-trace", "nope"), ("nope.meta.json",)),  # said after the whole run
])
def test_e2e_sweep_bad_flags_are_one_line_before_anything_is_written(monkeypatch, argv, words):
    import e2e_sweep

    monkeypatch.setattr(sys, "argv", ["e2e_sweep.py", *TINY, "--out", "out", *argv])
    term = signal.getsignal(signal.SIGTERM)
    try:
        rc, err, files = _script(lambda _: e2e_sweep.main(), {"f.csv": "x"})
    finally:  # main installs its own SIGTERM handler
        signal.signal(signal.SIGTERM, term)
    _one_line(rc, err, *words)
    assert files == {"f.csv"}
