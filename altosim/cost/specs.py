"""Shapes the analytic cost model prices: decoder-only backbones and GPU types (by name)."""

from __future__ import annotations

import re
from typing import Any

from dataclasses import dataclass, replace
from functools import cached_property

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """Decoder-only transformer shape; weights do not change speed, only shapes do."""

    name: str
    params: float
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int
    vocab: int

    @cached_property
    def proj_io(self) -> int:
        """sum(d_in + d_out) over the 7 LoRA-targeted projections of one layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)

    @cached_property
    def layer_params(self) -> int:
        """Weights of one decoder layer's 7 projections (norms are negligible)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return 2 * h * h + 2 * h * kv + 3 * h * i

    def truncated(self, layers: int) -> "ModelShape":
        """The same shape cut (or grown) to `layers` decoder layers, params adjusted."""
        if layers < 1:
            raise ValueError(f"layers: must be >= 1, got {layers!r}")
        if layers == self.layers:
            return self
        return replace(self, params=self.params + (layers - self.layers) * self.layer_params, layers=layers)


MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in (
        ModelShape("smollm2-135m", 135e6, 30, 576, 1536, 192, 49152),
        ModelShape("llama-3.2-1b", 1.24e9, 16, 2048, 8192, 512, 128256),
        ModelShape("llama-3.2-3b", 3.21e9, 28, 3072, 8192, 1024, 128256),
        ModelShape("llama-3.1-8b", 8.03e9, 32, 4096, 14336, 1024, 128256),
        ModelShape("qwen2.5-14b", 14.7e9, 48, 5120, 13824, 1024, 152064),
        ModelShape("llama-3.1-70b", 70.6e9, 80, 8192, 28672, 1024, 128256),
    )
}


@dataclass(frozen=True)
class GpuSpec:
    name: str
    peak_tflops: float  # measured dense bf16 GEMM
    memory_gb: float


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("H100", 784.0, 80.0),
        GpuSpec("H200", 784.0, 141.0),
        GpuSpec("A100", 290.0, 80.0),
    )
}


_CUT = re.compile(r"^(?P<base>.+)-l(?P<layers>[0-9]{1,4})$")


def model_shape(name: str) -> ModelShape:
    """A known model, or `<known model>-L<N>`: its first N decoder layers (what
    `experiments/e2e_sweep.py --backbone-layers N` trains and labels so)."""
    key = name.lower()
    if key in MODELS:
        return MODELS[key]
    cut = _CUT.match(key)
    if cut and cut["base"] in MODELS and 1 <= int(cut["layers"]) <= MODELS[cut["base"]].layers:
        return replace(MODELS[cut["base"]].truncated(int(cut["layers"])), name=key)
    raise ValueError(f"unknown model {name[:80]!r} (give the task a model_shape: its shape or a config.json); "
                     f"known: {', '.join(sorted(MODELS))} (or '<model>-L<N>' for its first N layers)")


def shape_from_spec(name: str, spec: Any) -> ModelShape:
    """A ModelShape from a workload's `ShapeSpec` (anything with its fields and `params`, `kv_dim`)."""
    return ModelShape(name.lower(), spec.params, spec.layers, spec.hidden, spec.intermediate, spec.kv_dim, spec.vocab)
