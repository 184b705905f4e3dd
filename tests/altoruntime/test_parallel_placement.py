"""The AP coordinator's placement and the Controller actions it carries out, rank by rank."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.types import Admit, FinishTask, JobSpec, Stop, Suspend
from altoruntime.parallel import Placement, apply_action


class FakeRank:
    """Stands in for an APTrainer on one rank: records what the owner was asked to do."""

    def __init__(self, rank: int) -> None:
        self.rank, self.calls, self.state = rank, [], {}

    def admit(self, job_id, **kw):
        self.calls.append(("admit", job_id))
        self.state[job_id] = "active"

    def resume(self, job_id):
        self.calls.append(("resume", job_id))
        self.state[job_id] = "active"

    def __contains__(self, job_id):
        return job_id in self.state

    def suspend(self, job_id, keep_optimizer=True):
        self.calls.append(("suspend", job_id))
        self.state[job_id] = "suspended"

    def drop(self, job_id):
        self.calls.append(("drop", job_id))
        del self.state[job_id]

    def status(self, job_id):
        return self.state[job_id]

    def has_best(self, job_id):
        return job_id in self.state  # every admitted adapter here has a snapshot

    def restore_best(self, job_id):
        self.calls.append(("restore_best", job_id))


def _spec(j: str, b: int) -> JobSpec:
    return JobSpec(job_id=j, task_id="t", lr=1e-3, rank=4, batch_size=b)


def test_actions_run_on_the_owner_only_and_placements_agree():
    specs = {j: _spec(j, b) for j, b in [("a", 2), ("b", 2), ("c", 2), ("d", 2)]}
    ranks = [FakeRank(r) for r in range(2)]
    places = [Placement(2) for _ in ranks]
    actions = [Admit("t", j) for j in specs] + [Suspend("t", "a"), Admit("t", "a", resume=True),
                                              Stop("t", "c", "underperforming", restore_best=True), FinishTask("t", (0, 1), None, None)]
    owners = []
    for a in actions:
        got = {apply_action(fr, p, a, specs) for fr, p in zip(ranks, places)}
        assert len(got) == 1  # every rank computed the same owner
        owners.append(got.pop())
    assert owners[:4] == [0, 1, 0, 1] and owners[-1] is None  # round-robin; FinishTask: executor's
    assert places[0] == places[1]
    assert ranks[0].calls == [("admit", "a"), ("admit", "c"), ("suspend", "a"), ("resume", "a"),
                              ("suspend", "c"), ("restore_best", "c")]  # as TaskRunner does
    assert ranks[1].calls == [("admit", "b"), ("admit", "d")]
    assert places[0].rows() == {0: 2, 1: 4}  # c stopped: it no longer counts


def test_stop_of_never_admitted_or_failed_job():
    fr, p = FakeRank(0), Placement(1)
    assert apply_action(fr, p, Stop("t", "zz", "no_fit"), {}) is None
    apply_action(fr, p, Admit("t", "a"), {"a": _spec("a", 1)})
    fr.state["a"] = "failed"
    apply_action(fr, p, Stop("t", "a", "failed"), {})
    assert fr.calls[-1] == ("drop", "a")


@settings(max_examples=60, deadline=None)
@given(bs=st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=16), world=st.integers(2, 5), data=st.data())
def test_rebalance_after_stops_evens_rows_and_empties_released_ranks(bs, world, data):
    p = Placement(world)
    for i, b in enumerate(bs):
        p.place(f"j{i}", b)
    for j in data.draw(st.lists(st.sampled_from(sorted(p.owner)), unique=True)):
        p.set_active(j, False)
    keep = data.draw(st.lists(st.integers(0, world - 1), min_size=1, unique=True))
    before = dict(p.owner)
    moves = p.rebalance(keep)
    for j, src, dst in moves:
        assert before[j] == src and dst in keep
        before[j] = dst
    assert before == p.owner and set(p.owner.values()) <= set(keep)
    rows = [p.rows()[r] for r in keep]
    assert max(rows) - min(rows) <= max(bs)
    p.shrink(keep)
    assert p.world == len(keep) and set(p.owner.values()) <= set(range(len(keep)))


def test_placement_rejects_bad_input():
    p = Placement(2)
    p.place("a", 1)
    with pytest.raises(ValueError, match="already placed"):
        p.place("a", 1)
    with pytest.raises(ValueError, match="batch_size"):
        p.place("b", 0)
    with pytest.raises(ValueError, match="not placed"):
        p.remove("zz")
    with pytest.raises(ValueError, match="still own"):
        p.shrink([1])
    with pytest.raises(ValueError, match="world"):
        Placement(0)
