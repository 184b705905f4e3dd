"""Fused Triton ops for a Llama-family backbone's own elementwise work (alto's and Liger-Kernel's), per model instance.

Why: with its steps captured as CUDA graphs a fused multi-adapter step is GPU-bound, and about a third
of its ~5,800 kernels (SmolLM2-135M, 4 adapters, H200) are the frozen backbone's small elementwise ops:
each RMSNorm's casts, pow, mean, rsqrt and muls, the rotary embedding's mul/neg/cat/add on q and k, the
MLP's SiLU and product, and their backward. `fuse_backbone` swaps them, on the one model it is given,
for fused autograd Functions (one Triton kernel forward, one backward, capturable: no host syncs):
every RMSNorm's forward for alto's `altokernels.rms_norm.RMSNormFunction` (the inverse RMS in fp32,
cast back before the weight, as transformers computes it; dX only: a norm whose weight trains keeps
Liger's `LigerRMSNormFunction`, casting_mode "llama", which computes dW too), every MLP's act path
for `LigerSiLUMulFunction(gate_proj(x), up_proj(x))`, and every attention's forward for one that
applies alto's `altokernels.rope.RopeFunction` where transformers' forward calls its module-level
`apply_rotary_pos_emb` (that call cannot be swapped per instance, so this forward repeats
transformers' own, line for line; with a KV
cache it hands over to the class's forward). Nothing in transformers is patched; the projections
(alto's LoRA layers), the module tree and every weight stay as they are, so state dicts and PEFT
export see the same model. Only Llama, Mistral and Qwen2 decoders (exact module classes) on CUDA are
swapped (the kernels are Triton); any other model, or a CPU one, is left untouched. Where a call
does not fit (a CPU tensor, a weight of another dtype than its input) the module's own forward runs.
The projections that share an input (q/k/v; gate/up) are called through `lora_layer.lora_group`: one
fused LoRA call for the group where their context asks for it (`LoraContext.group`), else each as before.
alto's RMSNorm and rope replace Liger's because those specialize on the batch (the rope's batch size
is a constexpr, the RMSNorm backward's rows per program an int Triton specializes): an early-exit run
compiled them again whenever its group shrank (H200, session 18); alto's depend on model shapes only.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from altoruntime.lora_layer import lora_group

__all__ = ["FAMILIES", "Fused", "fuse_backbone"]

# config.model_type -> (transformers module, class-name prefix); these decoders share one structure.
# The swapped forwards hold the family's name, not the Python module: a swapped model still deep-copies and pickles.
FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("transformers.models.llama.modeling_llama", "Llama"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "Mistral"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2"),
}


@dataclass(frozen=True)
class Fused:
    """What `fuse_backbone` swapped: module counts, or why it swapped nothing."""

    rms_norm: int = 0
    swiglu: int = 0
    rope: int = 0
    skipped: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"fused backbone: none ({self.skipped})"
        return f"fused backbone: rms_norm x{self.rms_norm}, swiglu x{self.swiglu}, rope x{self.rope}"


def fuse_backbone(model: nn.Module, allow_cpu: bool = False) -> Fused:
    """Swap `model`'s RMSNorms, SwiGLU activations and rotary embeddings for Liger-Kernel's fused ops
    (in place, this instance only) and say what was swapped. allow_cpu: swap a CPU model too (tests
    run the kernels through Triton's interpreter, TRITON_INTERPRET=1); otherwise only a CUDA model."""
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        return Fused(skipped=f"model type {getattr(config, 'model_type', type(model).__name__)!r} is not "
                     f"one of {', '.join(FAMILIES)}")
    param = next(model.parameters(), None)
    if param is None or (param.device.type != "cuda" and not allow_cpu):
        return Fused(skipped=f"on {param.device.type if param is not None else 'no device'}, not CUDA")
    import transformers
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    from altokernels.rms_norm import RMSNormFunction
    from altokernels.rope import RopeFunction

    mod, prefix = FAMILIES[family]
    norm_cls, mlp_cls, attn_cls = (getattr(importlib.import_module(mod), prefix + n)
                                   for n in ("RMSNorm", "MLP", "Attention"))
    silu = getattr(config, "hidden_act", None) in ("silu", "swish")
    rope = int(transformers.__version__.split(".")[0]) >= 5  # the attention forward below is 5.x's
    counts = {"rms_norm": 0, "swiglu": 0, "rope": 0}
    for m in model.modules():
        if type(m) is norm_cls:  # exact classes: a subclass may compute something else
            m.forward = functools.partial(_rms_norm_forward, m, allow_cpu, RMSNormFunction, LigerRMSNormFunction)
            counts["rms_norm"] += 1
        elif type(m) is mlp_cls and silu:
            m.forward = functools.partial(_swiglu_forward, m, allow_cpu, LigerSiLUMulFunction)
            counts["swiglu"] += 1
        elif type(m) is attn_cls and rope:
            m.forward = functools.partial(_rope_attention_forward, m, allow_cpu, RopeFunction, family)
            counts["rope"] += 1
    return Fused(**counts)


def _rms_norm_forward(norm: nn.Module, allow_cpu: bool, fn: Any, liger: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    # transformers returns weight * x.to(input dtype), promoted to the weight's dtype: the kernels'
    # output keeps the input's dtype, so a mixed pair runs the module's own forward
    if not (hidden_states.is_cuda or allow_cpu) or hidden_states.dtype != norm.weight.dtype:
        return type(norm).forward(norm, hidden_states)
    if not norm.weight.requires_grad:  # the frozen backbone's: alto's kernel (dX only, shape-invariant compiles)
        return fn.apply(hidden_states, norm.weight, norm.variance_epsilon)
    # a trained norm weight: Liger's, which computes dW too; in_place: the backward writes dX over dY, as
    # Liger's own Llama patch does (a norm's output feeds only projections here, never a residual add)
    return liger.apply(hidden_states, norm.weight, norm.variance_epsilon, 0.0, "llama", True)


def _swiglu_forward(mlp: nn.Module, allow_cpu: bool, fn: Any, x: torch.Tensor) -> torch.Tensor:
    if not (x.is_cuda or allow_cpu):
        return type(mlp).forward(mlp, x)
    gate, up = lora_group((mlp.gate_proj, mlp.up_proj), x)
    return mlp.down_proj(fn.apply(gate, up))


def _rope_attention_forward(attn: nn.Module, allow_cpu: bool, fn: Any, family: str,
                            hidden_states: torch.Tensor, position_embeddings: Any = None,
                            attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """transformers' {Llama,Mistral,Qwen2}Attention.forward (5.x) with one rope kernel; the cache argument
    is `cache` from 5.25 on, `past_key_values` before; with one given, the class's forward runs."""
    if (kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None or position_embeddings is None
            or not (hidden_states.is_cuda or allow_cpu)):
        return type(attn).forward(attn, hidden_states, position_embeddings, attention_mask, **kwargs)
    kwargs.pop("cache", None)
    kwargs.pop("past_key_values", None)
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, attn.head_dim)
    qkv = lora_group((attn.q_proj, attn.k_proj, attn.v_proj), hidden_states)
    query_states, key_states, value_states = (y.view(hidden_shape).transpose(1, 2) for y in qkv)
    cos, sin = position_embeddings
    # one kernel rotates q and k in place, in the projections' outputs (which no backward reads)
    query_states, key_states = fn.apply(query_states, key_states, cos, sin)
    mod = importlib.import_module(FAMILIES[family][0])  # (a lookup in sys.modules)
    attention_interface = mod.ALL_ATTENTION_FUNCTIONS.get_interface(
        attn.config._attn_implementation, mod.eager_attention_forward)
    if family == "mistral":  # Mistral and Qwen2 pass their sliding window; Llama has none
        kwargs["sliding_window"] = getattr(attn.config, "sliding_window", None)
    elif family == "qwen2":
        kwargs["sliding_window"] = attn.sliding_window
    attn_output, attn_weights = attention_interface(
        attn, query_states, key_states, value_states, attention_mask,
        dropout=0.0 if not attn.training else attn.attention_dropout, scaling=attn.scaling, **kwargs)
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    return attn.o_proj(attn_output), attn_weights
