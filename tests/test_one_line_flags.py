"""A bad flag is one line, exit code 2, no usage block and no traceback (ARCHITECTURE rule 4), for
`alto`, its module entry points and every experiment script with an argparse `main`: all of them build
their parser as `altosim.argparser.OneLineParser`. The scripts are found by scanning experiments/, so
a new script is covered the day it is added."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.argparser import OneLineParser
from altosim.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = (ROOT / "experiments", ROOT / "experiments" / "device")
MODULES = {  # `python -m ...` entry points of the packages: (prog named in the line, argv before the bad flag)
    "altosim.cli": ("alto", ["simulate"]),
    "altosim.workloads": ("python -m altosim.workloads", []),
    "altoruntime.data.build_builtin": ("python -m altoruntime.data.build_builtin", ["--out", "o"]),
    "altoruntime.profile": ("alto profile", []),
}


def _has_argparse_main(path: Path) -> bool:
    """A top-level `def main` and a call `.add_argument(...)` somewhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    return has_main and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                            and n.func.attr == "add_argument" for n in ast.walk(tree))


SCRIPTS = sorted(str(p.relative_to(ROOT)) for d in SCRIPT_DIRS for p in d.glob("*.py") if _has_argparse_main(p))


def test_the_scan_finds_the_scripts():
    assert {"experiments/e2e_sweep.py", "experiments/bench_sim.py", "experiments/device/diag_host.py"} <= set(SCRIPTS)
    assert "experiments/script_errors.py" not in SCRIPTS and len(SCRIPTS) >= 20, SCRIPTS


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python ARGV` from `cwd`, with this checkout first on the import path (not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _assert_one_line(r: subprocess.CompletedProcess, prog: str) -> None:
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-3000:])
    assert "usage:" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"{prog}: error: <args>: "), lines[0]
    assert "--no-such-flag" in lines[0] or "arguments are required" in lines[0], lines[0]  # argparse says either


@pytest.mark.slow  # a subprocess each, 0.1-3 s (most import torch)
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_given_an_unknown_flag_says_one_line(script, tmp_path):
    _assert_one_line(_run([str(ROOT / script), "--no-such-flag"], tmp_path), Path(script).name)
    assert not any(tmp_path.iterdir()), "a bad flag must not write anything"


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_entry_point_given_an_unknown_flag_says_one_line(module, tmp_path):
    prog, before = MODULES[module]
    _assert_one_line(_run(["-m", module, *before, "--no-such-flag"], tmp_path), prog)


def _parse(ap: argparse.ArgumentParser, argv: list[str]) -> tuple[int | None, str]:
    """(exit code or None when it parsed, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ap.parse_args(argv)
            return None, err.getvalue()
        except SystemExit as e:
            return e.code, err.getvalue()


def _tool() -> OneLineParser:
    ap = OneLineParser(prog="tool.py", add_help=False)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--kind", choices=("a", "b"), default="a")
    ap.add_argument("path", nargs="?")
    return ap


def test_a_bad_value_names_the_flag_and_the_script():
    rc, err = _parse(_tool(), ["--n", "x"])
    assert rc == 2 and err == "tool.py: error: <args>: argument --n: invalid int value: 'x' (see tool.py --help)\n"


def test_subcommands_are_one_line_parsers_naming_the_command():
    ap = OneLineParser(prog="tool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    go = sub.add_parser("go")
    go.add_argument("--k", type=int)
    assert isinstance(go, OneLineParser)
    rc, err = _parse(ap, ["go", "--k", "x"])
    assert rc == 2 and err.startswith("tool: error: <args>: argument --k: ") and err.endswith("(see tool go --help)\n")


def test_an_alto_subcommand_names_alto_and_its_own_help():
    rc, err = _parse(build_parser(), ["simulate", "--gpus", "0"])
    assert rc == 2 and err.startswith("alto: error: <args>: argument --gpus: ") and err.endswith(
        "(see alto simulate --help)\n"), err


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["--n", "--kind", "-n", "--", "-", "a", "b", "3", "x", "--n=", "--kind=c"]),
                          st.text(max_size=12)), max_size=6))
def test_any_argv_parses_or_is_one_line(argv):
    rc, err = _parse(_tool(), argv)
    if rc is None:
        assert err == ""
    else:
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("tool.py: error: <args>: "), err


def test_int_list_flags_are_checked_by_the_parser(capsys):
    from altosim.argparser import OneLineParser

    ap = OneLineParser(prog="x.py")
    assert ap.int_list("--sizes", "60,15,4") == [60, 15, 4]
    assert ap.int_list("--graphs", "0,1", choices=(0, 1)) == [0, 1]
    assert ap.int_list("--warmup", "0", minimum=0) == [0]
    for text, kw in (("4,x", {}), ("0", {}), ("2", {"choices": (0, 1)}), ("", {})):
        with pytest.raises(SystemExit) as e:
            ap.int_list("--sizes", text, **kw)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("x.py: error: <args>: --sizes")


def test_name_list_flags_are_checked_by_the_parser(capsys):
    from altosim.argparser import OneLineParser

    ap = OneLineParser(prog="x.py")
    assert ap.name_list("--parts", "step,loop", ("step", "peft", "loop")) == ["step", "loop"]
    for text in ("step,x", "", "step,"):
        with pytest.raises(SystemExit) as e:
            ap.name_list("--parts", text, ("step", "peft", "loop"))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("x.py: error: <args>: --parts: unknown")


def _numeric_flags(path: Path) -> list[tuple[str, str]]:
    """(flag, the type's source) of each add_argument(..., type=...) whose type is a bare int or
    float, or one of altosim.argparser's bounded types."""
    out = []
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument":
            typ = next((k.value for k in n.keywords if k.arg == "type"), None)
            flag = n.args[0].value if n.args and isinstance(n.args[0], ast.Constant) else "?"
            if typ is not None:
                src = ast.unparse(typ)
                if src in ("int", "float") or src.startswith(("count(", "finite(")) or src == "share":
                    out.append((flag, src))
    return out


def test_every_numeric_flag_of_a_script_is_bounded():
    """A bare `type=int` takes 0, -1 and 10**12 alike, and the script fails later with a traceback
    (session 19: a negative --hidden built a tensor of negative size); the bounded types of
    altosim.argparser refuse them at parse time in one line."""
    bare = [(s, f) for s in SCRIPTS for f, src in _numeric_flags(ROOT / s) if src in ("int", "float")]
    assert not bare, bare
    assert sum(len(_numeric_flags(ROOT / s)) for s in SCRIPTS) >= 60


@pytest.mark.slow
@pytest.mark.parametrize("script, flag, value", [
    # numbers out of range (the bounded types)
    ("experiments/bench_admit.py", "--hidden", "-1"), ("experiments/bench_sim.py", "--gap", "nan"),
    ("experiments/raytune_asha.py", "--trials-at-once", "0"), ("experiments/fidelity.py", "--warmup", "1.5"),
    ("experiments/device/diag_host.py", "--warmup", "-1"), ("experiments/stress_interrupts.py", "--runs", "x"),
    # comma-separated lists (OneLineParser.int_list)
    ("experiments/bench_step_kernels.py", "--adapters", "4,x"), ("experiments/bench_planner.py", "--seeds", "-1"),
    ("experiments/concurrent_peft.py", "--ranks", "x"), ("experiments/profile_runtime.py", "--ranks", "16,0"),
    ("experiments/bench_parallel.py", "--batches", "0"), ("experiments/device/diag_host.py", "--graphs", "2"),
])
def test_a_bad_number_says_one_line(script, flag, value, tmp_path):
    out = [] if "concurrent_peft" in script else ["--out", str(tmp_path / "o" / "x.csv")]  # (it has no --out)
    r = _run([str(ROOT / script), flag, value, *out], tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith(f"{Path(script).name}: error: <args>: ") and flag in lines[0], lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("script, argv, field", [
    ("experiments/philly_replay.py", ["--policies", "fifo,x"], "--policies"),
    ("experiments/philly_replay.py", ["--early-exits", ""], "--early-exits"),
    ("experiments/profile_runtime.py", ["--parts", "step,x"], "--parts"),
    ("experiments/profile_runtime.py", ["--dataset", "nope"], "--dataset"),
    ("experiments/profile_runtime.py", ["--backbone", ""], "--backbone"),
    ("experiments/e2e_sweep.py", ["--backbone", ""], "--backbone"),
    # tiny's narrowest targeted layer is 32 wide, the default grid's ranks go to 64: refused once the
    # run's workload file was written, and named by that file (session 20)
    ("experiments/e2e_sweep.py", ["--backbone", "tiny"], "--ranks"),
    ("experiments/profile_runtime.py", ["--backbone", "tiny", "--parts", "loop"], "--ranks"),
    ("experiments/e2e_sweep.py", ["--reference-trace", " "], "--reference-trace"),
    ("experiments/make_datasets.py", ["--tasks", "x"], "--tasks"),
    ("experiments/predict_parallel.py", ["--config", ""], "--config"),  # was taken as no config
    ("experiments/bench_parallel.py", ["--gguf", "x.gguf"], "--gguf"),  # was ignored: tiny is the default
    ("experiments/bench_parallel.py", ["--backbone", "smollm2", "--gguf", "missing.gguf"], "--gguf"),
])
def test_a_bad_name_flag_says_one_line_before_anything_is_written(script, argv, field, tmp_path):
    """Found by probing every script's flags with `x`, `-1` and empty values (session 19): these were
    tracebacks, exit 1, or a file written first."""
    r = _run([str(ROOT / script), *argv, "--out", str(tmp_path / "o")], tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert field in lines[0], lines[0]
    assert not (tmp_path / "o").exists()
