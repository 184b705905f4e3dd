"""experiments/fidelity.py end to end on CPU: a real tiny `alto run`, then its replay in the simulator."""

from __future__ import annotations

import csv
import json
import tarfile

from altosim.policy.event_order import EVENT_ORDER

from experiments import fidelity as fidelity_script


def test_real_run_replays_with_identical_decisions(tmp_path):
    """Two tasks, early exit (alto), a tiny real model: the log, fed by the backend contract, replays
    through the plain Simulator (the contract's order, the runtime's costs) with identical decisions."""
    rc = fidelity_script.main(["--backbone", "tiny", "--tasks", "list_ops,arithmetic", "--lrs", "1e-2,1e-3",
                         "--batches", "1,2", "--samples", "4", "--evals", "2", "--n-train", "12", "--n-val", "4",
                         "--out", str(tmp_path), "--archive"])
    assert rc == 0
    run = tmp_path / "fidelity_run"
    assert (run / "events.jsonl").is_file() and (run / "config.json").is_file()
    lines = (run / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["meta"]["event_order"] == EVENT_ORDER
    kinds = [json.loads(x)["kind"] for x in lines[1:]]
    assert kinds.count("task_arrived") == 2 and "stop" in kinds  # early exit stopped some configs
    rows = {r["metric"]: r for r in csv.DictReader(open(tmp_path / "fidelity_cpu.csv"))}
    for mode in ("measured", "model"):  # same logged losses, same policy: same decisions
        assert rows[f"{mode}.first_divergence"]["value"] == "-1"
        assert int(rows[f"{mode}.decisions_identical"]["value"]) == int(rows[f"{mode}.decisions_real"]["value"]) > 0
    assert float(rows["measured.makespan_rel_err"]["value"]) <= 0.1
    assert {r["source"] for r in csv.DictReader(open(tmp_path / "fidelity_cpu_timeline.csv"))} == {
        "real", "measured", "model"}
    assert (tmp_path / "fidelity_cpu.png").stat().st_size > 0
    with tarfile.open(tmp_path / "fidelity_run.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"fidelity_run/events.jsonl", "fidelity_run/config.json", "fidelity_run/run_args.json"} <= names
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "fidelity_run.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
    again = fidelity_script.main(["--run", str(unpacked / "fidelity_run"), "--out", str(tmp_path / "again")])
    assert again == 0 and (tmp_path / "again" / "fidelity_cpu.csv").read_text() == (
        tmp_path / "fidelity_cpu.csv").read_text()  # the archive alone reproduces the check
