"""Fused multi-adapter LoRA linear layers: Triton kernels, the plain-torch reference, autograd.

    meta = build_meta(token_counts, slots, ranks, scales, device, dropout=None)   # once per step
    y = multi_lora_linear(x, weight, bias, A, B, meta, impl="auto")              # every layer
    layer = MultiLoraLinear(nn_linear, capacity, r_max); layer.add_adapter(slot, rank)  # module form

The Triton path runs on CUDA, or on CPU under TRITON_INTERPRET=1 (set before triton is first
imported; tests/altokernels/conftest.py does it). ALTO_KERNELS_AUTOTUNE=0 turns autotuning off;
ALTO_KERNELS_FAST_LAUNCH=0 sends every launch through Triton's own path (altokernels/launch.py caches
the compiled kernel per specialization on the step's meta and calls it directly otherwise);
ALTO_KERNELS_TUNE_CACHE=1 keeps autotuning results in Triton's on-disk cache (opt-in, not yet
checked on a GPU).
"""

from altokernels.api import multi_lora_linear
from altokernels.meta import LoraBatchMeta, build_meta
from altokernels.module import MultiLoraLinear, reset_slot_optimizer_state
from altokernels.reference import grouped_lora_linear, loop_lora_linear

__all__ = [
    "LoraBatchMeta",
    "MultiLoraLinear",
    "build_meta",
    "grouped_lora_linear",
    "loop_lora_linear",
    "multi_lora_linear",
    "reset_slot_optimizer_state",
]
