"""The coordinator's view under AP: which rank owns which adapter, kept the same on every rank.

Every rank holds an identical `Placement` and applies the Controller's actions in the same order
(`apply_action`), so all ranks agree on owners without extra messages; only the owner touches an
adapter. New jobs go to the live rank with the fewest active rows (ties: fewest jobs, lowest
rank), which deals same-batch-size jobs round-robin. Pure Python except `apply_action`, which
carries an action out on the owner with the runtime's one executor (altoruntime/actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from altoruntime.actions import carry_out
from altoruntime.parallel.assign import rebalance

if TYPE_CHECKING:
    from altosim.policy.types import JobSpec
    from altoruntime.parallel.ap import APTrainer


@dataclass
class Placement:
    """Owner rank and batch size of every adapter; `active` ones count toward a rank's rows."""

    world: int
    owner: dict[str, int] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.world, int) or self.world < 1:
            raise ValueError(f"world: must be a positive int, got {self.world!r}")

    def rows(self) -> dict[int, int]:
        out = {r: 0 for r in range(self.world)}
        for j in self.active:
            out[self.owner[j]] += self.batch[j]
        return out

    def plan(self, active_only: bool = True) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {r: [] for r in range(self.world)}
        for j in sorted(self.owner):
            if j in self.active or not active_only:
                out[self.owner[j]].append(j)
        return out

    def place(self, job_id: str, batch_size: int) -> int:
        if job_id in self.owner:
            raise ValueError(f"job_id: {job_id!r} is already placed on rank {self.owner[job_id]}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
        rows, counts = self.rows(), {r: len(js) for r, js in self.plan().items()}
        r = min(range(self.world), key=lambda r: (rows[r], counts[r], r))
        self.owner[job_id], self.batch[job_id] = r, batch_size
        self.active.add(job_id)
        return r

    def _known(self, job_id: str) -> int:
        if job_id not in self.owner:
            raise ValueError(f"job_id: {job_id!r} is not placed")
        return self.owner[job_id]

    def set_active(self, job_id: str, active: bool) -> int:
        r = self._known(job_id)
        (self.active.add if active else self.active.discard)(job_id)
        return r

    def remove(self, job_id: str) -> int:
        r = self._known(job_id)
        del self.owner[job_id], self.batch[job_id]
        self.active.discard(job_id)
        return r

    def rebalance(self, keep: list[int] | None = None) -> list[tuple[str, int, int]]:
        """Moves (job, src, dst) that even the active rows over `keep` (default: all ranks);
        inactive adapters on a rank outside `keep` move too (to the keeper holding fewest
        adapters). Applied to self; pass each to `APTrainer.migrate` in order."""
        keep = list(range(self.world)) if keep is None else sorted(set(keep))
        moves = rebalance(self.plan(), self.batch, keep)
        for j, _, dst in moves:
            self.owner[j] = dst
        for j in sorted(j for j, r in self.owner.items() if r not in keep):
            counts = {r: 0 for r in keep}
            for r in self.owner.values():
                if r in counts:
                    counts[r] += 1
            dst = min(keep, key=lambda r: (counts[r], r))
            moves.append((j, self.owner[j], dst))
            self.owner[j] = dst
        return moves

    def shrink(self, keep: list[int]) -> None:
        """Renumber after `APTrainer.shrink(keep)`: rank keep[i] becomes rank i."""
        held = {r for r in self.owner.values()}
        if held - set(keep):
            raise ValueError(f"keep: ranks {sorted(held - set(keep))} still own adapters")
        new = {r: i for i, r in enumerate(sorted(set(keep)))}
        self.owner = {j: new[r] for j, r in self.owner.items()}
        self.world = len(new)


def apply_action(ap: "APTrainer", placement: Placement, action: object, specs: Mapping[str, "JobSpec"],
                 knobs: Mapping[str, Mapping] | None = None) -> int | None:
    """Carry out one Controller action (Admit, Suspend, Stop; StartTask/FinishTask are the
    executor's) on the owning rank, with the runtime's one executor (altoruntime/actions.py); every
    rank calls it with the same action so placements stay equal. `knobs`: per job, admit's
    lr-schedule and clipping arguments (`task_runner.train_knobs`), where the task sets them.
    Returns the owner rank (None if no adapter is touched). Not collective: after a batch of
    actions, call `ap.migrate(*m)` for each m of `placement.rebalance()` (all ranks), and
    `ap.shrink` once a rank owns nothing."""
    kind = getattr(action, "kind", None)
    if kind not in ("admit", "suspend", "stop"):
        return None
    job_id = action.job_id
    if kind == "admit" and not action.resume:
        r = placement.place(job_id, specs[job_id].batch_size)
    elif kind in ("admit", "suspend"):
        r = placement.set_active(job_id, kind == "admit")
    elif job_id not in placement.owner:  # never admitted (fits nowhere): nothing to free
        return None
    else:
        r = placement.set_active(job_id, False)
    if ap.rank == r:
        carry_out(ap, action, specs.get(job_id), (knobs or {}).get(job_id))  # type: ignore[arg-type]
    return r
