"""Session 17's audit: `alto check-fidelity` and `alto profile-from-run` read a run's events.jsonl
without the checks `alto replay` holds each event to. A step report whose `now` was null was a
TypeError traceback; "x" a bare "could not convert string to float" naming no file; -5 simpy's
"Negative delay"; NaN, inf, true or 1e300 a fidelity report (and a cost profile of 1e302 ms
steps) written with exit 0. Every reader now holds each event to `altosim.replay.event_problem`."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._hostile import assert_input_error, cli
from tests.test_hostile_escapes import sim_run  # noqa: F401  # the module-scoped run folder fixture
from tests.test_hostile_props import SETTINGS

BAD_NOW = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.floats(max_value=-1e-9),
                    st.floats(min_value=1e12 + 1), st.sampled_from([math.nan, math.inf, -math.inf]),
                    st.lists(st.integers(), max_size=2))


def _with_now(run: Path, folder: Path, now) -> int:
    """A copy of `run` in `folder` whose first step report happened at `now`; its log line number."""
    shutil.copytree(run, folder)
    lines = (folder / "events.jsonl").read_text().splitlines()
    i = next(k for k, s in enumerate(lines) if '"step_report"' in s)
    rec = json.loads(lines[i])
    rec["event"]["now"] = now
    lines[i] = json.dumps(rec, allow_nan=True)
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return i + 1


@SETTINGS
@given(BAD_NOW, st.sampled_from(["check-fidelity", "profile-from-run"]))
def test_an_event_time_no_run_could_log_is_one_line(sim_run, now, command):  # noqa: F811
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        line = _with_now(sim_run, Path("r"), now)
        argv = ("check-fidelity", "--run", "r", "--out", "out") if command == "check-fidelity" else (
            "profile-from-run", "r", "--out", "out/p.csv")
        rc, _, err = cli(*argv)
        assert_input_error(rc, err, "r/events.jsonl", f"line {line}", "now")
        assert not Path("out").exists()


@pytest.mark.parametrize("now", [0.5, 1e9])
def test_an_ordinary_event_time_still_reads(sim_run, tmp_path, now):  # noqa: F811
    _with_now(sim_run, tmp_path / "r", now)
    rc, _, err = cli("profile-from-run", str(tmp_path / "r"), "--out", str(tmp_path / "p.csv"))
    assert rc == 0 or "now" not in err, err


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "x"])
def test_a_run_summary_phase_that_is_no_time_is_refused(sim_run, tmp_path, value):  # noqa: F811
    """summary.csv's `<phase>_s` seconds: nan, -5 and inf were charged as given."""
    from altosim.errors import InputError
    from altosim.fidelity.runlog import run_phases

    (tmp_path / "summary.csv").write_text(f"tasks,wall_s,step_s\n1,2.0,{value}\n")
    with pytest.raises(InputError) as e:
        run_phases(tmp_path)
    assert e.value.field == "step_s" and "summary.csv" in e.value.file


@pytest.mark.parametrize("argv, words", [
    # an empty path was read as the flag left out (session 20's probe)
    (("check-fidelity", "--run", "{run}", "--config", "", "--out", "{out}"), ("<args>: --config", "empty")),
    (("check-fidelity", "--run", "{run}", "--profile", " ", "--out", "{out}"), ("<args>: --profile", "empty")),
    (("check-fidelity", "--run", "{run}", "--calibrate-from", "", "--out", "{out}"), ("--calibrate-from", "empty")),
    (("check-fidelity", "--run", "", "--out", "{out}"), ("<args>: --run", "empty")),
    # the folder that is missing is named by its own flag (both were called --run)
    (("check-fidelity", "--run", "{run}", "--calibrate-from", "{missing}", "--out", "{out}"),
     ("--calibrate-from: no such run folder",)),
    (("profile-from-run", "{missing}", "--out", "{out}/p.csv"), (": run: no such run folder",)),
])
def test_empty_or_missing_run_inputs_are_named_by_their_flag(sim_run, tmp_path, argv, words):  # noqa: F811
    fill = {"run": str(sim_run), "out": str(tmp_path / "out"), "missing": str(tmp_path / "missing")}
    rc, _, err = cli(*(a.format(**fill) for a in argv))
    assert_input_error(rc, err, *words)
    assert not (tmp_path / "out").exists()


def test_check_fidelity_takes_both_as_its_help_says(sim_run, tmp_path):  # noqa: F811
    rc, out, err = cli("check-fidelity", "--run", str(sim_run), "--costs", "both", "--out", str(tmp_path / "o"))
    assert rc == 0, err
    assert any((tmp_path / "o").glob("fidelity_*.csv"))


@pytest.mark.parametrize("field, value", [("num_gpus", "x"), ("batching", "maybe"), ("replan_shift", [1])])
def test_a_controller_setting_of_the_wrong_type_is_named(sim_run, tmp_path, field, value):  # noqa: F811
    """The Controller compared them later: `'<' not supported between 'str' and 'int'` (session 20's probe)."""
    lines = (sim_run / "events.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    head["meta"]["controller"][field] = value
    (tmp_path / "e.jsonl").write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    rc, _, err = cli("replay", str(tmp_path / "e.jsonl"))
    assert_input_error(rc, err, f"line 1.meta.controller.{field}")
