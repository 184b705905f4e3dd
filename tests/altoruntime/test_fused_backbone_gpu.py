"""On CUDA: a backbone with the fused RMSNorm, rope and SwiGLU (altoruntime/fused_backbone.py) gives
the plain backbone's logits and gradients, trains the same adapters eagerly and through captured CUDA
graphs, and launches fewer kernels per step."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.trainer import MultiAdapterTrainer, trainer_from_env
from tests.altoruntime._batches import make_batch
from tests.altoruntime._runtime_helpers import assert_scripted_runs_agree
from tests.altoruntime.test_step_graphs import _script

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
# SmolLM2-135M's layer shapes (hidden 576, 9 heads of 64, 3 KV heads, MLP 1536), two layers
SMOL = dict(hidden=576, heads=9, kv_heads=3, intermediate=1536, layers=2, vocab=256)
GRADS = ("q_proj.weight", "k_proj.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight",
         "embed_tokens.weight")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype, tol, grad_tol", [(torch.float32, 1e-5, 1e-4), (torch.bfloat16, 3e-2, 6e-2)])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_fused_backbone_gives_plain_logits_and_gradients(dtype, tol, grad_tol, attn):
    base = tiny_llama(**SMOL, dtype=dtype).cuda()
    base.config._attn_implementation = attn
    ids, mask, labels = (t.cuda() for t in make_batch(5, 4, 40))
    out = {}
    for name in ("plain", "fused"):
        model = copy.deepcopy(base)
        if name == "fused":
            fused = fuse_backbone(model)
            assert (fused.rms_norm, fused.swiglu, fused.rope) == (5, 2, 2), fused
        params = [p for n, p in model.named_parameters() if n.endswith(GRADS)]
        for p in params:
            p.requires_grad_(True)
        res = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        res.loss.backward()
        out[name] = (res.logits, [p.grad for p in params])
    (l0, g0), (l1, g1) = out["plain"], out["fused"]
    assert _rel(l1, l0) < tol
    for a, b in zip(g0, g1, strict=True):
        assert _rel(b, a) < grad_tol  # bf16: the same math, rounded in another order


def _trainer(base: torch.nn.Module, fused: str, graphs: str) -> MultiAdapterTrainer:
    tr = trainer_from_env(copy.deepcopy(base), capacity=2,
                          env={"ALTO_FUSED_BACKBONE": fused, "ALTO_CUDA_GRAPHS": graphs})
    on = [n for n, m in tr.model.named_modules() if "forward" in m.__dict__]
    assert bool(on) == (fused == "1"), on
    return tr


def test_fused_backbone_trains_the_same_adapters_eager_and_captured():
    """fp32: the plain eager trainer, the fused eager one and the fused captured one (CUDA graphs) take
    the same losses and end with the same adapters across admits, suspends, drops and regrowth."""
    base = tiny_llama(seed=0).cuda()
    runs = {k: _trainer(base, *k) for k in (("0", "0"), ("1", "0"), ("1", "1"))}
    results = {k: _script(tr) for k, tr in runs.items()}
    assert_scripted_runs_agree(runs, results, reference=("0", "0"), graphed=("1", "1"))


def test_bf16_captured_fused_steps_equal_eager_fused_steps():
    base = tiny_llama(**SMOL, dtype=torch.bfloat16).cuda()
    losses = {}
    for graphs in ("0", "1"):
        tr = _trainer(base, "1", graphs)
        tr.admit("a", rank=8, alpha=16, lr=1e-3, seed=1)
        tr.admit("b", rank=4, alpha=8, lr=2e-3, seed=2)
        losses[graphs] = [tr.step({"a": make_batch(s, 2, 32), "b": make_batch(50 + s, 3, 24)}) for s in range(5)]
        if graphs == "1":
            assert tr.graphs.disabled is None and tr.graphs.stats["replayed"] > 0, tr.graphs.failure_trace
    # captured steps pad rows and length to powers of two: other bf16 GEMM shapes, other roundings
    for a, b in zip(losses["0"], losses["1"], strict=True):
        assert b == pytest.approx(a, rel=5e-3)


def _kernels_per_step(tr: MultiAdapterTrainer) -> int:
    batches = {"a": make_batch(1, 2, 32), "b": make_batch(2, 2, 32)}
    tr.step(batches)  # compile and autotune outside the count
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        tr.step(batches)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def test_fused_backbone_launches_fewer_kernels_per_step():
    """Eager steps (no graphs) of SmolLM2-shaped layers: the fused backbone's kernel count is lower."""
    base = tiny_llama(**SMOL, dtype=torch.bfloat16).cuda()
    counts = {}
    for fused in ("0", "1"):
        tr = _trainer(base, fused, "0")
        tr.admit("a", rank=8, alpha=16, lr=1e-3, seed=1)
        tr.admit("b", rank=4, alpha=8, lr=1e-3, seed=2)
        counts[fused] = _kernels_per_step(tr)
    print(f"kernels per eager step, 2 SmolLM2-shaped layers: plain {counts['0']}, fused {counts['1']}")
    assert counts["0"] > 0, "the profiler saw no CUDA kernels"
    assert counts["1"] < counts["0"], counts


def test_greedy_decoding_of_a_fused_backbone_equals_the_plain_one():
    """A captured decode step (a KV cache: the attention runs transformers' forward, the norms and MLPs
    the fused ops) yields the plain model's tokens."""
    from altoruntime.greedy import greedy_generate

    base = tiny_llama(seed=1).cuda()
    base.config._attn_implementation = "sdpa"
    ids, mask, _ = (t.cuda() for t in make_batch(3, 3, 8, pad_tail=False))
    out = []
    for fused in (False, True):
        model = copy.deepcopy(base)
        if fused:
            fuse_backbone(model)
        info: dict = {}
        out.append(greedy_generate(model, ids, mask, 12, None, 0, cuda_graph=True, info=info))
        assert info["captured"], info
    assert torch.equal(out[0], out[1])
