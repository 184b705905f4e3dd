"""The leave-one-task-out early-exit study: the max-min choice, ranks, and a quick run."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.early_exit import Alto
from experiments.early_exit_loto import GRID, QUICK_GRID, candidates, choose, main, run
from experiments.early_exit_study import real_tasks


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=3, max_size=3),
                min_size=1, max_size=8))
def test_choose_maximizes_the_minimum_saved_among_candidates_acceptable_everywhere(table):
    rows = pd.DataFrame([{"cand": i, "task": f"t{k}", "samples_saved": s, "acceptable": ok}
                         for i, row in enumerate(table) for k, (s, ok) in enumerate(row)])
    tasks = ["t0", "t1", "t2"]
    k = choose(rows, tasks)
    ok = [i for i, row in enumerate(table) if all(a for _, a in row)]
    if ok:
        assert k in ok and min(s for s, _ in table[k]) == max(min(s for s, _ in table[i]) for i in ok)
    else:
        n_ok = [sum(a for _, a in row) for row in table]
        assert n_ok[k] == max(n_ok)
    assert choose(rows, tasks) == k  # deterministic
    assert choose(rows, ["t0"]) in range(len(table))  # a fold reads only its own tasks


def test_the_grid_holds_the_shipped_default():
    assert any(Alto(**p).params() == Alto().params() for p in candidates(GRID))


def test_quick_run_writes_its_tables_under_out_only(tmp_path):
    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "early_exit_loto.csv", "early_exit_loto.md", "early_exit_loto.png", "early_exit_loto_candidates.csv"]
    rows = pd.read_csv(out / "early_exit_loto.csv")
    assert {"alto", "alto_loto", "alto_shipped", "none", "ray_asha"} <= set(rows["policy"])
    none = rows[rows["policy"] == "none"]
    assert (none["samples_saved"] == 0).all() and (none["rank"] == 1).all() and none["acceptable"].all()
    assert ((rows["rank"] >= 1) & (rows["samples_saved"] <= 1)).all()
    text = (out / "early_exit_loto.md").read_text()
    assert "Leave-one-task-out" in text and "Spread over held-out tasks" in text


def test_optuna_rows_name_their_pruner_the_same_way_every_run():
    """The CSV names each Optuna pruner by class and arguments, not by its repr (a memory address)."""
    task = min(real_tasks(), key=lambda t: t.record.id)
    params = [run([task], candidates(QUICK_GRID), optuna=True)[1].set_index("policy")["params"] for _ in range(2)]
    assert params[0]["optuna_median"] == "MedianPruner({})"
    assert params[0]["optuna_sh_m5"] == "SuccessiveHalvingPruner({'min_resource': 5, 'reduction_factor': 4})"
    assert params[0].equals(params[1])
    assert not params[0].str.contains(" at 0x").any()


def test_no_real_traces_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import experiments.early_exit_loto as loto

    monkeypatch.setattr(loto, "real_tasks", lambda: [])
    assert loto.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no real trace sets" in err and "\n" not in err and not (tmp_path / "o").exists()
