"""Property tests (issue 23): malformed configs, workloads, loss traces, event logs and Philly
traces given to `alto simulate`, `sweep`, `replay` and `import-trace` end in exit code 2, one
line on stderr, no traceback, nothing in --out and nothing else written (each runs in a fresh
temporary working folder). Each family has a positive control: the unmutated input runs."""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.ids import id_problem
from altosim.schemas.limits import MAX_GPUS, MAX_SEED
from tests._hostile import CONFIG, LOSS_SET, WORKLOAD, assert_input_error, cli

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


TEXT = st.text(max_size=30).filter(lambda s: not _numeric(s))
NON_NUMBER = st.one_of(st.booleans(), st.none(), TEXT, st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FRACTION = st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x) or x != int(x))


def bad_count(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Values that are not an integer in [lo, hi]."""
    return st.one_of(NON_NUMBER, st.integers(max_value=lo - 1), st.integers(min_value=hi + 1), FRACTION)


def _files(folder: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")}


def _write(here: Path, files: dict[str, str | bytes]) -> None:
    for name, data in files.items():
        (here / name).parent.mkdir(parents=True, exist_ok=True)
        (here / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def run_hostile(files: dict[str, str | bytes], *argv: str, out_is_callers: bool = False,
                naming: tuple[str, ...] = ()) -> None:
    """Write `files` into a fresh working folder, run `alto ARGV` there, assert the one-line
    error (naming each of `naming`), that ./out holds nothing (unless it already held the caller's
    files), and that no file appeared or changed anywhere in the folder."""
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        here = Path(d)
        _write(here, files)
        before = _files(here)
        rc, _, err = cli(*argv)
        assert_input_error(rc, err, *naming)
        out = here / "out"
        if not out_is_callers:
            assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
        assert _files(here) == before


def run_ok(files: dict[str, str | bytes], *argv: str) -> None:
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        _write(Path(d), files)
        rc, _, err = cli(*argv)
        assert rc == 0, err


def set_path(data: dict, path: tuple[str, ...], value: Any) -> dict:
    data = copy.deepcopy(data)
    node = data
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    return data


# ---------------------------------------------------------------------------- configs

POLICY_MUTATIONS = st.one_of(  # `alto sweep` replaces the policy block by each preset's, so only simulate reads these
    st.tuples(st.just(("policy", "early_exit")),
              st.one_of(TEXT.filter(lambda s: s.strip() not in ("alto", "asha", "median", "none", "")),
                        st.builds(lambda v: {"name": "alto", "params": {"cuts": v}},
                                  st.one_of(st.integers(min_value=65), st.integers(max_value=0), NON_NUMBER)),
                        st.builds(lambda k: {"name": "asha", "params": {k: 1}}, st.text(min_size=1, max_size=8)))),
    st.tuples(st.just(("policy", "inter_task")), TEXT.filter(lambda s: s.strip() not in ("cpsat", "fifo", "sjf", ""))),
)
CONFIG_MUTATIONS = st.one_of(
    st.tuples(st.just(("cluster", "gpus")), st.one_of(bad_count(1, MAX_GPUS), st.just(True))),
    st.tuples(st.just(("seed",)), bad_count(0, MAX_SEED)),
    st.tuples(st.just(("cluster", "gpu_memory_gb")), st.one_of(NON_NUMBER, st.floats(max_value=0), st.just(math.inf))),
    st.tuples(st.just(("policy", "memory_margin")), st.one_of(NON_NUMBER, st.floats(min_value=1), st.floats(max_value=-1e-9))),
    st.tuples(st.just(("workload",)), st.one_of(st.text(min_size=1, max_size=40).map(lambda s: "missing/" + s),
                                                 st.just("x" * 300), st.just("."))),
    st.tuples(st.text(min_size=1, max_size=10).filter(lambda k: k not in CONFIG_KEYS).map(lambda k: (k,)), st.integers()),
)
CONFIG_KEYS = {"cluster", "workload", "loss_traces", "cost_profile", "cost_profile_method", "policy", "seed", "out"}

RAW_FILES = st.one_of(
    st.binary(min_size=1, max_size=200).map(lambda b: b"\xff\xfe" + b),  # not UTF-8
    st.integers(min_value=101, max_value=5000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=101, max_value=5000).map(lambda n: "a:\n  - " + "{x: " * n + "}" * n),
    st.sampled_from(["[1, 2]", "42", '"text"', "{", "a: [", "\t- x", "true", "x" * 200_000]),
)


@SETTINGS
@given(st.one_of(CONFIG_MUTATIONS, POLICY_MUTATIONS))
def test_simulate_rejects_malformed_configs(mutation):
    path, value = mutation
    cfg = set_path(CONFIG, path, value)
    run_hostile({"wl.json": json.dumps(WORKLOAD), "cfg.json": json.dumps(cfg, allow_nan=True)},
                "simulate", "cfg.json", "--out", "out", "-q")


@SETTINGS
@given(RAW_FILES, st.sampled_from(["cfg.json", "cfg.yaml"]))
def test_simulate_rejects_unreadable_config_files(raw, name):
    run_hostile({name: raw}, "simulate", name, "--out", "out", "-q")


@SETTINGS
@given(CONFIG_MUTATIONS, st.text(max_size=20).filter(lambda s: s not in ("full", "asha")))
def test_sweep_rejects_malformed_configs_and_policies(mutation, policy):
    path, value = mutation
    cfg = set_path(CONFIG, path, value)
    files = {"wl.json": json.dumps(WORKLOAD), "cfg.json": json.dumps(cfg, allow_nan=True)}
    run_hostile(files, "sweep", "cfg.json", "--policies", "full", "--out", "out", "-q")
    run_hostile({**files, "cfg.json": json.dumps(CONFIG)}, "sweep", "cfg.json", "--policies", f"full,{policy}x",
                "--out", "out", "-q")


# ---------------------------------------------------------------------------- workloads

SPACE_MUTATIONS = st.one_of(
    st.tuples(st.just("lr"), st.one_of(st.just([]), st.lists(st.floats(max_value=0), min_size=1, max_size=2),
                                        st.just([1e-4, 1e-4]), st.just([math.nan]), st.just([True]), NON_NUMBER)),
    st.tuples(st.just("rank"), st.one_of(st.lists(bad_count(1, 65_536), min_size=1, max_size=2), st.just([]))),
    st.tuples(st.just("batch_size"), st.lists(bad_count(1, 65_536), min_size=1, max_size=2)),
    st.tuples(st.just("dropout"), st.lists(st.one_of(st.floats(min_value=1), st.floats(max_value=-1e-9)), min_size=1, max_size=2)),
    st.tuples(st.just("subset"), st.one_of(st.just([]), st.lists(st.integers(min_value=2), min_size=1, max_size=2))),
)
TASK_MUTATIONS = st.one_of(
    st.tuples(st.just("id"), st.one_of(st.text(max_size=80).filter(lambda s: id_problem(s) is not None),
                                       st.integers(), st.none(), st.booleans())),
    st.tuples(st.just("gpus"), st.one_of(bad_count(1, 2), st.just(True))),  # the cluster has 2
    st.tuples(st.just("arrival"), st.one_of(NON_NUMBER, st.floats(max_value=-1e-9), st.just(math.inf))),
    st.tuples(st.just("samples_per_job"), bad_count(1, 10**12)),
    st.tuples(st.just("seq_len"), bad_count(1, 1 << 20)),
    st.tuples(st.just("model"), st.one_of(st.just(""), TEXT.map(lambda s: "unknown-" + s))),
    st.tuples(st.just("loss_trace"), TEXT.map(lambda s: "nope-" + s)),
    st.tuples(st.text(min_size=1, max_size=8).map(lambda s: "extra_" + s), st.integers()),
)


def mutated(workload: dict, mutation: tuple) -> dict:
    """A copy of `workload` with one mutation: ("task", (key, value)), ("space", (key, value)),
    ("drop", key) from the first task, or ("tasks", value) for the whole list."""
    kind, m = mutation
    wl = copy.deepcopy(workload)
    task = wl["tasks"][0]
    if kind == "task":
        task[m[0]] = m[1]
    elif kind == "space":
        task["search_space"][m[0]] = m[1]
    elif kind == "drop":
        del task[m]
    else:
        wl["tasks"] = m
    return wl


@SETTINGS
@given(st.one_of(TASK_MUTATIONS.map(lambda m: ("task", m)), SPACE_MUTATIONS.map(lambda m: ("space", m)),
                 st.sampled_from(["id", "arrival", "model", "dataset", "gpus", "search_space", "samples_per_job"])
                 .map(lambda k: ("drop", k)),
                 st.sampled_from([None, 3, "x", [1], {}]).map(lambda v: ("tasks", v))))
def test_simulate_rejects_malformed_workloads(mutation):
    wl = mutated(WORKLOAD, mutation)
    run_hostile({"wl.json": json.dumps(wl, allow_nan=True), "cfg.json": json.dumps(CONFIG)},
                "simulate", "cfg.json", "--out", "out", "-q")


@SETTINGS
@given(RAW_FILES, st.sampled_from(["wl.json", "wl.csv"]))
def test_simulate_rejects_unreadable_workload_files(raw, name):
    run_hostile({name: raw, "cfg.json": json.dumps({**CONFIG, "workload": name})},
                "simulate", "cfg.json", "--out", "out", "-q")


# ---------------------------------------------------------------------------- loss traces


@functools.lru_cache(maxsize=1)
def _loss_files() -> tuple[str, str]:
    base = ROOT / "traces" / "loss" / LOSS_SET
    rows = gzip.decompress(base.with_name(LOSS_SET + ".csv.gz").read_bytes()).decode().splitlines()
    return "\n".join(rows) + "\n", base.with_name(LOSS_SET + ".meta.json").read_text()


LOSS_COLUMNS = {"lr": 0, "rank": 1, "batch_size": 2, "step": 4, "samples": 5}
BAD_CELLS = {"lr": ["x", "-1", "0", "", "inf"], "rank": ["x", "0", "-2", "1.5", ""],
             "batch_size": ["x", "0", "-2", "1.5", ""], "step": ["x", "-1", "1.5", ""], "samples": ["x", "-1", ""]}


def _loss_run(csv_text: str | bytes, meta: str, gz: bool = False) -> dict[str, str | bytes]:
    name = f"loss/{LOSS_SET}.csv" + (".gz" if gz else "")
    data = csv_text.encode() if isinstance(csv_text, str) else csv_text
    return {"wl.json": json.dumps(WORKLOAD), "cfg.json": json.dumps({**CONFIG, "loss_traces": "loss"}),
            name: gzip.compress(data) if gz else data, f"loss/{LOSS_SET}.meta.json": meta}


def test_loss_trace_positive_control():
    text, meta = _loss_files()
    run_ok(_loss_run(text, meta, gz=True), "simulate", "cfg.json", "--out", "out", "-q")


@SETTINGS
@given(st.data())
def test_simulate_rejects_malformed_loss_traces(data):
    text, meta = _loss_files()
    lines = text.splitlines()
    kind = data.draw(st.sampled_from(["cell", "column", "gz", "meta", "raw"]))
    gz = False
    if kind == "cell":
        col = data.draw(st.sampled_from(sorted(LOSS_COLUMNS)))
        row = data.draw(st.integers(1, len(lines) - 1))
        cells = lines[row].split(",")
        cells[LOSS_COLUMNS[col]] = data.draw(st.sampled_from(BAD_CELLS[col]))
        lines[row] = ",".join(cells)
        text = "\n".join(lines) + "\n"
    elif kind == "column":
        drop = data.draw(st.sampled_from(sorted(LOSS_COLUMNS)))
        i = LOSS_COLUMNS[drop]
        text = "\n".join(",".join(c for j, c in enumerate(r.split(",")) if j != i) for r in lines) + "\n"
    elif kind == "gz":
        body = gzip.compress(text.encode())
        at = data.draw(st.integers(12, len(body) - 9))
        text, gz = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:], True
        files = _loss_run(b"", meta, gz=True)
        files[f"loss/{LOSS_SET}.csv.gz"] = text
        run_hostile(files, "simulate", "cfg.json", "--out", "out", "-q")
        return
    elif kind == "meta":
        meta = data.draw(st.one_of(st.sampled_from(["{", "[]", "{}", '{"name": "other"}']),
                                   st.just(meta.replace('"synthetic": true', '"synthetic": "maybe"'))))
    else:
        text = data.draw(RAW_FILES.filter(lambda r: isinstance(r, str) and "lr" not in r))
    run_hostile(_loss_run(text, meta, gz), "simulate", "cfg.json", "--out", "out", "-q")


# ---------------------------------------------------------------------------- event logs


@functools.lru_cache(maxsize=1)
def _event_log() -> tuple[str, ...]:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "wl.json").write_text(json.dumps(WORKLOAD))
        (Path(d) / "cfg.json").write_text(json.dumps(CONFIG))
        rc, _, err = cli("simulate", str(Path(d) / "cfg.json"), "--out", str(Path(d) / "o"), "-q")
        assert rc == 0, err
        return tuple((Path(d) / "o" / "events.jsonl").read_text().splitlines())


REQUIRED = {"step_report": ["now", "task_id", "job_id", "step", "samples", "train_loss", "kind"],
            "job_finished": ["now", "task_id", "job_id", "kind"], "task_arrived": ["now", "task", "kind"]}


def test_event_log_positive_control():
    run_ok({"ev.jsonl": "\n".join(_event_log()) + "\n"}, "replay", "ev.jsonl")


@SETTINGS
@given(st.data())
def test_replay_rejects_malformed_event_logs(data):
    recs = [json.loads(x) for x in _event_log()]
    lines = list(_event_log())
    kind = data.draw(st.sampled_from(["drop", "now", "ids", "counts", "garbage", "cut", "meta"]))
    events = [i for i, r in enumerate(recs) if i and r["event"]["kind"] in REQUIRED]
    i = data.draw(st.sampled_from(events))
    ev = recs[i]["event"]
    if kind == "drop":
        del ev[data.draw(st.sampled_from(REQUIRED[ev["kind"]]))]
    elif kind == "now":
        ev["now"] = data.draw(st.one_of(NON_NUMBER, st.floats(max_value=-1e-9), st.just(math.inf)))
    elif kind == "ids":
        i = data.draw(st.sampled_from([k for k in events if recs[k]["event"]["kind"] != "task_arrived"]))
        ev = recs[i]["event"]
        field = data.draw(st.sampled_from(["task_id", "job_id"]))
        ev[field] = data.draw(st.one_of(st.text(max_size=20), st.integers(), st.none()).filter(lambda v: v != ev[field]))
    elif kind == "counts":
        i = data.draw(st.sampled_from([k for k in events if recs[k]["event"]["kind"] == "step_report"]))
        recs[i]["event"][data.draw(st.sampled_from(["step", "samples"]))] = data.draw(
            st.one_of(st.integers(max_value=-1), TEXT, st.none(), st.booleans(), FRACTION))
    if kind in ("drop", "now", "ids", "counts"):
        lines[i] = json.dumps(recs[i], allow_nan=True)
    elif kind == "garbage":
        lines.insert(i, data.draw(st.one_of(st.sampled_from(["{", "[1]", "42", "null", '{"x": 1}', "[" * 5000]),
                                             TEXT.filter(lambda s: s.strip() != ""))))
    elif kind == "cut":
        lines[i] = lines[i][: data.draw(st.integers(1, len(lines[i]) - 1))]
    else:
        meta = recs[0]["meta"]
        change = data.draw(st.sampled_from(["controller", "durations", "type"]))
        lines[0] = json.dumps({"meta": 5} if change == "type" else {"meta": {k: v for k, v in meta.items() if k != change}})
    run_hostile({"ev.jsonl": "\n".join(lines) + "\n"}, "replay", "ev.jsonl")


# ---------------------------------------------------------------------------- Philly traces

PHILLY_OK = "timestamp,duration,num_gpus\n2017-10-01 00:00:00,100,1\n2017-10-01 00:10:00,300,2\n"
BAD_PHILLY = {"timestamp": st.one_of(TEXT, st.just("2017-13-45 99:99:99")),
              "duration": st.one_of(st.sampled_from(["-1", "0", "x", "inf", "nan"]), TEXT.filter(lambda s: "," not in s)),
              "num_gpus": st.sampled_from(["0", "-2", "1.5", "x", "inf", ""])}


def test_philly_positive_control():
    run_ok({"p.csv": PHILLY_OK}, "import-trace", "philly", "p.csv", "--out", "w.json")


@SETTINGS
@given(st.data())
def test_import_trace_rejects_malformed_philly_traces(data):
    kind = data.draw(st.sampled_from(["cell", "raw", "args", "out"]))
    files: dict[str, str | bytes] = {"p.csv": PHILLY_OK}
    argv = ["import-trace", "philly", "p.csv", "--out", "out/w.json"]
    if kind == "cell":
        col = data.draw(st.sampled_from(sorted(BAD_PHILLY)))
        cells = {"timestamp": "2017-10-01 00:20:00", "duration": "50", "num_gpus": "1"}
        cells[col] = data.draw(BAD_PHILLY[col]).replace("\n", " ").replace('"', "").replace(",", ";")
        files["p.csv"] = PHILLY_OK + f'"{cells["timestamp"]}",{cells["duration"]},{cells["num_gpus"]}\n'
    elif kind == "raw":
        files["p.csv"] = data.draw(st.one_of(RAW_FILES, st.just(b"\x1f\x8b" + b"\x00" * 30)))
    elif kind == "args":
        flag = data.draw(st.sampled_from(["--seed", "--configs-per-task", "--max-gpus"]))
        argv += [flag, str(data.draw(st.one_of(st.integers(max_value=-1), TEXT.filter(lambda s: not s.startswith("-")))))]
    else:
        argv[-1] = data.draw(st.sampled_from(["out", "out/" + "n" * 300, "out/a\x00b"]))
        files["out/keep/.x"] = ""  # `out` exists (a folder): --out out is refused, and out/keep is the caller's
        run_hostile(files, *argv, out_is_callers=True)
        return
    run_hostile(files, *argv)


# ---------------------------------------------------------------------------- cost profiles


@SETTINGS
@given(st.one_of(RAW_FILES, st.sampled_from(["gpu_type,model\nH100,x\n", "a,b\n1,2\n", "", "\n\n"])),
       st.sampled_from(["cost.csv", "cost.json"]))
def test_simulate_rejects_malformed_cost_profiles(raw, name):
    run_hostile({"wl.json": json.dumps(WORKLOAD), name: raw, "cfg.json": json.dumps({**CONFIG, "cost_profile": name})},
                "simulate", "cfg.json", "--out", "out", "-q")
