"""Checks that a plan is executable, and the concrete GPU ids that execute it.

Plans carry GPU counts only (GPUs are interchangeable); `assign_gpu_ids` shows that any plan
passing `validate_plan` can be realized with ids, handing out the lowest free ids at each start.
"""

from __future__ import annotations

from typing import Sequence

from altosim.policy.inter.base import Plan, RunningTask, WaitingTask


def validate_plan(
    plan: Plan, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
) -> None:
    """Raise ValueError if `plan` is not executable: a task missing/extra/duplicated or with
    the wrong GPU count, a start before `now`, GPUs over capacity at some instant, or a
    makespan below the last end."""
    by_id = {w.task_id: w for w in waiting}
    seen: set[str] = set()
    events: list[tuple[float, int]] = []
    for r in running:
        if r.remaining > 0:
            events += [(now, len(r.gpus)), (now + r.remaining, -len(r.gpus))]
    last_end = max([now] + [now + r.remaining for r in running])
    for a in plan.assignments:
        if a.task_id not in by_id:
            raise ValueError(f"plan: unknown task {a.task_id!r}")
        if a.task_id in seen:
            raise ValueError(f"plan: task {a.task_id!r} assigned twice")
        seen.add(a.task_id)
        w = by_id[a.task_id]
        if a.gpus != w.gpus:
            raise ValueError(f"plan: task {a.task_id!r} gets {a.gpus} GPUs, needs {w.gpus}")
        if not a.start >= now:
            raise ValueError(f"plan: task {a.task_id!r} starts at {a.start} < now={now}")
        events += [(a.start, w.gpus), (a.start + w.duration, -w.gpus)]
        last_end = max(last_end, a.start + w.duration)
    missing = set(by_id) - seen
    if missing:
        raise ValueError(f"plan: task {sorted(missing)[0]!r} missing ({len(missing)} missing)")
    used = 0
    for t, delta in sorted(events):  # at equal times releases (negative) come first
        used += delta
        if used > num_gpus:
            raise ValueError(f"plan: {used} GPUs in use at t={t} > num_gpus={num_gpus}")
    if plan.makespan < last_end:
        raise ValueError(f"plan: makespan {plan.makespan} < last end {last_end}")


def assign_gpu_ids(
    plan: Plan, now: float, num_gpus: int, running: Sequence[RunningTask], waiting: Sequence[WaitingTask]
) -> dict[str, tuple[int, ...]]:
    """Concrete GPU ids for every planned task: at each start, the lowest free ids.

    This is why plans may carry GPU counts only: with interchangeable GPUs, any schedule that
    keeps the count within num_gpus is realizable. Raises ValueError if the plan is not.
    """
    dur = {w.task_id: w.duration for w in waiting}
    free = set(range(num_gpus))
    releases: list[tuple[float, tuple[int, ...]]] = []
    for r in running:
        free -= set(r.gpus)
        releases.append((now + r.remaining, r.gpus))
    out: dict[str, tuple[int, ...]] = {}
    for a in sorted(plan.assignments, key=lambda a: (a.start, a.task_id)):
        releases.sort(key=lambda x: x[0])
        while releases and releases[0][0] <= a.start:
            free |= set(releases.pop(0)[1])
        if len(free) < a.gpus:
            raise ValueError(f"plan: task {a.task_id!r} needs {a.gpus} GPUs at t={a.start}, {len(free)} free")
        ids = tuple(sorted(free)[: a.gpus])
        free -= set(ids)
        out[a.task_id] = ids
        releases.append((a.start + dur[a.task_id], ids))
    return out
