"""Coordinator helpers: which rank owns which adapter under rank-local adapter parallelism.

Ranks run in lockstep (every layer's all-gather waits for the slowest rank), so the goal is
equal rows per rank. Jobs are dealt largest batch size first, each to the rank with the fewest
rows so far (ties: lowest rank), which is round-robin within a batch-size group; with same-size
jobs (what the intra-task scheduler groups) ranks differ by at most one job. Pure Python.
"""

from __future__ import annotations

from typing import Mapping, Sequence


def _check(batch_sizes: Mapping[str, int], world: int) -> None:
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world: must be a positive int, got {world!r}")
    for j, b in batch_sizes.items():
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"jobs[{j!r}]: batch size must be a positive int, got {b!r}")


def rows_per_rank(plan: Mapping[int, Sequence[str]], batch_sizes: Mapping[str, int]) -> dict[int, int]:
    return {r: sum(batch_sizes[j] for j in js) for r, js in plan.items()}


def assign(jobs: Mapping[str, int], world: int) -> dict[int, list[str]]:
    """{rank: [job ids]} for `jobs` = {job id: per-adapter batch size} over `world` ranks."""
    _check(jobs, world)
    plan: dict[int, list[str]] = {r: [] for r in range(world)}
    rows = [0] * world
    for j in sorted(jobs, key=lambda j: (-jobs[j], j)):
        r = min(range(world), key=lambda r: (rows[r], len(plan[r]), r))
        plan[r].append(j)
        rows[r] += jobs[j]
    return plan


def rebalance(
    plan: Mapping[int, Sequence[str]], batch_sizes: Mapping[str, int], ranks: Sequence[int] | None = None,
) -> list[tuple[str, int, int]]:
    """Moves (job, src, dst) that even out rows over `ranks` (default: all ranks of `plan`).
    Jobs on a rank outside `ranks` all move (that rank's GPU can then be released). Each move
    strictly lowers the sum of squared rows, so this ends; apply the moves in order."""
    keep = sorted(plan) if ranks is None else sorted(set(ranks))
    if not keep or any(r not in plan for r in keep):
        raise ValueError(f"ranks: must be a non-empty subset of {sorted(plan)}, got {list(ranks or [])}")
    _check(batch_sizes, max(len(plan), 1))
    cur = {r: list(js) for r, js in plan.items()}
    rows = {r: sum(batch_sizes[j] for j in js) for r, js in cur.items()}
    moves: list[tuple[str, int, int]] = []

    def move(j: str, src: int, dst: int) -> None:
        cur[src].remove(j)
        cur[dst].append(j)
        rows[src] -= batch_sizes[j]
        rows[dst] += batch_sizes[j]
        moves.append((j, src, dst))

    for src in sorted(set(cur) - set(keep)):
        for j in sorted(cur[src], key=lambda j: (-batch_sizes[j], j)):
            move(j, src, min(keep, key=lambda r: (rows[r], r)))
    while True:
        hi = max(keep, key=lambda r: (rows[r], -r))
        lo = min(keep, key=lambda r: (rows[r], r))
        gap = rows[hi] - rows[lo]
        fits = [j for j in cur[hi] if batch_sizes[j] < gap]
        if not fits:
            return moves
        move(max(fits, key=lambda j: (batch_sizes[j], j)), hi, lo)
