"""CP-SAT parameters for tests that assert what the solver finds (an optimum, its note, a reused
order): the plans of a short `time_limit_s`, without its wall-clock cap.

In deterministic mode (the default) a solve ends at its work budget, `WORK_PER_S * time_limit_s`
units, which no machine's load changes; the wall limit is only a cap, and a small one (0.05-2 s)
is hit when a loaded machine stalls the test process: the solve is cut short or skipped ("no wall
time left"), and the plan is the greedy one. `budget_of` keeps the work budget and lifts the cap
out of reach: on an idle machine the plans are the same (checked on 900 random instances).
"""

from __future__ import annotations

from typing import Any

from altosim.policy.inter import cpsat as cpsat_mod

STALL_PROOF_S = 60.0  # a wall cap no stall reaches; the work budget ends a solve long before


def budget_of(time_limit_s: float, **params: Any) -> dict[str, Any]:
    """CpSatScheduler parameters: the work budget of `time_limit_s`, under a wall cap of STALL_PROOF_S."""
    return dict(time_limit_s=STALL_PROOF_S, work_limit=cpsat_mod.WORK_PER_S * time_limit_s, **params)
