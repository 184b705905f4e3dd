"""Hypothesis for every test: no per-example deadline and no `too_slow` health check.

Both judge wall time, which 2 shared, loaded cores (CI: `pytest -n auto`) cannot promise: an example
that is stalled past the 200 ms default fails as "DeadlineExceeded" or "Flaky: unreliable test
timings", a slow draw as "too_slow". A test that must stay cheap asserts what it counts (calls,
iterations), not a duration. Explicit `@settings(...)` still override a field; one that sets
`suppress_health_check` lists `too_slow` itself. `HYPOTHESIS_PROFILE=default` restores Hypothesis'
own defaults.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("alto", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "alto"))
