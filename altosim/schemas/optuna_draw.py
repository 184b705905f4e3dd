"""Configs drawn up front by one of Optuna's samplers, through its ask-and-tell API.

alto trains a task's configs together, so all `n` are asked before any result exists: each trial
is asked and left running (nothing is told). Samplers that model results (TPE) therefore draw
from their independent start-up distribution here, seeded; QMC draws its low-discrepancy points.
The same axes, seed and sampler give the same configs.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

# sampler name in a search space -> the optuna.samplers class that draws it
SAMPLER_CLASSES = {"tpe": "TPESampler", "optuna-random": "RandomSampler", "optuna-qmc": "QMCSampler"}


def optuna_distribution(axis: Any) -> Any:
    """An Optuna distribution of one axis: a list (categorical) or a search-space distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(axis, list):
        return CategoricalDistribution(axis)
    kind = axis.distribution
    if kind == "categorical":
        return CategoricalDistribution(axis.choices)
    if kind == "int":
        return IntDistribution(axis.low, axis.high, log=axis.log)
    return FloatDistribution(axis.low, axis.high, log=kind == "log_uniform")


def draw(sampler: str, axes: dict[str, Any], n: int, seed: int, rounded: Callable[[str, Any], Any]) -> list[dict]:
    """`n` configs of the searched `axes` (name -> list or distribution) from Optuna's `sampler`,
    seeded; `rounded(name, value)` post-processes each value (e.g. significant digits)."""
    import optuna
    from optuna import samplers

    dists = {name: optuna_distribution(a) for name, a in axes.items()}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line; restored below
    try:
        with warnings.catch_warnings():  # QMCSampler is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(sampler=getattr(samplers, SAMPLER_CLASSES[sampler])(seed=seed))
            trials = [study.ask(dists) for _ in range(n)]
    finally:
        optuna.logging.set_verbosity(verbosity)
    return [{name: rounded(name, t.params[name]) for name in axes} for t in trials]
