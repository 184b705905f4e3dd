"""Rank-local adapter parallelism and the FSDP data-parallel baseline, on 2 gloo processes,
equal a single-process MultiAdapterTrainer; a rank whose adapters all exit keeps the
collectives in lockstep (a hang would hit the spawn timeout and fail the test)."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.parallel import spawn
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime import _parallel_worker as w
from tests.altoruntime._runtime_helpers import close_to

WORLD = 2
LRS = {j: lr for j, _, _, lr, *_ in w.JOBS}


def _reference(steps: int, jobs=None) -> tuple[MultiAdapterTrainer, list[dict[str, float]]]:
    jobs = [j for j, *_ in w.JOBS] if jobs is None else jobs
    t = MultiAdapterTrainer(copy.deepcopy(tiny_llama(seed=0)), capacity=2)
    for j, r, a, lr, wd, _, _, seed in w.JOBS:
        if j in jobs:
            t.admit(j, rank=r, alpha=a, lr=lr, weight_decay=wd, seed=seed)
    losses = []
    for s in range(steps):
        b = w.batches(s)
        losses.append(t.step({j: b[j] for j in jobs}))
    return t, losses


# a hang never ends, so any bound catches it; the bound must not catch a slow start: one spawn
# (2 ranks importing torch, then the run) took 42 s on the shared 2-core machine at load 7
SPAWN_TIMEOUT_S = 300


def _run(tmp_path, fn, *args) -> list[dict]:
    spawn(fn, WORLD, (str(tmp_path), *args), timeout_s=SPAWN_TIMEOUT_S)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _assert_same_adapter(got, ref: MultiAdapterTrainer, job: str) -> None:
    moved = 0.0
    for (name, a, b), (rname, ra, rb) in zip(got, ref.adapter_weights(job), strict=True):
        assert name == rname
        close_to(a, ra, LRS[job])
        close_to(b, rb, LRS[job])
        moved += float(b.abs().sum())
    assert moved > 0  # B left its zero init: the comparison is not vacuous


def test_ap_equals_single_process_through_exit_move_and_release(tmp_path):
    out = _run(tmp_path, w.ap_run)
    ref, ref_losses = _reference(w.STEPS)
    plan = w.plan(WORLD)
    # after STEPS steps: every adapter, on the one rank that owns it, equals the reference
    owners = {j: r for r, o in enumerate(out) for j in o["early"]}
    assert owners == {j: r for r, js in plan.items() for j in js} and sorted(owners) == sorted(j for j, *_ in w.JOBS)
    for j, r in owners.items():
        _assert_same_adapter(out[r]["early"][j], ref, j)
        for s in range(w.STEPS):
            assert out[r]["losses"][s][j] == pytest.approx(ref_losses[s][j], rel=1e-5)
    ref_eval = ref.evaluate(w.batches(99))
    for o in out:
        assert o["eval"] and all(v == pytest.approx(ref_eval[j], rel=1e-5) for j, v in o["eval"].items())
        ref_tokens = ref.evaluate_tokens({j: w.batches(99)[j] for j in o["eval_tokens"]})
        assert o["eval_tokens"].keys() == o["eval"].keys()
        for j, r in o["eval_tokens"].items():  # the Trainer protocol's evaluation, rank-local
            assert (r.tokens, r.correct) == (ref_tokens[j].tokens, ref_tokens[j].correct)
            assert r.loss_sum == pytest.approx(ref_tokens[j].loss_sum, rel=1e-5)
        assert o["sharding_before"] == {"frozen_sharded": True, "adapters_local": True}
    # rank 1's adapters exited: it ran step STEPS on dummy rows only (rank 0's row count) ...
    rows = {j: b for j, _, _, _, _, b, _, _ in w.JOBS}
    assert out[1]["losses"][w.STEPS] == {} and out[1]["dummy"][w.STEPS] == sum(rows[j] for j in plan[0])
    assert "'nope' is not active on rank 0" in out[0]["rejected"] and "another rank" in out[1]["rejected"]
    # ... then took MOVED (step STEPS + 1), then all the rest while rank 0 was released
    assert out[1]["losses"][w.STEPS + 1].keys() == {w.MOVED}
    assert out[0]["released"] and out[0]["weights"] == {} and len(out[0]["losses"]) == w.STEPS + 2
    assert not out[1]["released"] and out[1]["world"] == 1
    assert out[1]["sharding"] == {"frozen_sharded": True, "adapters_local": True}
    assert set(out[1]["weights"]) == set(plan[0])
    ref, _ = _reference(w.STEPS + 3, plan[0])
    for j, got in out[1]["weights"].items():
        _assert_same_adapter(got, ref, j)
        assert len(out[1]["history"][j]) == w.STEPS + 3  # loss history moved with the adapter
    assert set(out[0]["history"]) == set(plan[0])  # gathered from both ranks before the release


def test_fsdp_dp_baseline_equals_single_process_and_reports_padding(tmp_path):
    out = _run(tmp_path, w.dp_run)
    ref, ref_losses = _reference(w.STEPS)
    ref_eval = ref.evaluate(w.batches(99))
    for o in out:
        assert o["eval"].keys() == ref_eval.keys()
        assert all(v == pytest.approx(ref_eval[j], rel=1e-5) for j, v in o["eval"].items())
        assert o["padded"] == [2] * w.STEPS  # c and d have batch 1: one dummy row each over 2 ranks
        for j, *_ in w.JOBS:
            _assert_same_adapter(o["weights"][j], ref, j)
            for s in range(w.STEPS):
                assert o["losses"][s][j] == pytest.approx(ref_losses[s][j], rel=1e-5)
