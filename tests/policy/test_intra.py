"""MemoryModel and the intra-task admission rule (pick_admissions)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.policy.intra import fits_alone, group_by_batch, pick_admissions
from altosim.policy.memory import MemoryModel
from altosim.policy.types import JobSpec

GB = 1024**3


def job(i: int, batch: int, task: str = "t") -> JobSpec:
    return JobSpec(job_id=f"j{i}", task_id=task, lr=1e-4, rank=8, batch_size=batch)


# ---------------------------------------------------------------------------------------------
# MemoryModel
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    k0=st.floats(1e8, 6e10),
    k1=st.floats(1e3, 1e6),
    grid=st.lists(st.tuples(st.integers(1, 64), st.sampled_from([128, 256, 512, 1024])), min_size=2, max_size=12, unique=True),
)
def test_fit_recovers_k0_k1_from_exact_points(k0: float, k1: float, grid: list[tuple[int, int]]) -> None:
    if len({b * l for b, l in grid}) < 2:
        grid = grid + [(grid[0][0] + 1, grid[0][1])]
    points = [(b, l, k0 + k1 * b * l) for b, l in grid]
    m = MemoryModel.fit(points, capacity=80 * GB, margin=0.1)
    assert m.k0 == pytest.approx(k0, rel=1e-6, abs=1e-3 * k1 * 128)
    assert m.k1 == pytest.approx(k1, rel=1e-6)
    assert m.capacity == 80 * GB and m.margin == 0.1


def test_fit_needs_two_distinct_token_counts() -> None:
    with pytest.raises(ValueError, match="distinct"):
        MemoryModel.fit([(2, 512, 1e9), (4, 256, 1.1e9)], capacity=GB)  # both 1024 tokens
    with pytest.raises(ValueError, match="empty"):
        MemoryModel.fit([], capacity=GB)


def test_fit_rejects_shrinking_memory() -> None:
    with pytest.raises(ValueError, match="k1"):
        MemoryModel.fit([(1, 512, 2e9), (8, 512, 1e9)], capacity=8 * GB)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(k0=1e9, k1=0.0, capacity=GB), "k1"),
        (dict(k0=1e9, k1=1.0, capacity=0.0), "capacity"),
        (dict(k0=1e9, k1=1.0, capacity=GB, margin=1.0), "margin"),
        (dict(k0=float("nan"), k1=1.0, capacity=GB), "k0"),
    ],
)
def test_memory_model_rejects_bad_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MemoryModel(**kwargs)


@settings(max_examples=80, deadline=None)
@given(
    k0=st.floats(0, 7e10),
    k1=st.floats(10.0, 1e7),
    margin=st.floats(0.0, 0.5),
    seq_len=st.integers(1, 4096),
)
def test_max_total_batch_is_the_fit_boundary(k0: float, k1: float, margin: float, seq_len: int) -> None:
    m = MemoryModel(k0=k0, k1=k1, capacity=80 * GB, margin=margin)
    b = m.max_total_batch(seq_len)
    assert not m.fits(b + 1, seq_len)
    if b > 0 or m.fits(0, seq_len):
        assert m.fits(b, seq_len)
    assert m.predict(b, seq_len) == pytest.approx(k0 + k1 * b * seq_len)


def test_fits_uses_the_margin() -> None:
    m = MemoryModel(k0=0.0, k1=1.0, capacity=1000.0, margin=0.1)  # budget 900 bytes
    assert m.fits(900, 1) and not m.fits(901, 1)
    assert m.max_total_batch(1) == 900 and m.max_total_batch(9) == 100


# ---------------------------------------------------------------------------------------------
# pick_admissions
# ---------------------------------------------------------------------------------------------

# budget 100 tokens with seq_len 1: total batch <= 100
MEM = MemoryModel(k0=0.0, k1=1.0, capacity=100.0, margin=0.0)


def test_greedy_in_decreasing_batch_and_skips_what_does_not_fit() -> None:
    cands = [job(1, 8), job(2, 64), job(3, 32), job(4, 16), job(5, 32)]
    got = pick_admissions([], cands, MEM, seq_len=1)
    # 64 + 32 = 96; the second 32 and the 16 do not fit; the 8 does not either (104)
    assert [j.job_id for j in got] == ["j2", "j3"]
    got = pick_admissions([job(9, 60)], cands, MEM, seq_len=1)
    assert [j.job_id for j in got] == ["j3", "j1"]  # 60+32=92, 16 no, 8 -> 100


def test_same_batch_size_keeps_queue_order() -> None:
    cands = [job(1, 4), job(2, 8), job(3, 4), job(4, 8)]
    got = pick_admissions([], cands, None, seq_len=1)
    assert [j.job_id for j in got] == ["j2", "j4", "j1", "j3"]


def test_prefer_batch_backfills_same_size_first() -> None:
    running = [job(10, 32), job(11, 32), job(12, 16)]  # 80 of 100 used; a batch-16 job just left
    cands = [job(1, 20), job(2, 16), job(3, 4)]
    assert [j.job_id for j in pick_admissions(running, cands, MEM, 1)] == ["j1"]
    assert [j.job_id for j in pick_admissions(running, cands, MEM, 1, prefer_batch=16)] == ["j2", "j3"]
    # no waiting job of that size: any that fits, largest first
    assert [j.job_id for j in pick_admissions(running, cands, MEM, 1, prefer_batch=2)] == ["j1"]


def test_max_jobs_caps_the_group() -> None:
    cands = [job(i, 1) for i in range(10)]
    assert len(pick_admissions([job(99, 1)], cands, None, 1, max_jobs=4)) == 3
    assert pick_admissions([job(98, 1), job(99, 1)], cands, None, 1, max_jobs=2) == []
    assert len(pick_admissions([], cands, None, 1)) == 10


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        pick_admissions([], [job(1, 1)], MEM, 0)
    with pytest.raises(ValueError, match="max_jobs"):
        pick_admissions([], [job(1, 1)], MEM, 1, max_jobs=-1)
    with pytest.raises(ValueError, match="duplicate"):
        pick_admissions([], [job(1, 1), job(1, 2)], MEM, 1)
    with pytest.raises(ValueError, match="already running"):
        pick_admissions([job(1, 1)], [job(1, 1)], MEM, 1)


batches = st.sampled_from([1, 2, 4, 8, 16, 32])


@settings(max_examples=150, deadline=None)
@given(
    run_b=st.lists(batches, max_size=5),
    cand_b=st.lists(batches, max_size=12),
    budget=st.integers(0, 120),
    max_jobs=st.one_of(st.none(), st.integers(0, 10)),
    prefer=st.one_of(st.none(), batches),
)
def test_admission_properties(run_b, cand_b, budget, max_jobs, prefer) -> None:
    mem = MemoryModel(k0=0.0, k1=1.0, capacity=float(budget) + 1e-9, margin=0.0)
    running = [job(100 + i, b) for i, b in enumerate(run_b)]
    cands = [job(i, b) for i, b in enumerate(cand_b)]
    got = pick_admissions(running, cands, mem, 1, max_jobs=max_jobs, prefer_batch=prefer)
    assert got == pick_admissions(running, cands, mem, 1, max_jobs=max_jobs, prefer_batch=prefer)  # deterministic
    ids = [j.job_id for j in got]
    assert len(set(ids)) == len(ids) and set(ids) <= {j.job_id for j in cands}
    total = sum(run_b) + sum(j.batch_size for j in got)
    if got:
        assert mem.fits(total, 1)  # memory respected
    if max_jobs is not None:
        assert len(running) + len(got) <= max(max_jobs, len(running))
    # order: preferred size first, then non-increasing batch, queue order within a size
    key = [(0 if j.batch_size == prefer else 1, -j.batch_size, int(j.job_id[1:])) for j in got]
    assert key == sorted(key)
    # maximal: with room in the cap, no skipped candidate fits on top of the final group
    if max_jobs is None or len(running) + len(got) < max_jobs:
        for c in cands:
            if c.job_id not in ids:
                assert not mem.fits(total + c.batch_size, 1)


def test_helpers() -> None:
    jobs = [job(1, 4), job(2, 16), job(3, 4)]
    g = group_by_batch(jobs)
    assert list(g) == [16, 4] and [j.job_id for j in g[4]] == ["j1", "j3"]
    assert fits_alone(job(1, 100), MEM, 1) and not fits_alone(job(1, 101), MEM, 1)
    assert fits_alone(job(1, 10**6), None, 1)
