"""Session 13's hostile-input audit: each class of input that escaped the one-line rule (a traceback,
an error naming no file, a flag out of range taken as given, an output written over an input)
ends in exit code 2, one line naming the file and the field, and nothing written."""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._hostile import CONFIG, WORKLOAD, assert_input_error, cli
from tests.test_hostile_props import SETTINGS, run_hostile, run_ok

HUGE_INT = "9" * 5000  # past Python's 4300-digit int-from-text limit: json.loads raises a bare ValueError
PHILLY = "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:45,30.0,1,30.0,6214e9\n"
CURVES = ("config,samples,train_loss,val_loss\n"
          "a,8,1.0,1.1\na,16,0.9,1.0\nb,8,1.2,1.3\nb,16,1.1,1.2\n")
BASE = {"wl.json": json.dumps(WORKLOAD), "cfg.json": json.dumps(CONFIG)}


def _files(folder: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    """A run folder `alto simulate` wrote (events.jsonl and its tables)."""
    d = tmp_path_factory.mktemp("sim")
    for name, text in BASE.items():
        (d / name).write_text(text)
    rc, _, err = cli("simulate", str(d / "cfg.json"), "--out", str(d / "run"), "-q")
    assert rc == 0, err
    return d / "run"


# ------------------------------------------------ a 5000-digit integer: bare ValueError, no file named

@pytest.mark.parametrize("files, argv, words", [
    ({"wl.json": json.dumps(WORKLOAD), "cfg.json": '{"workload": "wl.json", "cluster": {"gpus": %s}}' % HUGE_INT},
     ("simulate", "cfg.json", "--out", "out", "-q"), ("cfg.json", "4300 digits")),
    ({"wl.json": '{"name": "w", "tasks": [], "x": %s}' % HUGE_INT, "cfg.json": json.dumps(CONFIG)},
     ("simulate", "cfg.json", "--out", "out", "-q"), ("wl.json", "4300 digits")),
    ({"ev.jsonl": '{"meta": {"x": %s}}\n' % HUGE_INT}, ("replay", "ev.jsonl"), ("ev.jsonl", "line 1")),
    ({"c.csv": CURVES}, ("replay-curves", "c.csv", "--out", "out", "--params", '{"cuts": %s}' % HUGE_INT),
     ("--params", "4300 digits")),
    ({"r/events.jsonl": '{"meta": {"x": %s}}\n' % HUGE_INT}, ("check-fidelity", "--run", "r", "--out", "out"),
     ("r/events.jsonl", "line 1")),
])
def test_integer_over_4300_digits_names_the_file(files, argv, words):
    run_hostile(files, *argv, naming=words)


# ------------------------------------------------ run folders read by check-fidelity / profile-from-run

@pytest.mark.parametrize("events, words", [
    (b'{"meta": {}}\n\xff\xfe\n', ("r/events.jsonl", "<file>")),  # not UTF-8: named the file nowhere
    (b'{"meta": {}}\n{"event": {"kind": "task_arrived"}, "actions": 5}\n', ("line 2", "actions")),  # traceback
    (b'{"meta": [1]}\n', ("line 1", "meta")),
    (b'{"meta": null}\n', ("line 1", "meta")),
])
@pytest.mark.parametrize("command", ["check-fidelity", "profile-from-run"])
def test_malformed_run_logs_are_one_line(events, words, command):
    argv = ("check-fidelity", "--run", "r", "--out", "out") if command == "check-fidelity" else (
        "profile-from-run", "r", "--out", "out/p.csv")
    run_hostile({"r/events.jsonl": events}, *argv, naming=words)


def test_unreadable_run_args_names_the_file_once(sim_run, tmp_path):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(sim_run, run)
    (run / "run_args.json").write_bytes(b"\xff[")
    rc, _, err = cli("check-fidelity", "--run", str(run), "--out", str(tmp_path / "out"))
    assert_input_error(rc, err, "run_args.json", "<file>")
    assert err.count("run_args.json") == 1, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------ truncated .csv.gz Philly trace: was a traceback (EOFError)

@pytest.mark.parametrize("cut", [10, 25, 40])
def test_truncated_gzip_philly_trace_is_one_line(cut):
    body = gzip.compress((PHILLY * 50).encode())[:cut]
    run_hostile({"p.csv.gz": body}, "import-trace", "philly", "p.csv.gz", "--out", "out/w.json",
                naming=("p.csv.gz", "<file>"))


# ------------------------------------------------ an --out that is an input: it was overwritten (exit 0)

def test_import_trace_out_cannot_be_the_trace_itself(tmp_path):
    trace = tmp_path / "p.csv"
    trace.write_text(PHILLY)
    rc, _, err = cli("import-trace", "philly", str(trace), "--out", str(trace))
    assert_input_error(rc, err, "--out", "input")
    assert trace.read_text() == PHILLY


@pytest.mark.parametrize("name", ["events.jsonl", "events.csv", "summary.csv"])
def test_profile_from_run_out_cannot_replace_the_run_log(sim_run, tmp_path, name):
    """`events.csv` would write its sidecar `events.meta.json`... and `events.jsonl` is the log
    itself; neither may be replaced by the profile (summary.csv is read for the run's phases)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sim_run, run)
    before = _files(run)
    rc, _, err = cli("profile-from-run", str(run), "--out", str(run / name))
    if name == "events.csv":  # the sidecar events.meta.json is no input: a legitimate output
        assert rc == 0, err
        return
    assert_input_error(rc, err, "--out", "input")
    assert _files(run) == before


def test_profile_from_run_json_out_is_written_whole(sim_run, tmp_path):
    out = tmp_path / "p.json"
    rc, _, err = cli("profile-from-run", str(sim_run), "--out", str(out))
    assert rc == 0, err
    assert json.loads(out.read_text())["rows"] is not None
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temp file left beside it


# ------------------------------------------------ flags out of range that were taken as given

@pytest.mark.parametrize("flag, value", [
    ("--holdout-every", "0"), ("--holdout-every", "-1"), ("--val-rows", "-5"), ("--val-rows", "1" + "0" * 30),
    ("--calibrate-val-rows", "-1"), ("--holdout-every", "nan"),
])
def test_check_fidelity_counts_are_bounded(sim_run, flag, value):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        rc, _, err = cli("check-fidelity", "--run", str(sim_run), "--out", "out", flag, value)
        assert_input_error(rc, err, flag)
        assert not Path("out").exists()


@pytest.mark.parametrize("flag, value", [("--val-rows", "-1"), ("--gpu-type", ""), ("--gpu-type", "x" * 5000),
                                         ("--gpu-type", "../h100"), ("--gpu-type", "a b")])
def test_profile_from_run_flags_are_checked(sim_run, flag, value):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        rc, _, err = cli("profile-from-run", str(sim_run), "--out", "p.csv", flag, value)
        assert_input_error(rc, err, flag)
        assert not any(Path(d).iterdir())


@pytest.mark.parametrize("flag", ["--preset", "--early-exit", "--inter-task"])
def test_empty_policy_names_are_errors_not_defaults(flag):
    run_hostile(BASE, "simulate", "cfg.json", "--out", "out", "-q", flag, "", naming=())


# ------------------------------------------------ a UTF-8 byte-order mark is legitimate input

@pytest.mark.parametrize("which", ["cfg.json", "wl.json"])
def test_bom_in_json_config_and_workload_is_read(which):
    files = dict(BASE)
    files[which] = "\ufeff" + files[which]
    run_ok(files, "simulate", "cfg.json", "--out", "out", "-q")


def test_bom_in_curves_csv_is_read():
    run_ok({"c.csv": "\ufeff" + CURVES}, "replay-curves", "c.csv", "--out", "out")


# ------------------------------------------------ property: any integer flag value outside its range

def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


@SETTINGS
@given(st.one_of(st.integers(max_value=0), st.integers(min_value=10**9 + 1),
                 st.text(max_size=12).filter(lambda s: not _is_int(s))))
def test_holdout_every_outside_its_range_is_one_line(sim_run, value):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        rc, _, err = cli("check-fidelity", "--run", str(sim_run), "--out", "out", f"--holdout-every={value}")
        assert_input_error(rc, err, "--holdout-every")
        assert not Path("out").exists()


# ------------------------------------------------ an empty workload: empty tables and exit 0 before

@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_a_workload_without_tasks_is_refused(command):
    wl = {**WORKLOAD, "tasks": []}
    run_hostile({"wl.json": json.dumps(wl), "cfg.json": json.dumps(CONFIG)}, command, "cfg.json", "--out", "out", "-q",
                naming=("wl.json", "tasks", "empty"))


@pytest.mark.parametrize("rows, words", [
    ("", ("no job rows",)),
    ("2017-10-01 00:00:45,30.0,64,30.0,6214e9\n", ("1 tasks larger than --max-gpus 8",)),
])
def test_import_trace_that_would_write_an_empty_workload_says_why(rows, words):
    head = PHILLY.splitlines()[0] + "\n"
    run_hostile({"p.csv": head + rows}, "import-trace", "philly", "p.csv", "--out", "out/w.json", "--max-gpus", "8",
                naming=("p.csv", "no task to import", *words))


# ------------------------------------------------ an output named like an input in --out replaced it (exit 0)

def _workload_csv() -> str:
    from altosim.schemas import WorkloadTrace
    from altosim.traces_io.workload import workload_csv_text

    return workload_csv_text(WorkloadTrace.model_validate(WORKLOAD))


@pytest.mark.parametrize("command", ["simulate", "sweep"])
@pytest.mark.parametrize("name", ["tasks.csv", "summary.csv", "sweep.csv"])
def test_outputs_never_replace_an_input_in_out(command, name):
    """A workload called tasks.csv (an output name of simulate) read from --out: it was overwritten.
    The input is kept, nothing is written, one line names it."""
    cfg = {**CONFIG, "workload": name}
    files = {name: _workload_csv(), "cfg.json": json.dumps(cfg)}
    clash = (command, name) in {("simulate", "tasks.csv"), ("simulate", "summary.csv"), ("sweep", "sweep.csv")}
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for n, text in files.items():
            Path(n).write_text(text)
        before = _files(Path(d))
        rc, _, err = cli(command, "cfg.json", "--out", ".", "-q")
        if not clash:
            assert rc == 0, err
            assert Path(name).read_text() == files[name]
            return
        assert_input_error(rc, err, "--out", name, "input")
        assert _files(Path(d)) == before


def test_replay_curves_cannot_replace_its_curves():
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        Path("replay.csv").write_text(CURVES)
        rc, _, err = cli("replay-curves", "replay.csv", "--out", ".")
        assert_input_error(rc, err, "replay.csv", "input")
        assert Path("replay.csv").read_text() == CURVES
        assert sorted(p.name for p in Path(d).iterdir()) == ["replay.csv"]


# ------------------------------------------------ finite but absurd times: 1e308 s made every reported time garbage

@pytest.mark.parametrize("field, value", [("arrival", 1e308), ("arrival", 1e10), ("duration_s", 1e308)])
def test_task_times_are_bounded(field, value):
    wl = {**WORKLOAD, "tasks": [{**WORKLOAD["tasks"][0], field: value}]}
    run_hostile({"wl.json": json.dumps(wl), "cfg.json": json.dumps(CONFIG)}, "simulate", "cfg.json", "--out", "out",
                "-q", naming=("wl.json", f"tasks[0].{field}", "1000000000"))


@pytest.mark.parametrize("rows, words", [
    ("2017-10-01 00:00:45,1e308,1,30.0,c\n", ("line 2", "duration", "more than")),
    ("1900-10-01 00:00:45,30,1,30.0,c\n2100-10-01 00:00:45,30,1,30.0,c\n", ("line 3", "timestamp", "span")),
])
def test_philly_times_are_bounded(rows, words):
    head = PHILLY.splitlines()[0] + "\n"
    run_hostile({"p.csv": head + rows}, "import-trace", "philly", "p.csv", "--out", "out/w.json",
                naming=("p.csv", *words))
