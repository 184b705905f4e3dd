"""Fused multi-adapter LoRA linear layers: Triton kernels, the plain-torch reference, autograd.

    meta = build_meta(token_counts, slots, ranks, scales, device, dropout=None)   # once per step
    y = multi_lora_linear(x, weight, bias, A, B, meta, impl="auto")              # every layer

The runtime's module form (adapter stacks per frozen projection) is altoruntime/lora_layer.py.
The Triton path runs on CUDA, or on CPU under TRITON_INTERPRET=1 (set before triton is first
imported; tests/altokernels/conftest.py does it). ALTO_KERNELS_AUTOTUNE=1 turns autotuning on
(off by default: each new shape of a run would be tuned again); ALTO_KERNELS_FAST_LAUNCH=0 sends
every launch through Triton's own path (altokernels/launch.py caches the compiled kernel per specialization on the step's meta and calls it directly otherwise);
ALTO_KERNELS_TUNE_CACHE=1 keeps autotuning results in Triton's on-disk cache (opt-in, not yet
checked on a GPU).
"""

from altokernels.api import multi_lora_linear
from altokernels.meta import LoraBatchMeta, build_meta, max_sched_entries
from altokernels.reference import grouped_lora_linear, loop_lora_linear

__all__ = [
    "LoraBatchMeta",
    "build_meta",
    "grouped_lora_linear",
    "loop_lora_linear",
    "max_sched_entries",
    "multi_lora_linear",
]
