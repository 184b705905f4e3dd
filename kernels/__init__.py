"""Fused multi-adapter LoRA linear layers: Triton kernels, the plain-torch reference, autograd.

    meta = build_meta(token_counts, slots, ranks, scales, device, dropout=None)   # once per step
    y = multi_lora_linear(x, weight, bias, A, B, meta, impl="auto")              # every layer
"""

from kernels.api import multi_lora_linear
from kernels.meta import LoraBatchMeta, build_meta
from kernels.reference import grouped_lora_linear, loop_lora_linear

__all__ = ["LoraBatchMeta", "build_meta", "multi_lora_linear", "loop_lora_linear", "grouped_lora_linear"]
