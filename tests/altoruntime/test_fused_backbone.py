"""altoruntime/fused_backbone.py: which modules a Llama-family model gets fused ops for, and (the
Triton kernels run through Triton's interpreter, in a subprocess) that the swapped model's logits,
backbone gradients, LoRA training and greedy decoding equal the plain model's."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.trainer import env_paths, trainer_from_env

ROOT = Path(__file__).resolve().parents[2]
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny(family: str) -> torch.nn.Module:
    """A random 2-layer decoder of `family`, frozen, eager attention (as tiny_llama)."""
    if family == "llama":
        return tiny_llama(seed=0)
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM

    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    if family == "mistral":
        cfg = MistralConfig(**shape, sliding_window=5)
        model = MistralForCausalLM(cfg)
    elif family == "qwen2":  # layer 1 of 2 slides (window 5), layer 0 does not
        cfg = Qwen2Config(**shape, use_sliding_window=True, sliding_window=5, max_window_layers=1)
        model = Qwen2ForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)
        model = GPT2LMHeadModel(cfg)
    cfg._attn_implementation = "eager"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def swapped(model: torch.nn.Module) -> list[str]:
    """Names of the modules whose forward is their own (set on the instance)."""
    return [n for n, m in model.named_modules() if "forward" in m.__dict__]


def test_nothing_is_swapped_on_cpu():
    model = tiny_llama()
    fused = fuse_backbone(model)
    assert (fused.rms_norm, fused.swiglu, fused.rope) == (0, 0, 0) and "cpu" in fused.skipped
    assert swapped(model) == []


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_llama_family_norms_mlps_and_attentions_are_swapped_weights_kept(family):
    model = tiny(family)
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    fused = fuse_backbone(model, allow_cpu=True)
    assert (fused.rms_norm, fused.swiglu, fused.rope, fused.skipped) == (5, 2, 2, "")  # 2 layers x 2 + final norm
    assert str(fused) == "fused backbone: rms_norm x5, swiglu x2, rope x2"
    leaves = sorted({n.rsplit(".", 1)[-1] for n in swapped(model)})
    assert leaves == ["input_layernorm", "mlp", "norm", "post_attention_layernorm", "self_attn"]
    assert not any(n.endswith(PROJ) for n in swapped(model))  # the projections (LoRA's) stay as they are
    after = model.state_dict()
    assert list(after) == list(before)  # the same tree, the very same tensors
    for k, (ptr, v) in before.items():
        assert after[k].data_ptr() == ptr and torch.equal(after[k], v)


def test_a_gpt2_model_is_left_untouched():
    model = tiny("gpt2")
    fused = fuse_backbone(model, allow_cpu=True)
    assert fused.skipped.startswith("model type 'gpt2' is not one of llama")
    assert swapped(model) == []


def test_a_swapped_model_copies_and_pickles_bound_to_its_copy():
    model = tiny_llama()
    fuse_backbone(model, allow_cpu=True)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        for name in swapped(model):
            mine = clone.get_submodule(name)
            assert mine.forward.args[0] is mine  # not the original's module


def test_the_switch_is_validated_off_on_cpu_and_in_the_paths():
    with pytest.raises(ValueError, match="^ALTO_FUSED_BACKBONE: expected '0' or '1', got 'yes'"):
        trainer_from_env(tiny_llama(), capacity=1, env={"ALTO_FUSED_BACKBONE": "yes"})
    for env in ({}, {"ALTO_FUSED_BACKBONE": "1"}, {"ALTO_FUSED_BACKBONE": "0"}):  # CPU: never swapped
        assert swapped(trainer_from_env(tiny_llama(), capacity=1, env=env).model) == []
    assert env_paths({"ALTO_FUSED_BACKBONE": "0"}) == "lora=auto optim=fused fused_backbone=0"
    assert env_paths({"ALTO_FUSED_BACKBONE": "1"}) == "lora=auto optim=fused"


SCRIPT = """
import copy, json, sys, torch
import tests.altoruntime._liger_interpret  # noqa: F401 (Liger's kernels under the interpreter)
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.greedy import greedy_generate, supports
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime.test_fused_backbone import tiny

FUSED_OPS = ("RMSNormFunctionBackward", "LigerSiLUMulFunctionBackward", "RopeFunctionBackward")

def nodes(fn, seen):  # every node of the backward graph under fn
    if fn is not None and fn not in seen:
        seen.add(fn)
        for nxt, _ in fn.next_functions:
            nodes(nxt, seen)
    return seen

family = sys.argv[1]
base = tiny(family)
out = {}
for name in ("plain", "fused"):
    model = copy.deepcopy(base)
    if name == "fused":
        fuse_backbone(model, allow_cpu=True)
    grads = [p for n, p in model.named_parameters() if n.endswith(("q_proj.weight", "k_proj.weight",
             "gate_proj.weight", "up_proj.weight", "down_proj.weight", "embed_tokens.weight"))]
    for p in grads:
        p.requires_grad_(True)
    ids, mask, labels = make_batch(3, 3, 12)
    res = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    res.loss.backward()
    ops = sorted({type(f).__name__ for f in nodes(res.loss.grad_fn, set()) if type(f).__name__ in FUSED_OPS})
    for p in grads:
        p.requires_grad_(False)
    prompt, prompt_mask, _ = make_batch(7, 2, 6, pad_tail=False)
    with torch.no_grad():  # per-row positions: rope's cos/sin of batch size 3, not 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0) + torch.arange(3)[:, None]
        by_row = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    with torch.no_grad():  # decoding with a KV cache: the attention hands over to transformers' forward
        tokens = [model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=5, do_sample=False,
                                 pad_token_id=0).tolist()]
        if supports(model):  # alto's static-cache decoding (no sliding windows)
            tokens.append(greedy_generate(model, prompt, prompt_mask, 5, None, 0).tolist())
    tr = MultiAdapterTrainer(model, capacity=2)
    tr.admit("a", rank=4, alpha=8, lr=1e-2, seed=1)
    tr.admit("b", rank=2, alpha=4, lr=2e-2, seed=2)
    losses = [tr.step({"a": make_batch(s, 2, 12), "b": make_batch(10 + s, 1, 9)}) for s in range(3)]
    lora = [t.grad.flatten().tolist() for l in tr.store.layers for t in (l.A, l.B)]
    ev = tr.evaluate_tokens({"a": make_batch(99, 3, 10)})["a"].loss_sum
    out[name] = {"logits": res.logits.flatten().tolist(), "grads": [p.grad.flatten().tolist() for p in grads],
                 "by_row": by_row.flatten().tolist(), "ops": ops, "losses": losses, "lora": lora, "eval": ev, "tokens": tokens}
print(json.dumps(out))
"""


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_swapped_model_equals_plain_under_the_interpreter(family):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, family], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, fused = out["plain"], out["fused"]
    assert plain["ops"] == []  # the fused kernels really ran in the swapped model's backward
    assert fused["ops"] == ["LigerSiLUMulFunctionBackward", "RMSNormFunctionBackward", "RopeFunctionBackward"]

    def close(a, b, tol=1e-5):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=tol, atol=tol * 1e-2)

    close(plain["logits"], fused["logits"])
    close(plain["by_row"], fused["by_row"])
    for a, b in zip(plain["grads"], fused["grads"], strict=True):
        close(a, b, 1e-4)
    assert any(any(v != 0 for v in g) for g in plain["lora"])  # LoRA gradients flowed (B's after step 1)
    for a, b in zip(plain["lora"], fused["lora"], strict=True):
        close(a, b, 1e-4)
    for s0, s1 in zip(plain["losses"], fused["losses"], strict=True):
        assert s1 == pytest.approx(s0, rel=1e-5)
    assert fused["eval"] == pytest.approx(plain["eval"], rel=1e-5)
    assert fused["tokens"] == plain["tokens"]
