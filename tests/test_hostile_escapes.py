"""Session 13's hostile-input audit: each class of input that escaped the one-line rule (a traceback,
an error naming no file, a flag out of range taken as given, an output written over an input)
ends in exit code 2, one line naming the file and the field, and nothing written. Session 15's
audit (FIFO inputs, keys and columns given twice, YAML alias bombs, outputs over devices) follows."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._hostile import CONFIG, LOSS_SET, WORKLOAD, assert_input_error, cli, deadline
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


def test_import_trace_empty_loss_traces_is_refused_not_the_embedded_pool(tmp_path):
    """`--loss-traces ''` (an unset shell variable) was taken as the flag left out (session 20)."""
    trace = tmp_path / "p.csv"
    trace.write_text(PHILLY)
    rc, _, err = cli("import-trace", "philly", str(trace), "--loss-traces", "", "--out", str(tmp_path / "o" / "w.json"))
    assert_input_error(rc, err, "<args>: --loss-traces", "empty")
    assert not (tmp_path / "o").exists()


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


# ================================================ session 15's audit: what still escaped

def _in_folder(setup: dict[str, str | bytes | None], *argv: str, naming: tuple[str, ...] = ()) -> str:
    """Files (None: a FIFO with no writer) in a fresh working folder, `alto ARGV` run there under
    a deadline; the one-line error naming each of `naming`, and nothing written or changed."""
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        here = Path(d)
        for name, data in setup.items():
            (here / name).parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                os.mkfifo(here / name)
            else:
                (here / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        before = _files(here)
        with deadline(30):
            rc, _, err = cli(*argv)
        assert_input_error(rc, err, *naming)
        assert _files(here) == before
        return err


# ------------------------------------------------ a FIFO given as an input file blocked the read forever

CFG_NAMING = lambda key, name: json.dumps({**CONFIG, key: name})  # noqa: E731


@pytest.mark.parametrize("setup, argv, fifo", [
    (BASE, ("simulate", "x.yaml", "--out", "out", "-q"), "x.yaml"),
    ({"cfg.json": CFG_NAMING("workload", "w.json")}, ("simulate", "cfg.json", "--out", "out", "-q"), "w.json"),
    ({**BASE, "cfg.json": CFG_NAMING("cost_profile", "c.csv")}, ("simulate", "cfg.json", "--out", "out", "-q"), "c.csv"),
    (BASE, ("sweep", "x.json", "--policies", "full", "--out", "out", "-q"), "x.json"),
    ({}, ("replay", "ev.jsonl"), "ev.jsonl"),
    ({}, ("replay-curves", "c.csv", "--out", "out"), "c.csv"),
    ({}, ("import-trace", "philly", "p.csv", "--out", "out/w.json"), "p.csv"),
    ({"p.csv": PHILLY, "lt/a__b.csv": "x"}, ("import-trace", "philly", "p.csv", "--out", "out/w.json", "--loss-traces",
                                             "lt"), "lt/a__b.meta.json"),
    ({}, ("check-fidelity", "--run", "r", "--out", "out"), "r/events.jsonl"),
    ({}, ("profile-from-run", "r", "--out", "out/p.csv"), "r/events.jsonl"),
])
def test_a_fifo_input_is_refused_not_read(setup, argv, fifo):
    _in_folder({**setup, fifo: None}, *argv, naming=(fifo, "FIFO"))


def test_a_folder_given_as_a_file_says_so():
    _in_folder({"c.csv/x": "y"}, "replay-curves", "c.csv", "--out", "out", naming=("c.csv", "is a folder"))


@pytest.mark.parametrize("argv", [("import-trace", "philly", "p.csv", "--out", "w.json"),
                                  ("profile-from-run", "r", "--out", "w.json")])
def test_an_output_file_never_replaces_a_fifo_or_device(sim_run, argv):
    """`--out /dev/null` (as root) replaced the device node by a regular file: the rename of the
    finished output goes to whatever the path holds. A FIFO stands in for the device here."""
    argv = tuple(str(sim_run) if a == "r" else a for a in argv)
    _in_folder({"p.csv": PHILLY, "w.json": None}, *argv, naming=("--out", "not a regular file"))


# ------------------------------------------------ a key given twice: the last one was used, silently

@pytest.mark.parametrize("files, argv, words", [
    ({**BASE, "cfg.yaml": "workload: wl.json\ncluster: {gpus: 2}\ncluster: {gpus: 1}\n"},
     ("simulate", "cfg.yaml", "--out", "out", "-q"), ("cfg.yaml", "line 3", "cluster", "twice")),
    ({**BASE, "cfg.json": '{"workload": "wl.json", "cluster": {"gpus": 2, "gpus": 1}}'},
     ("simulate", "cfg.json", "--out", "out", "-q"), ("cfg.json", "gpus", "twice")),
    ({**BASE, "wl.json": BASE["wl.json"][:-1] + ', "name": "other"}'},
     ("simulate", "cfg.json", "--out", "out", "-q"), ("wl.json", "name", "twice")),
    ({"c.csv": CURVES}, ("replay-curves", "c.csv", "--out", "out", "--params", '{"cuts": 3, "cuts": 5}'),
     ("--params", "cuts", "twice")),
])
def test_a_key_given_twice_is_refused(files, argv, words):
    run_hostile(files, *argv, naming=words)


def test_yaml_merge_keys_may_still_be_overridden():
    cfg = "base: &b {gpus: 1}\nworkload: wl.json\ncluster:\n  <<: *b\n  gpus: 2\n"
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):  # `base` is no config field: refused as such
        for n, t in {**BASE, "cfg.yaml": cfg}.items():
            Path(n).write_text(t)
        rc, _, err = cli("simulate", "cfg.yaml", "--out", "out", "-q")
        assert_input_error(rc, err, "cfg.yaml", "base", "unknown field")
    from altosim.files import loads_yaml

    assert loads_yaml(cfg, "c.yaml")["cluster"] == {"gpus": 2}


# ------------------------------------------------ YAML aliases: a billion laughs hung `alto simulate` (repr of the value)

_BOMB = "".join(f"      {c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("params, words", [
    ("    params:\n      x: &a [1,1,1,1,1,1,1,1,1]\n" + _BOMB, ("aliases expand to more than",)),
    ("    params: &p\n      x: *p\n", ("cycle",)),
])
def test_yaml_alias_bombs_and_cycles_are_refused(params, words):
    cfg = "workload: wl.json\npolicy:\n  early_exit:\n    name: alto\n" + params
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for n, t in {**BASE, "cfg.yaml": cfg}.items():
            Path(n).write_text(t)
        with deadline(30):
            rc, _, err = cli("simulate", "cfg.yaml", "--out", "out", "-q")
        assert_input_error(rc, err, "cfg.yaml", *words)
        assert not Path("out").exists()


@pytest.mark.parametrize("value", ["9" * 5000, "2020-13-45"])
def test_a_yaml_value_its_constructor_refuses_names_the_file(value):
    """PyYAML's int and date constructors raise a bare ValueError: it came out naming no file."""
    run_hostile({**BASE, "cfg.yaml": f"workload: wl.json\nseed: {value}\n"}, "simulate", "cfg.yaml", "--out", "out",
                "-q", naming=("cfg.yaml", "<yaml>"))


def test_an_empty_yaml_config_is_not_the_default_study():
    """An empty (or comments-only) YAML file ran the embedded 11-task study and wrote it to --out."""
    for text in ("", "# nothing yet\n"):
        run_hostile({"cfg.yaml": text}, "simulate", "cfg.yaml", "--out", "out", "-q", naming=("cfg.yaml", "empty"))


# ------------------------------------------------ a CSV column given twice, a row wider than its header

@pytest.mark.parametrize("files, argv, words", [
    ({"c.csv": "config,samples,train_loss,val_loss,val_loss\na,8,1.0,1.1,5\na,16,0.9,1.0,5\n"},
     ("replay-curves", "c.csv", "--out", "out"), ("c.csv", "line 1", "val_loss", "twice")),
    ({"p.csv": "timestamp,duration,num_gpus,num_gpus\n2017-10-01 00:00:00,100,1,8\n"},
     ("import-trace", "philly", "p.csv", "--out", "out/w.json"), ("p.csv", "num_gpus", "twice")),
    ({"wl.csv": "id,id,arrival,model,dataset,gpus,samples_per_job,search_space\n", "cfg.json": CFG_NAMING("workload",
                                                                                                        "wl.csv")},
     ("simulate", "cfg.json", "--out", "out", "-q"), ("wl.csv", "line 1", "id", "twice")),
])
def test_a_csv_column_given_twice_is_refused(files, argv, words):
    run_hostile(files, *argv, naming=words)


def test_a_loss_trace_row_wider_than_its_header_is_refused():
    """pandas made a too-wide row's leading cell the index: every value moved one column over."""
    from tests.test_hostile_props import _loss_files, _loss_run

    text, meta = _loss_files()
    wide = "\n".join(line + ",0" if i else line for i, line in enumerate(text.splitlines())) + "\n"
    run_hostile(_loss_run(wide, meta), "simulate", "cfg.json", "--out", "out", "-q",
                naming=(LOSS_SET, "more cells than the header"))


# ------------------------------------------------ replay-curves: samples past any bound, flags named wrong

@pytest.mark.parametrize("cell, words", [("1e30", ("samples", "must be in", "got 1e30")),
                                         ("9" * 400, ("samples", "must be in", "more characters"))])
def test_curve_samples_are_bounded(cell, words):
    """1e30 came out as a RuntimeWarning plus a 3-line pydantic dump; 400 digits as OverflowError."""
    run_hostile({"c.csv": CURVES.replace("a,16,", f"a,{cell},")}, "replay-curves", "c.csv", "--out", "out",
                naming=("c.csv", "line 3", *words))


@pytest.mark.parametrize("params, words", [("[" * 5000 + "]" * 5000, ("--params", "nested")),
                                           ('{"cuts": NaN}', ("--params", "cuts"))])
def test_replay_curves_params_problems_name_params(params, words):
    run_hostile({"c.csv": CURVES}, "replay-curves", "c.csv", "--out", "out", "--params", params, naming=words)


def test_a_curve_hyperparameter_out_of_range_names_its_column():
    text = "config,samples,train_loss,val_loss,rank\na,8,1.0,1.1,0\na,16,0.9,1.0,0\n"
    err = run_hostile_err({"c.csv": text}, "replay-curves", "c.csv", "--out", "out", naming=("c.csv", "rank", "'a'"))
    assert "validation error" not in err  # pydantic's multi-part text was echoed


def run_hostile_err(files, *argv, naming=()):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        for n, t in files.items():
            Path(n).write_text(t)
        rc, _, err = cli(*argv)
        assert_input_error(rc, err, *naming)
        return err


# ------------------------------------------------ an empty --out fell back to the default folder (or to none)

@pytest.mark.parametrize("argv", [("simulate", "cfg.json", "--out", "", "-q"),
                                  ("replay-curves", "c.csv", "--out", "")])
def test_an_empty_out_is_an_error_not_the_default(argv):
    run_hostile({**BASE, "c.csv": CURVES}, *argv, naming=("--out", "empty path"))


# ------------------------------------------------ a list given twice: the same rows twice in the output

@pytest.mark.parametrize("argv, flag", [
    (("sweep", "cfg.json", "--policies", "full,full", "--out", "out", "-q"), "--policies"),
])
def test_a_preset_listed_twice_is_refused(argv, flag):
    run_hostile(BASE, *argv, naming=(flag, "twice"))


def test_check_fidelity_costs_listed_twice(sim_run):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        rc, _, err = cli("check-fidelity", "--run", str(sim_run), "--out", "out", "--costs", "model,model")
        assert_input_error(rc, err, "--costs", "twice")
        assert not Path("out").exists()


# ------------------------------------------------ run folders: run_args.json's n_val taken as given, nesting unnamed

@pytest.mark.parametrize("n_val, words", [("-5", ("greater than or equal to 0",)), ("2.7", ("fractional",)),
                                          ("true", ("boolean",)), ("1e30", ()), ("Infinity", ("finite",)),
                                          ('"12"x', ("<json>",))])
def test_run_args_n_val_is_checked(sim_run, tmp_path, n_val, words):
    """-5, 2.7, true and 1e30 were used as given (exit 0); Infinity was an OverflowError traceback."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sim_run, run)
    (run / "run_args.json").write_text('{"n_val": %s}' % n_val)
    rc, _, err = cli("check-fidelity", "--run", str(run), "--out", str(tmp_path / "out"))
    assert_input_error(rc, err, "run_args.json", *words)
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_run_log_line_names_the_file(sim_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sim_run, run)
    head = (run / "events.jsonl").read_text().splitlines()[0]
    (run / "events.jsonl").write_text(head + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    rc, _, err = cli("profile-from-run", str(run), "--out", str(tmp_path / "p.csv"))
    assert_input_error(rc, err, "events.jsonl", "line 2", "nested")


# ------------------------------------------------ --out under a link loop: an OSError naming no flag

def test_out_under_a_symlink_loop_names_the_flag(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "wl.json").write_text(json.dumps(WORKLOAD))
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    rc, _, err = cli("simulate", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "loop" / "x"), "-q")
    assert_input_error(rc, err, "--out", "symbolic links")


# ------------------------------------------------ property: any mapping with a key given twice, at any depth

_LEAF = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
_KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
_TREE = st.recursive(_LEAF, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_KEYS, c, max_size=3)),
                     max_leaves=12)


@SETTINGS
@given(st.dictionaries(_KEYS, _TREE, min_size=1, max_size=4), st.data())
def test_a_key_given_twice_anywhere_is_refused_in_json_and_yaml(data, draw):
    """The readers of configs, workloads and --params keep a mapping only when its keys are unique;
    the same mapping without the repeat reads back equal (JSON and YAML alike)."""
    import yaml

    from altosim.errors import InputError
    from altosim.files import loads_json, loads_yaml

    key = draw.draw(st.sampled_from(sorted(data)))
    wrapped = draw.draw(st.booleans())  # the repeat at the top, or one level down
    doc = {"outer": data} if wrapped else data
    assert loads_json(json.dumps(doc), "f.json") == doc
    assert loads_yaml(yaml.safe_dump(doc), "f.yaml") == doc
    inner = json.dumps(data)[:-1] + f", {json.dumps(key)}: 0}}"
    text = '{"outer": ' + inner + "}" if wrapped else inner
    for load, name in ((loads_json, "f.json"), (loads_yaml, "f.yaml")):  # JSON is YAML's flow style
        with pytest.raises(InputError) as e:
            load(text, name)
        assert e.value.file == name and "twice" in e.value.problem and key in str(e.value)


# ------------------------------------------------ session 20's probe: NaN hyperparameters, an empty config

@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_curve_s_hyperparameter_that_is_no_number_is_named(tmp_path, value):
    """NaN never equals itself, so it was reported as "changes its hyperparameters between rows"."""
    (tmp_path / "c.csv").write_text("config,lr,samples,train_loss,val_loss\n"
                                    f"a,{value},8,1.0,1.1\na,{value},16,0.9,1.0\n")
    rc, _, err = cli("replay-curves", str(tmp_path / "c.csv"), "--out", str(tmp_path / "out"))
    assert_input_error(rc, err, "line 2", "lr", "finite")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["simulate", "sweep"])
@pytest.mark.parametrize("config", ["", " "])
def test_an_empty_config_argument_is_named_as_such(tmp_path, command, config):
    """Path('') is '.': it was "is a folder" (and ' ' a blank file name)."""
    rc, _, err = cli(command, config, "--out", str(tmp_path / "out"))
    assert_input_error(rc, err, "<args>: config: empty")
    assert not (tmp_path / "out").exists()
