"""`alto replay-curves`: any registered early-exit policy replayed on a user's CSV of loss curves."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.cli import main
from altosim.replay_curves import read_curves, replay
from altosim.schemas import PolicyRef

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "traces" / "examples" / "curves_date_iso.csv"


def test_shipped_curves_replay_like_the_simulator(capsys, tmp_path):
    rc = main(["replay-curves", str(SHIPPED), "--early-exit", "alto", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "of 5760 samples trained" in out and "rank 1 of 30 by best val loss" in out
    res = replay(read_curves(SHIPPED), PolicyRef(name="alto"))
    assert res["samples_saved"] > 0.5 and res["chosen"] == "lr=0.0003 r=16 b=1"
    assert (tmp_path / "o" / "replay.csv").read_text().startswith("config,status,samples_trained")
    none = replay(read_curves(SHIPPED), PolicyRef(name="none"))
    assert none["samples_saved"] == 0.0 and none["rank_by_best_val"] == 1


def _csv(curves: list[list[float]], every: int = 4) -> str:
    lines = ["config,samples,train_loss,val_loss,lr"]
    for i, vals in enumerate(curves):
        lines += [f"c{i},{every * (k + 1)},{v + 0.1},{v},{1e-4 * (i + 1)}" for k, v in enumerate(vals)]
    return "\n".join(lines) + "\n"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(curves=st.integers(2, 6).flatmap(lambda n: st.integers(3, 8).flatmap(lambda k: st.lists(
    st.lists(st.floats(0.5, 3.0), min_size=k, max_size=k), min_size=n, max_size=n))),
    policy=st.sampled_from(["none", "alto", "asha", "median"]))
def test_replay_keeps_samples_and_ranks_consistent(tmp_path_factory, curves, policy):
    path = tmp_path_factory.mktemp("c") / "curves.csv"
    path.write_text(_csv(curves))
    res = replay(read_curves(path), PolicyRef(name=policy))
    full = 4 * len(curves[0]) * len(curves)
    assert res["samples_full"] == full and 0 <= res["samples_trained"] <= full
    assert res["chosen"] is not None and 1 <= res["rank_by_best_val"] <= len(curves)
    if policy == "none":  # every config runs to the end: the chosen one is the best by best val loss
        assert res["samples_trained"] == full and res["rank_by_best_val"] == 1


BAD = {
    "missing column": "config,samples,train_loss\nc,1,1.0\n",
    "not a number": "config,samples,train_loss,val_loss\nc,4,1.0,abc\n",
    "samples decrease": "config,samples,train_loss,val_loss\nc,8,1.0,1.0\nc,4,1.0,1.0\n",
    "unequal ends": "config,samples,train_loss,val_loss\na,4,1,1\na,8,1,1\nb,4,1,1\n",
    "header only": "config,samples,train_loss,val_loss\n",
    "empty": "",
    "unknown column": "config,samples,train_loss,val_loss,color\nc,4,1,1,red\n",
    "infinite": "config,samples,train_loss,val_loss\nc,4,1,inf\n",
    "bad rank": "config,samples,train_loss,val_loss,rank\nc,4,1,1,0\n",
    "ragged row": "config,samples,train_loss,val_loss\nc,4,1\n",
    "no val": "config,samples,train_loss,val_loss\nc,4,1,\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_csv_is_one_line_exit_2(tmp_path, capsys, name):
    path = tmp_path / "c.csv"
    path.write_text(BAD[name])
    rc = main(["replay-curves", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"alto: error: {path}"), err
    assert not (tmp_path / "o").exists()


def test_unknown_policy_and_bad_params_are_one_line(capsys):
    assert main(["replay-curves", str(SHIPPED), "--early-exit", "nope"]) == 2
    assert main(["replay-curves", str(SHIPPED), "--params", "[1]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--early-exit" in err[0] and "--params" in err[1]


@pytest.mark.parametrize("policy", ["alto", "asha"])
def test_replay_of_an_exported_trace_equals_the_simulator_on_the_trace_set(policy):
    """The shipped CSV is the real date_iso trace set written as a user's curves: the replay takes
    the simulator's decisions on that set (samples trained and the chosen config's val loss)."""
    from altosim.traces_io import load_trace_dir, read_workload
    from altosim.tuning import score_run, task_inputs

    rec = read_workload(ROOT / "traces" / "real" / "e2e_date_iso_workload.json").tasks[0]
    _, run = score_run(task_inputs(rec, load_trace_dir(ROOT / "traces" / "real")[rec.loss_trace]),
                       PolicyRef(name=policy))
    res = replay(read_curves(SHIPPED), PolicyRef(name=policy))
    sim = run.tasks_df.iloc[0]
    assert res["samples_trained"] == sim["samples_trained"] and res["chosen_val"] == pytest.approx(sim["best_val"])
