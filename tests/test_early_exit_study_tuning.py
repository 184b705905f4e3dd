"""Leave-one-task-out tuning of ALTO's thresholds (altosim.tuning)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.tuning import Evaluator, Objective, Score, grid_params, leave_one_out, task_inputs, tune
from experiments.early_exit_study import study_tasks

SMALL = grid_params({"warmup_ratio": (0.05, 0.2), "tau_gap": (0.1, math.inf)})


@pytest.fixture(scope="module")
def three():
    ts = study_tasks()
    return {t.name: t for t in (ts[0], ts[2], ts[-1])}


def test_held_out_trace_is_never_read(three) -> None:
    names = list(three)
    for held in names:
        read: list[str] = []

        def load(name: str, held=held):
            read.append(name)
            if name == held:
                raise AssertionError(f"held-out task {name} was read")
            t = three[name]
            return task_inputs(t.record, t.loss_set, t.synthetic)

        ev = Evaluator(load)
        res = leave_one_out(held, names, ev, SMALL)
        assert held not in read and held not in ev.loaded
        assert sorted(set(read)) == sorted(n for n in names if n != held)
        assert res.train_tasks == tuple(n for n in names if n != held)
        assert res.params in SMALL


def test_evaluator_memoizes_and_is_deterministic(three) -> None:
    name = list(three)[-1]
    calls: list[str] = []

    def load(n: str):
        calls.append(n)
        t = three[n]
        return task_inputs(t.record, t.loss_set, t.synthetic)

    ev1, ev2 = Evaluator(load), Evaluator(load)
    assert ev1(name, SMALL[1]) == ev1(name, SMALL[1]) == ev2(name, SMALL[1])
    assert calls == [name, name]


def test_grid_has_defaults_and_seeded_sample() -> None:
    g = grid_params()
    assert g[0] == {} and len(g) == 257
    assert all(p["div_patience"] == p["ovf_patience"] for p in g[1:])
    s1, s2 = grid_params(sample=20, seed=3), grid_params(sample=20, seed=3)
    assert s1 == s2 and len(s1) == 21 and s1 != grid_params(sample=20, seed=4)
    with pytest.raises(ValueError, match="sample"):
        grid_params(sample=0)


scores = st.builds(Score, st.floats(0.0, 1.0), st.floats(0.0, 0.05), st.booleans())


@settings(max_examples=60, deadline=None)
@given(table=st.lists(st.lists(scores, min_size=3, max_size=3), min_size=1, max_size=8),
       budget=st.sampled_from([0.0, 0.01, 0.03]))
def test_tune_picks_the_cheapest_feasible_set(table, budget) -> None:
    cands = [{"p_div": i + 1} for i in range(len(table))]
    evaluate = lambda task, p: table[p["p_div"] - 1][int(task)]  # noqa: E731
    res = tune(["0", "1", "2"], evaluate, cands, Objective(budget))
    feasible = [i for i, row in enumerate(table) if max(s.rel_regret for s in row) <= budget]
    mean = lambda row: sum(s.samples_share for s in row) / len(row)  # noqa: E731
    i = res.params["p_div"] - 1
    assert res.feasible == bool(feasible)
    if feasible:
        assert i in feasible and mean(table[i]) == min(mean(table[j]) for j in feasible)
    else:
        assert max(s.rel_regret for s in table[i]) == min(max(s.rel_regret for s in r) for r in table)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="held_out"):
        leave_one_out("x", ["a", "b"], lambda t, p: Score(1, 0, True), [{}])
    with pytest.raises(ValueError, match="train_tasks"):
        tune([], lambda t, p: Score(1, 0, True), [{}])
    with pytest.raises(ValueError, match="max_rel_regret"):
        Objective(-1)
