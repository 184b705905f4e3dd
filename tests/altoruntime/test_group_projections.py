"""ALTO_GROUP_PROJECTIONS=1: a fused backbone's q/k/v and gate/up make one LoRA call each
(`lora_layer.lora_group`), which trains exactly as the per-projection calls do, with 24 instead of
42 LoRA launches per decoder layer; with dropout (a mask per projection) the calls stay per projection.

The trainer runs on the Triton path under Triton's CPU interpreter, in a subprocess (it must be set
before triton is imported), with Liger's fused backbone kernels interpreted too.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.lora_layer import LoraContext, install_lora_layers, lora_group
from altoruntime.trainer import env_paths, trainer_from_env
from tests.altoruntime._runtime_helpers import assert_step_results_close, assert_sums_close, run_interpreted

LAYERS = 2

SCRIPT = """
import copy, json, torch
import tests.altoruntime._liger_interpret  # noqa: F401 (Liger's kernels under the interpreter)
from altokernels import launch
from altoruntime.backbone import tiny_llama
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.trainer import trainer_from_env
from tests.altoruntime._batches import make_batch

names = []
real = launch.launch
def counting(fn, *args, **kw):  # every Triton launch of alto's LoRA kernels
    names.append(fn.fn.__name__)
    return real(fn, *args, **kw)
launch.launch = counting

base = tiny_llama(hidden=32, intermediate=48, layers=%d, heads=4, kv_heads=2)  # GQA: k/v 16 wide, q 32
out = {}
for dropout, group in ((d, g) for d in (0.0, 0.1) for g in ("0", "1")):
    torch.manual_seed(0)  # the dropout masks' draws
    model = copy.deepcopy(base)
    fuse_backbone(model, allow_cpu=True)
    tr = trainer_from_env(model, capacity=4, env={"ALTO_LORA_IMPL": "triton", "ALTO_FUSED_BACKBONE": "0",
                                                  "ALTO_GROUP_PROJECTIONS": group})
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1, dropout=dropout)
    tr.admit("b", rank=2, alpha=4, lr=2e-2, seed=2)
    tr.admit("c", rank=8, alpha=8, lr=1e-2, seed=3)
    losses, launches, kinds = [], [], set()
    for s in range(2 if dropout == 0 else 1):  # (the interpreter is slow)
        names.clear()
        losses.append(tr.step({"a": make_batch(s, 2, 12), "b": make_batch(10 + s, 1, 9), "c": make_batch(20 + s, 2, 7)}))
        launches.append(len(names))
        kinds |= set(names)
    names.clear()
    ev = {j: r.loss_sum for j, r in tr.evaluate_tokens({"a": make_batch(99, 2, 10), "c": make_batch(98, 1, 6)}).items()}
    out[f"{dropout}/{group}"] = {"losses": losses, "launches": launches, "eval": ev, "eval_launches": len(names),
                  "kinds": sorted(kinds | set(names)),
                  "w": {j: [float(a.abs().sum()) + float(b.abs().sum()) for _, a, b in tr.adapter_weights(j)]
                        for j in "abc"}}
print(json.dumps(out))
""" % LAYERS


@functools.cache
def _runs() -> dict:
    """Dropout 0 and 0.1, each with the group off and on (one subprocess: the interpreter is slow)."""
    return run_interpreted(SCRIPT)


def _close(off: dict, on: dict) -> None:
    assert_step_results_close(off["losses"], on["losses"], rel=1e-5)
    assert_step_results_close([off["eval"]], [on["eval"]], rel=1e-5)
    for j in "abc":
        assert_sums_close(off["w"][j], on["w"][j], rel=1e-5)
        assert sum(off["w"][j]) > 0


def test_grouped_projections_train_as_per_projection_with_fewer_launches():
    off, on = _runs()["0.0/0"], _runs()["0.0/1"]
    _close(off, on)
    assert not any(k.startswith("_member") for k in off["kinds"])
    assert {"_member_shrink_kernel", "_member_expand_kernel", "_member_seg_reduce_kernel"} <= set(on["kinds"])
    # per decoder layer: 7 projections x 6 launches, or q/k/v and gate/up as 6 each plus o and down 6 each;
    # layer 0's q/k/v input (a norm of the frozen embeddings) wants no gradient: no dX expand there
    assert off["launches"] == [42 * LAYERS - 3] * 2
    assert on["launches"] == [24 * LAYERS - 1] * 2
    assert off["eval_launches"] == 14 * LAYERS and on["eval_launches"] == 8 * LAYERS  # forward: shrink + expand


def test_with_dropout_the_projections_run_one_by_one():
    off, on = _runs()["0.1/0"], _runs()["0.1/1"]
    assert off["losses"] == on["losses"] and off["w"] == on["w"]  # the very same calls and dropout draws
    assert off["launches"] == on["launches"] == [42 * LAYERS - 3]
    assert on["eval_launches"] == 8 * LAYERS  # evaluation draws no mask: grouped


def test_the_switch_is_validated_off_by_default_and_in_the_paths():
    with pytest.raises(ValueError, match="^ALTO_GROUP_PROJECTIONS: expected '0' or '1', got 'yes'"):
        trainer_from_env(tiny_llama(), capacity=1, env={"ALTO_GROUP_PROJECTIONS": "yes"})
    assert not trainer_from_env(tiny_llama(), capacity=1, env={}).ctx.group
    assert trainer_from_env(tiny_llama(), capacity=1, env={"ALTO_GROUP_PROJECTIONS": "1"}).ctx.group
    assert env_paths({"ALTO_GROUP_PROJECTIONS": "1"}) == "lora=auto optim=fused group=1"
    assert env_paths({"ALTO_GROUP_PROJECTIONS": "0"}) == "lora=auto optim=fused"


def test_lora_group_calls_each_layer_where_the_group_does_not_apply():
    """Off, on the torch paths, with no adapters applied, or with a plain projection among the
    members, `lora_group` returns exactly what calling each module returns."""
    model = tiny_llama(hidden=32, intermediate=48, layers=1)
    attn = model.model.layers[0].self_attn
    ctx = LoraContext(impl="torch_grouped", group=True)
    install_lora_layers(model, ["q_proj", "k_proj"], ctx, capacity=2, r_max=4)  # v_proj stays a plain nn.Linear
    x = torch.randn(2, 5, 32)
    calls = []
    for m in (attn.q_proj, attn.k_proj, attn.v_proj):
        m.register_forward_hook(lambda mod, i, o: calls.append(mod))
    members = (attn.q_proj, attn.k_proj, attn.v_proj)
    from altokernels import build_meta

    for group, meta in itertools.product((False, True), (None, build_meta([5, 5], [0, 1], [4, 2], [2.0, 1.0], "cpu"))):
        ctx.group, ctx.meta = group, meta
        for layers in (members, members[:2]):
            calls.clear()
            got = lora_group(layers, x)
            assert calls == list(layers)  # each module called, in order
            for y, m in zip(got, layers):
                assert torch.equal(y, m(x))


# --------------------------------------------------------------------------- on CUDA (the lead's H200)


def _gpu_trainer(base, group: str, graphs: str):  # noqa: ANN001, ANN202
    import copy

    return trainer_from_env(copy.deepcopy(base), capacity=2,
                            env={"ALTO_GROUP_PROJECTIONS": group, "ALTO_CUDA_GRAPHS": graphs})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_steps_equal_per_projection_steps_eager_and_captured():
    """fp32, the fused backbone (the default on CUDA): per projection eager, grouped eager and grouped
    through captured CUDA graphs take the same losses and end with the same adapters across admits,
    suspends, drops and regrowth (`test_step_graphs._script`)."""
    from tests.altoruntime._runtime_helpers import assert_scripted_runs_agree
    from tests.altoruntime.test_step_graphs import _script

    base = tiny_llama(seed=0).cuda()
    runs = {k: _gpu_trainer(base, *k) for k in (("0", "0"), ("1", "0"), ("1", "1"))}
    results = {k: _script(tr) for k, tr in runs.items()}
    assert_scripted_runs_agree(runs, results, reference=("0", "0"), graphed=("1", "1"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_steps_launch_fewer_kernels():
    """Eager bf16 steps of two SmolLM2-shaped layers: the CUDA kernels per step, per projection and grouped."""
    from tests.altoruntime._batches import make_batch

    base = tiny_llama(hidden=576, heads=9, kv_heads=3, intermediate=1536, layers=2, vocab=256,
                      dtype=torch.bfloat16).cuda()
    counts = {}
    for group in ("0", "1"):
        tr = _gpu_trainer(base, group, "0")
        tr.admit("a", rank=8, alpha=16, lr=1e-3, seed=1)
        tr.admit("b", rank=4, alpha=8, lr=1e-3, seed=2)
        batches = {"a": make_batch(1, 2, 32), "b": make_batch(2, 2, 32)}
        tr.step(batches)  # compile outside the count
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            tr.step(batches)
            torch.cuda.synchronize()
        counts[group] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"kernels per eager step, 2 SmolLM2-shaped layers: per projection {counts['0']}, grouped {counts['1']}")
    assert counts["0"] > 0, "the profiler saw no CUDA kernels"
    assert counts["0"] - counts["1"] >= 2 * 18 - 2, counts  # 18 LoRA launches fewer per layer (16 in layer 0)
