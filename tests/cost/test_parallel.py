"""AP vs FSDP step formulas on hand-computed cases (a toy shape, a slow link, a fake compute)."""

from __future__ import annotations

import pytest

from altosim.cost import ModelShape, StepEstimate, cost_model_for, model_shape
from altosim.cost.parallel import (
    Link, adapter_grad_bytes, allgather_s, allreduce_s, ap_step, fsdp_step, gathered_bytes, overlapped,
)

# layer params 2*4*4 + 2*4*2 + 3*4*8 = 144; proj_io 64; embeddings 10*4 = 40
TOY = ModelShape("toy", params=1000, layers=2, hidden=4, intermediate=8, kv_dim=2, vocab=10)
SLOW = Link(gbytes_per_s=1e-6, latency_s=0.0)  # 1000 bytes/s


def fake_single(a: int, r: float, b: float, s: int) -> StepEstimate:
    return StepEstimate(seconds=a * b * s * 1e-3, extrapolated=(b > 4), source="fake")


def test_shape_and_bytes_by_hand():
    assert (TOY.layer_params, TOY.proj_io) == (144, 64)
    assert gathered_bytes(TOY) == 2 * (2 * 2 * 144 + 2 * 40 + 40) == 1392
    assert allgather_s(TOY, 4, SLOW) == pytest.approx(1392 * 3 / 4 / 1000)
    assert allgather_s(TOY, 2, Link(1e-6, latency_s=1e-3)) == pytest.approx(7 * 1e-3 + 1392 / 2 / 1000)
    assert allgather_s(TOY, 1, SLOW) == 0.0 and allreduce_s(1e6, 1, SLOW) == 0.0
    assert allreduce_s(1000, 4, SLOW) == pytest.approx(2 * 1000 * 3 / 4 / 1000)
    assert adapter_grad_bytes(TOY, 8, 16) == 4 * 8 * 16 * 64 * 2


def test_overlap_bounds():
    assert overlapped(1.0, 3.0, 1.0) == 3.0  # fully hidden: the longer one
    assert overlapped(1.0, 3.0, 0.0) == 4.0  # none hidden: the sum
    assert overlapped(2.0, 1.0, 0.5) == 2.5
    with pytest.raises(ValueError, match="overlap"):
        overlapped(1.0, 1.0, 1.5)


def test_ap_step_by_hand():
    s = ap_step(fake_single, TOY, gpus=4, adapters=8, rank=16, batch=2, seq_len=10, link=SLOW, overlap=0.5)
    assert (s.impl, s.adapters_per_rank, s.rows_per_adapter, s.padded) == ("ap", 2, 2, 0)
    assert s.compute_s == pytest.approx(2 * 2 * 10e-3)  # 2 whole adapters, full batch
    assert s.allgather_s == pytest.approx(1.044)
    assert s.allreduce_s == pytest.approx(2 * 8 * 0.75 / 1000)  # the agreement only
    assert s.step_s == pytest.approx(0.04 + 1.044 - 0.5 * 0.04 + 0.012)


def test_fsdp_step_by_hand_pads_and_all_reduces():
    s = fsdp_step(fake_single, TOY, gpus=4, adapters=8, rank=16, batch=2, seq_len=10, link=SLOW, overlap=0.5)
    assert (s.impl, s.adapters_per_rank, s.rows_per_adapter, s.padded) == ("fsdp", 8, 1, 16)  # 2 rows on 4 ranks
    assert s.compute_s == pytest.approx(8 * 1 * 10e-3)
    grads = 4 * 8 * 16 * 64 * 2 + 4 * 8
    assert s.allreduce_s == pytest.approx(2 * grads * 0.75 / 1000)
    assert s.step_s == pytest.approx(0.08 + 1.044 - 0.5 * 0.08 + 2 * grads * 0.75 / 1000)


def test_uneven_splits_and_one_gpu():
    ap = ap_step(fake_single, TOY, gpus=2, adapters=5, rank=8, batch=3, seq_len=10, link=SLOW)
    assert (ap.adapters_per_rank, ap.padded) == (3, 3)  # one rank short of an adapter: 3 dummy rows
    fs = fsdp_step(fake_single, TOY, gpus=2, adapters=5, rank=8, batch=3, seq_len=10, link=SLOW)
    assert (fs.rows_per_adapter, fs.padded) == (2, 5)
    one = ap_step(fake_single, TOY, gpus=1, adapters=8, rank=8, batch=8, seq_len=10, link=SLOW)
    assert one.step_s == pytest.approx(8 * 8 * 10e-3) and one.extrapolated and one.source == "fake"
    with pytest.raises(ValueError, match="gpus"):
        ap_step(fake_single, TOY, gpus=0, adapters=8, rank=8, batch=1, seq_len=10, link=SLOW)
    with pytest.raises(ValueError, match="gbytes_per_s"):
        Link(0.0)


def test_ap_beats_fsdp_when_batches_do_not_split():
    cm = cost_model_for("H100")
    shape = model_shape("llama-3.1-70b")

    def single(a, r, b, s):
        return cm.single_step("llama-3.1-70b", a, r, b, s)

    link = Link(360.0)
    for p in (2, 4, 8):
        ap = ap_step(single, shape, p, 8, 16, 1, 256, link)
        fs = fsdp_step(single, shape, p, 8, 16, 1, 256, link)
        assert fs.padded == 8 * (p - 1) and ap.padded == 0
        assert ap.step_s < fs.step_s
