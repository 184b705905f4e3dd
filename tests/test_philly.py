"""Philly importer: mapping, round trip, malformed rows with line numbers, too-large tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from altosim import traces_io as tio
from altosim.errors import InputError
from altosim.importers import BadRow, TooLarge, import_philly
from altosim.synthetic import SyntheticSpec, generate_loss_set

REAL = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly" / "philly_2017-10-01_14.csv"
HEAD = "timestamp,duration,num_gpus,gpu_time,cluster\n"
GOOD = [
    "2017-10-01 00:00:45,30.0,1,30.0,6214e9",
    "2017-10-01 00:01:55,61.0,2,122.0,11cb48",
    "2017-10-01 00:05:41,53.0,8,424.0,6214e9",
    "2017-10-01 00:03:00,3600.5,4,14402.0,6214e9",
]


@pytest.fixture(scope="module")
def pool():
    specs = [SyntheticSpec(model="Llama-3.2-1B", dataset="gsm8k", samples_per_job=480, seed=1),
             SyntheticSpec(model="Llama-3.1-8B", dataset="tulu3", samples_per_job=960, ranks=(16, 32), seed=2)]
    return {s.name: s for s in (generate_loss_set(sp) for sp in specs)}


def write(tmp_path, rows: list[str]) -> Path:
    p = tmp_path / "philly.csv"
    p.write_text(HEAD + "\n".join(rows) + "\n")
    return p


def test_mapping(tmp_path, pool):
    res = import_philly(write(tmp_path, GOOD), loss_sets=pool, configs_per_task=5, seed=3)
    w = res.workload
    assert [t.id for t in w.tasks] == ["philly-2", "philly-3", "philly-5", "philly-4"]  # by arrival
    assert [t.arrival for t in w.tasks] == [0.0, 70.0, 135.0, 296.0]
    assert [t.gpus for t in w.tasks] == [1, 2, 4, 8]
    assert [t.duration_s for t in w.tasks] == [30.0, 61.0, 3600.5, 53.0]
    for t in w.tasks:
        s = pool[t.loss_trace]
        assert (t.model, t.dataset, t.samples_per_job) == (s.model, s.dataset, s.samples_per_job)
        spec = t.to_task_spec()
        assert len(spec.jobs) == 5 and len(t.search_space.subset) == 5
        have = {c.config for c in s.curves}
        assert all((j.lr, j.rank, j.batch_size) in have for j in spec.jobs)
    assert w.synthetic and w.meta["configs_per_task"] == 5 and w.meta["seed"] == 3
    assert w.meta["window_start"] == "2017-10-01 00:00:45" and w.meta["imported"] == 4
    assert res.skipped == [] and res.too_large == []


def test_seeded(tmp_path, pool):
    p = write(tmp_path, GOOD * 5)
    a = import_philly(p, loss_sets=pool, seed=1).workload
    assert a == import_philly(p, loss_sets=pool, seed=1).workload
    b = import_philly(p, loss_sets=pool, seed=2).workload
    assert [t.search_space for t in a.tasks] != [t.search_space for t in b.tasks]


def test_whole_grid_when_k_covers_it(tmp_path, pool):
    w = import_philly(write(tmp_path, GOOD), loss_sets=pool, configs_per_task=1000).workload
    assert all(t.search_space.subset is None and len(t.search_space) == len(pool[t.loss_trace].curves)
               for t in w.tasks)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_round_trip(tmp_path, pool, suffix):
    rows = REAL.read_text().splitlines()[1:301] if REAL.exists() else GOOD * 50
    res = import_philly(write(tmp_path, rows), loss_sets=pool, samples_per_job=240)
    out = tmp_path / f"w{suffix}"
    tio.write_workload(res.workload, out)
    assert tio.read_workload(out) == res.workload
    assert len(res.workload.tasks) == len(rows)


BAD = {
    "missing field": ("2017-10-01 00:02:00,,1,0,x", "duration: missing value"),
    "missing time": (",30,1,30,x", "timestamp: missing value"),
    "negative duration": ("2017-10-01 00:02:00,-5,1,0,x", "duration: negative duration"),
    "zero duration": ("2017-10-01 00:02:00,0,1,0,x", "duration: must be > 0 seconds"),
    "bad duration": ("2017-10-01 00:02:00,long,1,0,x", "duration: not a number"),
    "unparsable time": ("yesterday,30,1,30,x", "timestamp: unparsable time (expected YYYY-MM-DD HH:MM:SS)"),
    "bad date": ("2017-13-45 00:00:00,30,1,30,x", "timestamp: unparsable time (expected YYYY-MM-DD HH:MM:SS)"),
    "non-integer gpus": ("2017-10-01 00:02:00,30,1.5,45,x", "num_gpus: not an integer"),
    "text gpus": ("2017-10-01 00:02:00,30,two,60,x", "num_gpus: not a number"),
    "zero gpus": ("2017-10-01 00:02:00,30,0,0,x", "num_gpus: must be >= 1"),
    "missing gpus": ("2017-10-01 00:02:00,30,,0,x", "num_gpus: missing value"),
    "short row": ("2017-10-01 00:02:00,30", "num_gpus: missing value"),
    "blank line": ("", "timestamp: missing value"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_malformed_kind_reported_with_line(tmp_path, pool, kind):
    row, reason = BAD[kind]
    p = write(tmp_path, GOOD[:2] + [row] + GOOD[2:])  # the bad row is on line 4
    with pytest.raises(InputError) as ei:
        import_philly(p, loss_sets=pool)
    field, problem = reason.split(": ", 1)
    assert (ei.value.file, ei.value.line, ei.value.field) == (str(p), 4, field)
    assert str(ei.value).startswith(f"{p}: line 4: {reason}")
    res = import_philly(p, loss_sets=pool, skip_bad=True)
    assert res.skipped == [BadRow(4, reason)]
    assert len(res.workload.tasks) == 4 and res.workload.meta["skipped_bad"] == 1


def test_error_lists_first_few_and_count(tmp_path, pool):
    bad = [BAD["negative duration"][0], BAD["unparsable time"][0], BAD["text gpus"][0],
           BAD["zero gpus"][0], BAD["missing field"][0], BAD["bad duration"][0]]
    p = write(tmp_path, GOOD + bad)
    with pytest.raises(InputError) as ei:
        import_philly(p, loss_sets=pool)
    msg = str(ei.value)
    assert "\n" not in msg and "line 6: duration: negative duration" in msg
    assert "line 7 (timestamp" in msg and "line 9 (num_gpus" in msg and "6 bad row(s) in all" in msg
    assert [b.line for b in import_philly(p, loss_sets=pool, skip_bad=True).skipped] == [6, 7, 8, 9, 10, 11]


def test_missing_column_and_file(tmp_path, pool):
    p = tmp_path / "x.csv"
    p.write_text("timestamp,num_gpus\n2017-10-01 00:00:00,1\n")
    with pytest.raises(InputError, match="duration: missing column"):
        import_philly(p, loss_sets=pool)
    with pytest.raises(InputError, match="no such file"):
        import_philly(tmp_path / "none.csv", loss_sets=pool)


def test_too_large_reported_and_left_out(tmp_path, pool):
    res = import_philly(write(tmp_path, GOOD), loss_sets=pool, max_gpus=2)
    assert res.too_large == [TooLarge(4, 8), TooLarge(5, 4)]
    assert [t.gpus for t in res.workload.tasks] == [1, 2]
    assert res.workload.meta["too_large"] == 2 and res.workload.meta["max_gpus"] == 2


def test_window(tmp_path, pool):
    res = import_philly(write(tmp_path, GOOD), loss_sets=pool, start="2017-10-01 00:01:00",
                        end="2017-10-01 00:05:00")
    assert [(t.id, t.arrival) for t in res.workload.tasks] == [("philly-3", 55.0), ("philly-5", 120.0)]
    assert res.outside_window == 2 and res.workload.meta["outside_window"] == 2


@pytest.mark.skipif(not REAL.exists(), reason="shared Philly trace not present")
def test_real_file_imports(pool):
    res = import_philly(REAL, loss_sets=pool, max_gpus=16)
    assert res.skipped == [] and len(res.too_large) == 15 and all(t.gpus > 16 for t in res.too_large)
    w = res.workload
    assert len(w.tasks) == 24134 - 15
    assert w.tasks[0].arrival == 0.0 and 13 * 86400 < w.tasks[-1].arrival < 14 * 86400
    assert all(a.arrival <= b.arrival for a, b in zip(w.tasks, w.tasks[1:]))
