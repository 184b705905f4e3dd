"""Early-exit policies, chosen by name from config (`early_exit: {name: ..., params: {...}}`).

Importing this package registers every policy in `altosim.policy.registry.EARLY_EXIT`:
`alto` (the paper's Algorithm 1; by default its overfitting rule also needs a val plateau and a
diverging job keeps its best snapshot as a candidate result, and two cohort cuts keep a quarter
each, at evaluation K = ceil(0.02 n) and 12 K of n; `alto.PAPER_PARAMS` is the paper's rule;
`alto.SH_PARAMS`: jobs held at their gates and three cohort cuts keeping half), `none`, `median`
(median stopping), `asha`, `tuned` (an Alto with parameters read from a file written by `altosim.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from altosim.policy.early_exit.base import CONTINUE, EarlyExitPolicy, Verdict
from altosim.policy.early_exit.alto import Alto
from altosim.policy.early_exit.asha import Asha
from altosim.policy.early_exit.median_stopping import MedianStopping
from altosim.policy.early_exit.no_exit import NoExit
from altosim.policy.early_exit import tuned as _tuned  # noqa: F401  (registers `tuned`)
from altosim.policy.registry import EARLY_EXIT

__all__ = ["Verdict", "CONTINUE", "EarlyExitPolicy", "build_early_exit",
           "Alto", "Asha", "MedianStopping", "NoExit"]


def build_early_exit(name: str, params: Mapping[str, Any] | None = None) -> EarlyExitPolicy:
    """A fresh policy (one per task). Unknown name or parameter, bad value -> one-line ValueError."""
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"early_exit params must be a mapping, got {type(params).__name__}")
    return EARLY_EXIT.build(name, **dict(params or {}))
