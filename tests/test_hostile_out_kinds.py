"""Session 17's audit: a folder in --out named like an output file. `alto simulate`, `sweep` and
`replay-curves` removed it, with the user's files in it (the staged output replaced it after a
`shutil.rmtree`), exit 0. Each is now one line naming it, and the folder is kept. (`alto run`,
which writes straight into --out: tests/altoruntime/test_run_hostile_models.py.)"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import pytest

from tests._hostile import assert_input_error, cli
from tests.test_hostile_escapes import BASE, CURVES


@pytest.mark.parametrize("argv, name", [
    (("simulate", "cfg.json", "--out", "out", "-q"), "summary.csv"),
    (("simulate", "cfg.json", "--out", "out", "-q"), "gantt.png"),
    (("sweep", "cfg.json", "--policies", "full", "--out", "out", "-q"), "sweep.csv"),
    (("replay-curves", "c.csv", "--out", "out"), "replay.csv"),
])
def test_a_users_folder_named_like_an_output_is_kept(argv, name):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for n, text in {**BASE, "c.csv": CURVES}.items():
            Path(n).write_text(text)
        Path("out", name).mkdir(parents=True)
        Path("out", name, "mine.txt").write_text("kept")
        rc, _, err = cli(*argv)
        assert_input_error(rc, err, "--out", name, "is a folder")
        assert Path("out", name, "mine.txt").read_text() == "kept"
        assert sorted(str(p) for p in Path("out").rglob("*")) == [f"out/{name}", f"out/{name}/mine.txt"]


def test_outputs_still_replace_old_outputs():
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for n, text in BASE.items():
            Path(n).write_text(text)
        for _ in range(2):
            rc, _, err = cli("simulate", "cfg.json", "--out", "out", "-q")
            assert rc == 0, err
        assert json.loads(Path("out/events.jsonl").read_text().splitlines()[0])["meta"]
