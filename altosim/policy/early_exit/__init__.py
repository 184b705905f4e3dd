"""Early-exit policies, chosen by name from config (`early_exit: {name: ..., params: {...}}`).

Importing this package registers every policy in `altosim.policy.registry.EARLY_EXIT`: `alto`
(the paper's per-job rules and noise-aware halving cuts; `alto.PAPER_PARAMS` is the paper's
rule), `none`, `median` (median stopping), `asha` (Ray Tune's asynchronous successive halving).
A config's `tuned` (parameters from a file) is resolved to `alto` when the config loads
(`altosim.tuned_params`), so the policy core reads no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from altosim.policy.early_exit.base import CONTINUE, EarlyExitPolicy, Verdict, one_line
from altosim.policy.early_exit.alto import Alto
from altosim.policy.early_exit.asha import Asha
from altosim.policy.early_exit.median_stopping import MedianStopping
from altosim.policy.early_exit.no_exit import NoExit
from altosim.policy.registry import EARLY_EXIT

__all__ = ["Verdict", "CONTINUE", "EarlyExitPolicy", "build_early_exit",
           "Alto", "Asha", "MedianStopping", "NoExit"]


def build_early_exit(name: str, params: Mapping[str, Any] | None = None) -> EarlyExitPolicy:
    """A fresh policy (one per task). Unknown name or parameter, bad value -> one-line ValueError."""
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"early_exit params must be a mapping, got {type(params).__name__}")
    if name not in EARLY_EXIT.names():
        return EARLY_EXIT.build(name)  # the registry's one-line unknown-name error
    try:
        return EARLY_EXIT.build(name, **dict(params or {}))
    except ValueError as e:
        raise ValueError(one_line(name, e)) from None
