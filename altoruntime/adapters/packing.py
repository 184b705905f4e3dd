"""Moving one adapter's weights between its slot in the stacks and the host.

Off the CPU every layer of a slot travels in ONE transfer: `pack` lays the slot out as one flat
device tensor (the PEFT-layout blocks grouped by shape: `SlotBlocks`), `to_host` copies it through a reused
pinned buffer, `unpack` cuts it back into PEFT-layout pairs; `write` is the reverse in one
host-to-device copy. On the CPU (`pack` False) there is no copy to save and layers go one by one.
"""

from __future__ import annotations

from typing import Sequence

import torch

from altoruntime.adapters.records import Weights
from altoruntime.slot_blocks import SlotBlocks
from altoruntime.lora_layer import MultiLoraLinear, peft_init


class SlotPacker:
    """Reads and writes slots of `layers` (the stacks may be resized in place between calls).

    The packed layout is `SlotBlocks`': the PEFT-layout blocks (lora_A [r, d_in] of each A stack,
    lora_B [d_out, r] of each B stack) grouped by shape, each group stacked, all flattened into
    one tensor; a slot moves in a handful of tensor ops whatever the number of layers."""

    def __init__(self, layers: Sequence[MultiLoraLinear], device: torch.device) -> None:
        self.layers = list(layers)
        self.device = device
        # tests turn it on on the CPU to check the packed path
        self.pack = device.type != "cpu"
        self._stage: torch.Tensor | None = None  # pinned device-to-host staging buffer (CUDA only)
        self.blocks = SlotBlocks(self.stacks, rank_dims=[1, 0] * len(self.layers),
                                 transpose=[True] * (2 * len(self.layers)))

    def stacks(self) -> list[torch.Tensor]:
        """Every layer's A and B stacks, in layer order (a bound method, not a closure: a
        deep-copied packer reads its own layers)."""
        return [t for l in self.layers for t in (l.A, l.B)]

    @torch.no_grad()
    def zero(self, slot: int) -> None:
        """Zero every layer's slot (free slots are zero)."""
        self.blocks.zero(slot)

    @torch.no_grad()
    def write(self, slot: int, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write PEFT-layout weights of every layer into `slot`: one host-to-device copy of all
        layers, then on-device copies."""
        ranks = {a.shape[0] for a, _ in weights} | {b.shape[1] for _, b in weights}
        if not self.pack or len(ranks) != 1 or len(weights) != len(self.layers):
            for l, (a, b) in zip(self.layers, weights):
                l.set_slot(slot, a, b)
            return
        r = ranks.pop()
        flat = self.blocks.flatten([t for a, b in weights for t in (a, b)], r)
        self.write_packed(slot, flat.to(self.device, self.layers[0].A.dtype), r)

    @torch.no_grad()
    def read(self, slot: int, rank: int) -> Weights:
        """Slot `slot`'s first `rank` columns as PEFT-layout pairs on the CPU, each its own
        contiguous tensor (packed: one device-to-host copy, the host only does memcpys)."""
        if not self.pack:
            return [l.get_slot(slot, rank) for l in self.layers]
        return self.unpack(self.to_host(self.pack_slot(slot, rank)), rank)

    @torch.no_grad()
    def pack_slot(self, slot: int, rank: int) -> torch.Tensor:
        """The slot's first `rank` columns of every layer as one new flat device tensor (a few
        kernels, no host sync)."""
        return self.blocks.gather(slot, rank)

    def _views(self, flat: torch.Tensor, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views of `pack_slot`'s layout as PEFT-layout (lora_A [r, d_in], lora_B [d_out, r]) per layer."""
        views = self.blocks.unflatten(flat, rank)
        return list(zip(views[0::2], views[1::2]))

    def unpack(self, flat: torch.Tensor, rank: int) -> Weights:
        """`pack_slot`'s layout (on the host) -> PEFT-layout pairs per layer, each its own
        contiguous tensor (`flat` may be the reused staging buffer)."""
        return [(a.clone(), b.clone()) for a, b in self._views(flat, rank)]

    def packed_size(self, rank: int) -> int:
        """Elements of one adapter of `rank` in `pack_slot`'s layout."""
        return self.blocks.numel(rank)

    @torch.no_grad()
    def init_packed(self, rank: int, seed: int) -> torch.Tensor:
        """`peft_init`'s weights drawn straight into `pack_slot`'s layout on the host, in pinned
        memory on CUDA (so `write_packed(slot, flat.to(device, non_blocking=True), rank)` needs no
        host-side gather and no host sync). Runs in background threads (`prefetch_inits`): the
        layout does not depend on the stacks' current width."""
        pin = self.device.type == "cuda"
        flat = torch.empty(self.packed_size(rank), dtype=torch.float32, pin_memory=pin)  # drawn as PEFT draws
        peft_init(self.layers, rank, seed, into=self._views(flat, rank))
        return flat

    @torch.no_grad()
    def write_packed(self, slot: int, flat: torch.Tensor, rank: int) -> None:
        """Write `pack_slot`'s layout (a flat tensor on the stacks' device) into `slot`: on-device
        copies only (two multi-tensor launches, no host sync); the slot's rank padding is zeroed."""
        self.blocks.scatter(slot, rank, flat)

    def to_host(self, flat: torch.Tensor) -> torch.Tensor:
        """One device-to-host copy; on CUDA into a pinned staging buffer kept for reuse (the
        caller clones out of it before the next call)."""
        if flat.device.type != "cuda":
            return flat.cpu()
        stage = self._stage
        if stage is None or stage.numel() < flat.numel() or stage.dtype != flat.dtype:
            stage = torch.empty(max(flat.numel(), 2 * (0 if stage is None else stage.numel())),
                                dtype=flat.dtype, pin_memory=True)
            self._stage = stage
        out = stage[: flat.numel()]
        out.copy_(flat)  # synchronous: the data is on the host when this returns
        return out
