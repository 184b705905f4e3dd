"""Shard a frozen backbone over a process group with FSDP2, leaving the adapters rank-local.

Each decoder layer is its own `fully_shard` unit (its frozen weights are all-gathered just before
the layer runs, forward and backward, and freed after); the decoder's embeddings and final norm
form a second root unit and the LM head a third, because the trainer calls the decoder and the
head separately (the head only on labelled positions). The adapter stacks A, B of every
`MultiLoraLinear` are `ignored_params`: they never become DTensors, never get all-gathered or
reduce-scattered, so each rank keeps whatever adapters it owns. Tied input/output embeddings are
untied first (both frozen, so this only costs one extra shard of memory).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard

from altoruntime.lora_layer import MultiLoraLinear


def mesh_for(world: int, device: torch.device | str) -> DeviceMesh:
    """A 1-D device mesh over the default process group (`world` ranks)."""
    dev = torch.device(device)
    if world != dist.get_world_size():
        raise ValueError(f"world: {world} != initialized world size {dist.get_world_size()}")
    return init_device_mesh(dev.type, (world,))


def adapter_params(model: nn.Module) -> set[nn.Parameter]:
    """The stacked adapter parameters of every multi-adapter layer (kept out of FSDP)."""
    return {p for m in model.modules() if isinstance(m, MultiLoraLinear) for p in (m.A, m.B)}


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError("model: expected a Hugging Face causal LM whose decoder has `.layers`")
    return layers


def shard_backbone(model: nn.Module, mesh: DeviceMesh, reshard_after_forward: bool = True) -> nn.Module:
    """Apply FSDP2 in place: one unit per decoder layer, the decoder root, the LM head."""
    ignored = adapter_params(model)
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if head is not None and head.weight is emb.weight:
        head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=ignored)
    fully_shard(model.get_decoder(), mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=ignored)
    if head is not None:
        fully_shard(head, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model
