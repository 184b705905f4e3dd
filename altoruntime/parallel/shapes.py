"""Backbones by name or shape for benchmarks: `tiny`, `smollm2` (the GGUF), or a Llama shape such
as `llama-3.1-70b:layers=2`, built random-init from a LlamaConfig with the real hidden and MLP
sizes but few layers (weights do not change speed; the layer count scales it linearly)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# name: (hidden, intermediate, heads, kv heads, vocab, layers, tied embeddings)
LLAMA_SHAPES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "smollm2-135m": (576, 1536, 9, 3, 49152, 30, True),
    "llama-3.2-1b": (2048, 8192, 32, 8, 128256, 16, True),
    "llama-3.1-8b": (4096, 14336, 32, 8, 128256, 32, False),
    "llama-3.1-70b": (8192, 28672, 64, 8, 128256, 80, False),
}
TINY_MAX_LAYERS = 64  # `tiny` is a random test model: deeper is no test


def parse_spec(spec: str) -> tuple[str, dict[str, int]]:
    """'name:key=int,key=int' -> (name, {key: int})."""
    name, _, rest = spec.partition(":")
    opts: dict[str, int] = {}
    for part in filter(None, rest.split(",")):
        key, eq, val = part.partition("=")
        if not eq or not (val.isascii() and val.isdigit()) or len(val) > 9 or key not in ("layers",):
            raise ValueError(f"backbone: bad option {part!r} in {spec!r}, expected e.g. 'llama-3.1-70b:layers=2'")
        opts[key] = int(val)
    if name not in ("tiny", "smollm2", *LLAMA_SHAPES):
        raise ValueError(f"backbone: unknown {name!r}, expected tiny, smollm2 or one of {sorted(LLAMA_SHAPES)}")
    if "layers" in opts:  # a truncation: 0 layers profiled nothing, 100000 of a 70B shape filled host memory
        depth = LLAMA_SHAPES[name][5] if name in LLAMA_SHAPES else TINY_MAX_LAYERS
        if not 1 <= opts["layers"] <= depth:
            raise ValueError(f"backbone: {spec!r}: layers must be in [1, {depth}] "
                             f"({'the model has ' + str(depth) if name in LLAMA_SHAPES else 'a test model'})")
    return name, opts


def backbone_factory(spec: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     gguf: str | None = None, seed: int = 0) -> Callable[[], nn.Module]:
    """A zero-argument builder of the same frozen backbone on every call (and every rank)."""
    from altoruntime.backbone import freeze, load_backbone, tiny_llama

    name, opts = parse_spec(spec)
    if name == "tiny":
        return lambda: tiny_llama(layers=opts.get("layers", 2), seed=seed, dtype=dtype).to(device)
    if name == "smollm2":
        if gguf is None:
            from altoruntime.data.smollm2 import smollm2_gguf_path

            found = smollm2_gguf_path()
            if found is None:
                raise ValueError("gguf: no SmolLM2 GGUF installed; pass its path")
            gguf = str(found)
        return lambda: load_backbone(gguf, dtype=dtype, device=device)
    hidden, inter, heads, kv, vocab, layers, tied = LLAMA_SHAPES[name]

    def build() -> nn.Module:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                          num_hidden_layers=opts.get("layers", layers), num_attention_heads=heads,
                          num_key_value_heads=kv, max_position_embeddings=4096, tie_word_embeddings=tied,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cfg._attn_implementation = "sdpa"
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg).to(dtype)
        return freeze(model.eval())

    return build


def layer_count(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)
