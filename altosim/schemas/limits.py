"""Numbers read from user files: no bool taken as a number, and the bounds every count is held to.

YAML and JSON `true` is an int to pydantic's lax mode (`gpus: true` would mean 1 GPU); `Int` and
`Float` reject it and still accept what a CSV cell or a YAML number holds. The limits keep a typo
(`gpus: 1000000000`) from becoming a run that allocates tens of GB before it fails.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

MAX_GPUS = 100_000  # cluster.gpus and a task's gpus
MAX_SEED = 2**32 - 1  # what numpy, torch and Python's random all accept
MAX_CONFIGS = 100_000  # expanded search-space grid of one task
MAX_RANK = 65_536
MAX_BATCH = 65_536
MAX_SEQ_LEN = 1 << 20
MAX_SAMPLES = 10**12  # samples per job
MAX_EPOCHS = 10**6  # passes over a task's train set
MAX_EVALS = 1_000_000  # evaluations per job (samples_per_job / eval_every_samples)
MAX_TASKS = 1_000_000
MAX_ROWS = 10**9  # examples per evaluation / steps between checks: a bound, not a plan
MAX_SECONDS = 10**9  # an arrival or a duration (~32 years): 1e308 s is finite but makes every time in the report garbage
MAX_LOG_SECONDS = 10**12  # an event's time in a run log: arrivals (<= MAX_SECONDS) plus queueing behind long tasks


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
    return v


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
