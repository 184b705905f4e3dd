"""Optuna's samplers draw a task's configs up front through its ask-and-tell API: seeded, within
the axes' bounds, the same draws as an Optuna study asked directly."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings, strategies as st

from altosim.schemas.search_space import SearchSpace

SPACE = {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3},
         "rank": {"distribution": "int", "low": 4, "high": 64, "log": True},
         "batch_size": [1, 2, 4], "dropout": {"distribution": "uniform", "low": 0.0, "high": 0.1},
         "alpha": [16.0]}


def space(sampler: str, n: int, seed: int) -> SearchSpace:
    return SearchSpace.model_validate({**SPACE, "sampler": sampler, "n_configs": n, "seed": seed})


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["tpe", "optuna-random", "optuna-qmc"]), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_optuna_draws_are_seeded_and_in_bounds(sampler, n, seed):
    configs = [c for _, c in space(sampler, n, seed).configs()]
    assert configs == [c for _, c in space(sampler, n, seed).configs()] and len(configs) == n
    for c in configs:
        assert 1e-5 <= c["lr"] <= 1e-3 and 4 <= c["rank"] <= 64 and isinstance(c["rank"], int)
        assert c["batch_size"] in (1, 2, 4) and 0.0 <= c["dropout"] <= 0.1 and c["alpha"] == 16.0
        assert float(f"{c['lr']:.4g}") == c["lr"]  # 4 significant digits, as the other samplers


def test_same_as_asking_an_optuna_study():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {"lr": FloatDistribution(1e-5, 1e-3, log=True), "rank": IntDistribution(4, 64, log=True),
             "batch_size": CategoricalDistribution([1, 2, 4]), "dropout": FloatDistribution(0.0, 0.1)}
    study = optuna.create_study(sampler=optuna.samplers.QMCSampler(seed=7))
    asked = [study.ask(dists).params for _ in range(6)]
    ours = [c for _, c in space("optuna-qmc", 6, 7).configs()]
    for a, c in zip(asked, ours):
        assert (c["rank"], c["batch_size"]) == (a["rank"], a["batch_size"])
        assert math.isclose(c["lr"], a["lr"], rel_tol=1e-3) and math.isclose(c["dropout"], a["dropout"], abs_tol=1e-5)


def test_seed_and_sampler_change_the_draws():
    base = [c for _, c in space("optuna-qmc", 8, 0).configs()]
    assert base != [c for _, c in space("optuna-qmc", 8, 1).configs()]
    assert base != [c for _, c in space("optuna-random", 8, 0).configs()]


def test_optuna_sampler_needs_n_configs():
    with pytest.raises(ValueError, match="n_configs"):
        SearchSpace.model_validate({**SPACE, "sampler": "tpe"})
