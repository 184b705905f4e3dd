"""Frozen backbones: any Hugging Face causal LM, and the linear layers LoRA targets in it.

The runtime never trains backbone weights; it only wraps target projections with multi-adapter
layers. Loading from a local directory or a GGUF file goes through transformers so the backbone
is the very module PEFT would wrap (the export round-trip test relies on that).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

LLAMA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def freeze(model: nn.Module) -> nn.Module:
    """Turn off gradients for every backbone parameter (adapters are added later)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_backbone(
    path: str | Path,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load a causal LM from a local directory, or a `.gguf` file (path to the file itself, or
    a directory plus `gguf_file`), frozen and on `device`. A checkpoint missing some of the
    model's weights is a ValueError (transformers would initialize them randomly, with a warning)."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        p, gguf_file = p.parent, p.name
    if not p.exists():
        raise ValueError(f"path: backbone {str(path)!r} does not exist")
    kwargs = {"dtype": dtype}
    if gguf_file is not None:
        if not (p / gguf_file).is_file():
            raise ValueError(f"gguf_file: {gguf_file!r} not found in {str(p)!r}")
        kwargs["gguf_file"] = gguf_file
    # mismatched sizes are reported here rather than raised with "see the report above" (a log the CLI keeps quiet)
    model, info = AutoModelForCausalLM.from_pretrained(str(p), output_loading_info=True, ignore_mismatched_sizes=True,
                                                       **kwargs)
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        key, got, want = mismatched[0][:3]  # (name, shape in the checkpoint, shape of the model)
        raise ValueError(f"{len(mismatched)} weights of the checkpoint have another shape than config.json gives "
                         f"(e.g. {key!r}: {list(got)} in the checkpoint, {list(want)} by the config)")
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # transformers fills them with random values and only logs it: training would go on silently
        raise ValueError(f"{len(missing)} weights missing from the checkpoint (e.g. {missing[0]!r}): the model "
                         "would train from random values there; the folder is incomplete or of another model")
    return freeze(model.to(device))


def keep_layers(model: nn.Module, n: int) -> nn.Module:
    """Keep only the first `n` decoder layers (in place): a smaller backbone with the same real
    weights, embeddings and head. The config follows, so caches and exports see `n` layers."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"backbone_layers: {type(model).__name__} has no model.layers to truncate")
    if not 1 <= n <= len(layers):
        raise ValueError(f"backbone_layers: must be in 1..{len(layers)}, got {n}")
    model.model.layers = nn.ModuleList(list(layers)[:n])
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]
    return model


def tiny_llama(
    hidden: int = 64,
    layers: int = 2,
    vocab: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A random-init Llama for CPU tests (deterministic in `seed`), frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).to(dtype)
    return freeze(model.eval())


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Linear and transformers Conv1D (GPT-2's, weight stored [in, out]) of `model` except its
    output head, in `named_modules` order: what PEFT's 'all-linear' targets."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and m is not head]


def _leaf_names(named: Sequence[tuple[str, nn.Module]], limit: int = 16) -> str:
    leaves = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, _ in named))
    more = f" (+{len(leaves) - limit} more)" if len(leaves) > limit else ""
    return ", ".join(leaves[:limit]) + more or "none"


def find_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The linear layers (`linear_layers`) that `target_modules` names, with PEFT's conventions:
    'all-linear'; a list of module-name suffixes (`name == key` or `name.endswith('.' + key)`),
    each of which must match; or a regex string matched against the whole module name. In
    `named_modules` order (the order PEFT creates adapters in, which the seeded init follows)."""
    candidates = linear_layers(model)
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            found = candidates
        else:
            rx = re.compile(target_modules)
            found = [(n, m) for n, m in candidates if rx.fullmatch(n)]
        if not found:
            raise ValueError(f"target_modules: {target_modules!r} matches no linear layer of the model; "
                             f"its linear layers: {_leaf_names(candidates)}")
        return found
    if not target_modules:
        raise ValueError("target_modules: expected 'all-linear', a regex or a non-empty list of module names")
    keys = list(target_modules)
    for key in keys:
        if not any(n == key or n.endswith("." + key) for n, _ in candidates):
            raise ValueError(f"target_modules: no linear layer named {key!r} in the model; "
                             f"its linear layers: {_leaf_names(candidates)}")
    return [(n, m) for n, m in candidates if any(n == k or n.endswith("." + k) for k in keys)]


def peft_target_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """`target_modules` for an exported adapter_config.json that makes PEFT wrap exactly `names`:
    their distinct leaf names when no other module shares one, else the full names."""
    chosen = set(names)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    others = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n not in chosen}
    return leaves if not others & set(leaves) else sorted(chosen)
