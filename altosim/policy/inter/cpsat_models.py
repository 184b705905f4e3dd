"""The two CP-SAT makespan models of the inter-task scheduler, on integer time.

Both take an `IntInstance` (time 0 = now, durations in integer units) and return a `CpModelParts`
(model, start variables, C_max) without an objective; `solve` optimizes lexicographically:
phase 1 minimizes C_max; phase 2 fixes C_max to phase 1's value and, with the time left,
maximizes the GPUs busy at time 0 (= now) and then minimizes the sum of start times weighted by
each task's GPU-time (`area_weights`), so plans are left-shifted, idle GPUs are only left idle
now when using them would cost makespan, and of plans of equal makespan the one that starts
the largest tasks first wins: durations under early exit are predictions, and a plan that
leaves a wide, long task for the end turns that task's error straight into makespan, where
small tasks at the end fit around errors.
(Sum of starts alone is not enough: it may prefer to run short wide tasks first at a later
instant and leave GPUs idle now at equal makespan.) (A single weighted objective
W * C_max + sum s was tried first: on 200 tasks it stalled far from the makespan phase 1 proves
optimal in well under a second.)

- `build_cumulative`: one interval per task and one cumulative constraint over GPU counts
  (GPUs are interchangeable, so this is exact). Small, and what CP-SAT propagates best.
- `build_paper`: the ALTO paper's formulation: start times s_i, booleans x_ig (task i uses GPU
  g), one order boolean y_ij per pair, big-M disjunctions per GPU, C_max >= s_i + d_i. Running
  tasks pin their concrete GPUs. O(n^2 * G) constraints: for small instances and for checking
  that both models agree.

ortools is imported inside the functions so that `altosim.policy` imports without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IntInstance:
    num_gpus: int
    dur: tuple[int, ...]  # waiting tasks' durations, >= 1 unit
    demand: tuple[int, ...]  # GPUs per waiting task
    run_end: tuple[int, ...]  # running tasks' release times (units after now), >= 1
    run_gpus: tuple[tuple[int, ...], ...]  # their concrete GPU ids
    horizon: int  # an upper bound on C_max (the greedy hint's makespan)
    hint: tuple[int, ...]  # a feasible start per waiting task (makespan <= horizon)
    hint_gpus: tuple[tuple[int, ...], ...] = ()  # concrete ids of the hint (paper model only)
    tail: tuple[int, ...] = ()  # per waiting task, units its end may run late (C_max counts them; () = none)
    release: tuple[int, ...] = ()  # per task, the earliest start (units after now; () = all now): known future arrivals


@dataclass
class CpModelParts:
    model: Any
    starts: list[Any]
    cmax: Any
    demand: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    dur: tuple[int, ...] = ()  # waiting tasks' durations (units), for phase 2's weights


def cheap_cmax_bound(inst: IntInstance) -> int:
    """Integer lower bound on C_max: last running release, per-task earliest fit + duration,
    and the area bound. Given to CP-SAT as C_max's domain so its bound starts there."""
    releases = sorted(zip(inst.run_end, (len(g) for g in inst.run_gpus)))
    free = inst.num_gpus - sum(n for _, n in releases)
    t_free = [(0, free)]  # (time, free GPUs from then on), non-decreasing
    for end, n in releases:
        free += n
        t_free.append((end, free))
    lb = max(inst.run_end, default=0)
    for d, g in zip(inst.dur, inst.demand):
        lb = max(lb, next(t for t, f in t_free if f >= g) + d)
    for d, r in zip(inst.dur, inst.release):
        lb = max(lb, r + d)
    area = sum(e * len(g) for e, g in zip(inst.run_end, inst.run_gpus)) + sum(d * g for d, g in zip(inst.dur, inst.demand))
    return max(lb, -(-area // inst.num_gpus))


def _hint(model: Any, inst: IntInstance, starts: list[Any], cmax: Any) -> None:
    for s, h in zip(starts, inst.hint):
        model.add_hint(s, h)
    tail = inst.tail or (0,) * len(inst.dur)
    model.add_hint(cmax, max([h + d + e for h, d, e in zip(inst.hint, inst.dur, tail)] + list(inst.run_end)))


def build_cumulative(inst: IntInstance) -> CpModelParts:
    from ortools.sat.python import cp_model

    # -- data
    n, H = len(inst.dur), inst.horizon
    release: dict[int, int] = {}
    for end, gpus in zip(inst.run_end, inst.run_gpus):
        release[end] = release.get(end, 0) + len(gpus)  # running tasks merged by release time
    model = cp_model.CpModel()

    # -- variables
    rel = inst.release or (0,) * n
    starts = [model.new_int_var(rel[i], H - inst.dur[i], f"s{i}") for i in range(n)]
    intervals = [model.new_fixed_size_interval_var(starts[i], inst.dur[i], f"iv{i}") for i in range(n)]
    fixed = [model.new_fixed_size_interval_var(0, end, f"run{end}") for end in sorted(release)]
    cmax = model.new_int_var(cheap_cmax_bound(inst), H, "cmax")

    # -- constraints
    model.add_cumulative(intervals + fixed, list(inst.demand) + [release[e] for e in sorted(release)], inst.num_gpus)
    for i in range(n):
        model.add(cmax >= starts[i] + inst.dur[i] + (inst.tail[i] if inst.tail else 0))

    # -- hint (the objective is set by `solve`)
    _hint(model, inst, starts, cmax)
    return CpModelParts(model, starts, cmax, inst.demand, dur=inst.dur)


def build_paper(inst: IntInstance) -> CpModelParts:
    from ortools.sat.python import cp_model

    # -- data
    n, G, H = len(inst.dur), inst.num_gpus, inst.horizon
    big_m = 2 * H  # exceeds any start difference plus duration
    model = cp_model.CpModel()

    # -- variables
    rel = inst.release or (0,) * n
    starts = [model.new_int_var(rel[i], H - inst.dur[i], f"s{i}") for i in range(n)]
    x = [[model.new_bool_var(f"x{i}_{g}") for g in range(G)] for i in range(n)]
    y = {(i, j): model.new_bool_var(f"y{i}_{j}") for i in range(n) for j in range(i + 1, n)}  # 1: i before j
    cmax = model.new_int_var(cheap_cmax_bound(inst), H, "cmax")

    # -- constraints
    for i in range(n):
        model.add(sum(x[i]) == inst.demand[i])
        model.add(cmax >= starts[i] + inst.dur[i] + (inst.tail[i] if inst.tail else 0))
    for (i, j), yij in y.items():
        for g in range(G):
            both_off = 2 - x[i][g] - x[j][g]  # 0 iff i and j both use GPU g
            model.add(starts[i] + inst.dur[i] <= starts[j] + big_m * (1 - yij) + big_m * both_off)
            model.add(starts[j] + inst.dur[j] <= starts[i] + big_m * yij + big_m * both_off)
    for end, gpus in zip(inst.run_end, inst.run_gpus):
        for g in gpus:
            for i in range(n):
                model.add(starts[i] >= end - big_m * (1 - x[i][g]))

    # -- hint (the objective is set by `solve`)
    _hint(model, inst, starts, cmax)
    if inst.hint_gpus:
        for i, ids in enumerate(inst.hint_gpus):
            for g in range(G):
                model.add_hint(x[i][g], g in ids)
        for (i, j), yij in y.items():
            model.add_hint(yij, inst.hint[i] <= inst.hint[j])
    return CpModelParts(model, starts, cmax, inst.demand, extra={"x": x, "y": y}, dur=inst.dur)


@dataclass(frozen=True)
class SolveResult:
    status: str  # phase 1: "OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN", "MODEL_INVALID"
    starts: tuple[int, ...] | None  # None when no solution
    cmax: int | None
    cmax_bound: int  # proven lower bound on C_max in units
    wall_s: float  # both phases
    left_shift: str  # phase 2 status, "skipped" when no time was left
    wall_capped: bool = False  # deterministic mode: the wall limit, not the work limit, stopped a phase


def solve(
    parts: CpModelParts,
    time_limit_s: float,
    num_workers: int,
    seed: int,
    deterministic: bool,
    phase1_share: float = 0.75,
    work_limit: float | None = None,
    objective: str = "makespan",
) -> SolveResult:
    """Lexicographic solve within `time_limit_s` of wall time; returns plain numbers.

    Phase 1 (at most phase1_share of the limit) minimizes C_max; phase 2 keeps C_max at phase
    1's value and minimizes  sum(a_i * s_i) - W * (GPUs of tasks starting at 0)  with a_i the
    task's `area_weights` and W above any such sum (lexicographic), hinted with phase 1, for the rest of the limit
    but at most (1 - phase1_share) of it (the caller's compaction already left-shifts, so
    phase 2 is a refinement and should not eat a fast phase 1's savings).

    `deterministic`: one worker, and the phases share `work_limit` CP-SAT work units the same
    way (default: `time_limit_s` units), so the same model gives the same answer on any machine;
    the wall limit stays on as a cap, and `wall_capped` says when it, not the work, ended a phase.

    `objective="completion"`: phase 1 minimizes the sum of starts (= the sum of completion
    times less a constant), phase 2 keeps that sum and minimizes C_max; `cmax_bound` is then 0
    (the proved bound is on the sum, not on C_max).
    """
    from ortools.sat.python import cp_model

    model = parts.model
    work = (work_limit if work_limit is not None else time_limit_s) if deterministic else None
    if objective == "completion":
        return _solve_completion(parts, time_limit_s, num_workers, seed, work, phase1_share)

    # -- phase 1: makespan
    model.minimize(parts.cmax)
    code, solver, capped = _run(model, phase1_share * time_limit_s, work and phase1_share * work, num_workers, seed)
    status = solver.status_name(code)
    wall = solver.wall_time
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = solver.best_objective_bound if code == cp_model.UNKNOWN else 0.0
        return SolveResult(status, None, None, _floor_bound(bound), wall, "skipped", capped)
    cmax = int(solver.value(parts.cmax))
    starts = tuple(int(solver.value(s)) for s in parts.starts)
    bound = cmax if code == cp_model.OPTIMAL else _floor_bound(solver.best_objective_bound)

    # -- phase 2: left shift at that makespan (budget counted in work units when deterministic)
    if work:
        total, spent = work, solver.deterministic_time
    else:
        total, spent = time_limit_s, wall
    left = min(total - spent, (1.0 - phase1_share) * total)
    if left < 0.05 * total or not parts.starts:
        return SolveResult(status, starts, cmax, bound, wall, "skipped", capped)
    model.add(parts.cmax <= cmax)
    at_now = [model.new_bool_var(f"now{i}") for i in range(len(parts.starts))]
    for s, b in zip(parts.starts, at_now):
        model.add(s == 0).only_enforce_if(b)
    model.clear_hints()
    for s, b, v in zip(parts.starts, at_now, starts):
        model.add_hint(s, v)
        model.add_hint(b, v == 0)
    model.add_hint(parts.cmax, cmax)
    area = area_weights(parts.demand, parts.dur or (1,) * len(parts.demand))
    weight = sum(area) * cmax + 1  # > any weighted sum of starts
    model.minimize(sum(a * s for a, s in zip(area, parts.starts))
                   - weight * sum(g * b for g, b in zip(parts.demand, at_now)))
    wall_left = max(0.01, time_limit_s - wall)
    code2, solver2, capped2 = _run(model, wall_left, left if work else None, num_workers, seed)
    wall += solver2.wall_time
    if code2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        starts = tuple(int(solver2.value(s)) for s in parts.starts)
    return SolveResult(status, starts, cmax, bound, wall, solver2.status_name(code2), capped or capped2)


def _solve_completion(
    parts: CpModelParts, time_limit_s: float, num_workers: int, seed: int, work: float | None, phase1_share: float,
) -> SolveResult:
    """`solve` for objective="completion": sum of starts, then C_max with that sum kept."""
    from ortools.sat.python import cp_model

    model = parts.model
    # -- phase 1: sum of starts
    model.minimize(sum(parts.starts))
    code, solver, capped = _run(model, phase1_share * time_limit_s, work and phase1_share * work, num_workers, seed)
    status, wall = solver.status_name(code), solver.wall_time
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult(status, None, None, 0, wall, "skipped", capped)
    starts = tuple(int(solver.value(s)) for s in parts.starts)
    total = sum(starts)
    cmax = int(solver.value(parts.cmax))

    # -- phase 2: C_max with the sum of starts kept
    left = (work - solver.deterministic_time) if work else time_limit_s - wall
    if left < 0.05 * (work or time_limit_s) or not parts.starts:
        return SolveResult(status, starts, cmax, 0, wall, "skipped", capped)
    model.add(sum(parts.starts) <= total)
    model.clear_hints()
    for s, v in zip(parts.starts, starts):
        model.add_hint(s, v)
    model.add_hint(parts.cmax, cmax)
    model.minimize(parts.cmax)
    code2, solver2, capped2 = _run(model, max(0.01, time_limit_s - wall), left if work else None, num_workers, seed)
    wall += solver2.wall_time
    if code2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        starts, cmax = tuple(int(solver2.value(s)) for s in parts.starts), int(solver2.value(parts.cmax))
    return SolveResult(status, starts, cmax, 0, wall, solver2.status_name(code2), capped or capped2)


def area_weights(demand: tuple[int, ...], dur: tuple[int, ...], scale: int = 1000) -> list[int]:
    """Each task's GPUs x duration, scaled to 1..scale + 1 (keeps the objective's integers small)."""
    areas = [g * d for g, d in zip(demand, dur)]
    top = max(areas, default=1) or 1
    return [1 + round(scale * a / top) for a in areas]


def _run(model: Any, wall_s: float, work: float | None, num_workers: int, seed: int) -> tuple[Any, Any, bool]:
    """Solve within `wall_s` seconds; `work` (deterministic mode): also within that many work
    units, on one worker (reproducible). Returns (status code, solver, stopped by the wall)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = num_workers
    p.random_seed = seed
    p.max_time_in_seconds = max(wall_s, 1e-3)
    if work is not None:
        # Reproducible search: one worker, work-based limit. (Interleaved parallel search is
        # reproducible too but overshot its work limit several-fold here.)
        p.num_workers = 1
        p.max_deterministic_time = work
    code = solver.solve(model)
    capped = (work is not None and code != cp_model.OPTIMAL and code != cp_model.INFEASIBLE
              and solver.deterministic_time < 0.99 * work)
    return code, solver, capped


def _floor_bound(bound: float) -> int:
    return max(0, math.ceil(bound - 1e-6)) if math.isfinite(bound) else 0
