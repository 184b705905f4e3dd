"""Hypothesis strategies and a brute-force optimum shared by the inter-task scheduler tests,
plus checks that the brute force itself is right."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from altosim.policy.inter import RunningTask, WaitingTask, list_schedule
from altosim.policy.inter.base import makespan_of


@st.composite
def instances(draw, max_gpus: int = 8, max_waiting: int = 8, max_running: int = 4, integral: bool = False,
              min_waiting: int = 0):
    """(now, num_gpus, running, waiting): running tasks hold disjoint GPU ids.

    `integral`: whole-number times only (so a 1-second CP-SAT time unit is exact)."""
    num_gpus = draw(st.integers(1, max_gpus))
    now = draw(st.sampled_from([0.0, 7.0, 1000.0]) if integral else st.sampled_from([0.0, 7.5, 1000.0]))
    ids = list(range(num_gpus))
    ints = st.integers(0, 40).map(float)
    running = []
    for k in range(draw(st.integers(0, max_running))):
        n = draw(st.integers(0, len(ids)))
        if n == 0:
            continue
        held, ids = ids[:n], ids[n:]
        remaining = draw(ints if integral else st.one_of(ints, st.floats(0.0, 40.0)))
        running.append(RunningTask(f"r{k}", tuple(held), remaining))
    durations = st.integers(1, 30).map(float)
    if not integral:
        durations = st.one_of(durations, st.floats(0.5, 30.0))
    waiting = [
        WaitingTask(
            task_id=f"w{k}",
            gpus=draw(st.integers(1, num_gpus)),
            duration=draw(durations),
            arrival=draw(st.sampled_from([0.0, 1.0, 2.0, 3.0])),
        )
        for k in range(draw(st.integers(min_waiting, max_waiting)))
    ]
    return now, num_gpus, running, waiting


def brute_force_makespan(now, num_gpus, running, waiting, start_now: bool = False) -> float:
    """True optimum: serial schedule generation over every order (active schedules suffice).

    `start_now`: the optimum over plans that start at least one task at `now` (inf if none can).
    """
    free_now = num_gpus - sum(len(r.gpus) for r in running if r.remaining > 0)
    best = makespan_of(now, running, waiting, {}) if not waiting else float("inf")
    for order in itertools.permutations(waiting):
        if start_now and order[0].gpus > free_now:
            continue
        starts = list_schedule(now, num_gpus, running, order)
        best = min(best, makespan_of(now, running, waiting, starts))
    return best


def test_brute_force_on_known_instances() -> None:
    # 2 GPUs: a 2-GPU task of 4 and two 1-GPU tasks of 3 and 1 -> best is 4 + 3 = 7
    waiting = [WaitingTask("a", 2, 4.0, 0.0), WaitingTask("b", 1, 3.0, 0.0), WaitingTask("c", 1, 1.0, 0.0)]
    assert brute_force_makespan(0.0, 2, [], waiting) == 7.0
    assert brute_force_makespan(5.0, 2, [RunningTask("r", (0,), 2.0)], waiting[:1]) == 11.0
    # 5 GPUs, 2 free now. Using them for w0 now blocks the 3-GPU w1 until 14: 29 vs 42.
    running = [RunningTask("r0", (0,), 1.0), RunningTask("r2", (1, 2), 14.0)]
    two = [WaitingTask("w0", 1, 14.0, 0.0), WaitingTask("w1", 3, 28.0, 0.0)]
    assert brute_force_makespan(0.0, 5, running, two) == 29.0
    assert brute_force_makespan(0.0, 5, running, two, start_now=True) == 42.0
