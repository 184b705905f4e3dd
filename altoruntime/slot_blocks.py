"""One adapter's blocks of many stacked tensors, moved in a few multi-tensor ops.

The stacks hold one adapter per slot (dim 0) in every LoRA layer: a SmolLM2-sized model has 210
layers, so 420 weight stacks and 840 AdamW moments. Taking a slot's rank block of each one by
one costs several tensor ops per stack (select, narrow, transpose, copy): ~6,000 host-side ops
per suspend, which is what a suspend or an admit cost on an H200, not the copies themselves.

`SlotBlocks` keeps, per (slot, rank), the list of views once made (rebuilt when a stack is
reallocated) and groups equal-shaped views, so that

- `gather(slot, rank)` is one `stack` per group and one `cat`: a new flat tensor;
- `unflatten(flat, rank)` is a `split`, then a `view` and an `unbind` per group: the views of
  a flat tensor in that layout, in the stacks' order;
- `scatter(slot, rank, flat)` zeroes the slot and copies the flat tensor back in one
  `_foreach_copy_`;
- `zero(slot)` is one `_foreach_zero_`.

A view is `stack[slot]` narrowed to `rank` along its rank dim and, where asked, transposed (the
packer's PEFT layout: lora_A [r, d_in] of a stack's [d_in, r_max] block).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Sequence

import torch

MAX_CACHED = 64  # (slot, rank) view lists kept (least recently used dropped): ~1 KB of host memory a view


class SlotBlocks:
    """Slot blocks of the tensors `stacks()` returns (called at each use: stacks may be
    reallocated between calls; the cached views follow their storage). Pass a bound method, not
    a closure: a deep copy of its owner then reads the copy's stacks."""

    def __init__(self, stacks: Callable[[], Sequence[torch.Tensor]], rank_dims: Sequence[int | None],
                 transpose: Sequence[bool] | None = None) -> None:
        """rank_dims[i]: the rank dim of stack i's per-slot block (the slot dim not counted; None:
        not narrowed); transpose[i]: hand out that block transposed (2-D blocks only). The
        stacks share one dtype; only their slot count and rank width may change."""
        self.stacks = stacks
        self.rank_dims = list(rank_dims)
        self.transpose = list(transpose) if transpose is not None else [False] * len(self.rank_dims)
        if len(self.transpose) != len(self.rank_dims):
            raise ValueError("transpose: need one entry per stack")
        self._key: tuple = ()
        self._full: dict[int, list[torch.Tensor]] = {}
        self._blocks: OrderedDict[tuple[int, int], list[torch.Tensor]] = OrderedDict()
        self._layouts: dict[int, tuple[list[list[int]], list[tuple[int, ...]]]] = {}

    def __getstate__(self) -> dict:
        """Copies and pickles carry no cached view (they would pin, or copy, the old stacks)."""
        state = dict(self.__dict__)
        state.update(_key=(), _full={}, _blocks=OrderedDict())
        return state

    def _check(self) -> None:
        """Drop every cached view when any stack moved or changed shape (owners also call
        `invalidate` when they reallocate, so that the old storage is freed at once)."""
        stacks = self.stacks()
        if len(stacks) != len(self.rank_dims):
            raise ValueError(f"stacks: expected {len(self.rank_dims)} tensors, got {len(stacks)}")
        key = (tuple(map(torch.Tensor.data_ptr, stacks)), tuple(t.shape for t in stacks))  # metadata only
        if key != self._key:
            self._key, self._full, self._blocks = key, {}, OrderedDict()

    def invalidate(self) -> None:
        """Drop the cached views now (they keep the stacks' storage alive)."""
        self._key, self._full, self._blocks = (), {}, OrderedDict()

    @property
    def cached(self) -> int:
        """Slots and (slot, rank) pairs with views kept (0 after `invalidate`)."""
        return len(self._full) + len(self._blocks)

    def full(self, slot: int) -> list[torch.Tensor]:
        """`stack[slot]` of every stack (whole blocks, rank padding included)."""
        self._check()
        return self._full_views(slot)

    def blocks(self, slot: int, rank: int) -> list[torch.Tensor]:
        """Each stack's slot block narrowed to `rank` (and transposed where asked); a rank wider
        than a block is an error (the flat layout would not match)."""
        self._check()
        return self._block_views(slot, rank)

    def _full_views(self, slot: int) -> list[torch.Tensor]:
        views = self._full.get(slot)
        if views is None:
            views = self._full[slot] = [t.data[slot] for t in self.stacks()]  # .data: not autograd's business
        return views

    def _block_views(self, slot: int, rank: int) -> list[torch.Tensor]:
        key = (slot, rank)
        views = self._blocks.get(key)
        if views is not None:
            self._blocks.move_to_end(key)
            return views
        views = []
        for v, d, tr in zip(self._full_views(slot), self.rank_dims, self.transpose):
            if d is not None:
                if rank > v.shape[d]:
                    raise ValueError(f"rank: {rank} is wider than a stack's blocks ({v.shape[d]})")
                v = v.narrow(d, 0, rank)
            views.append(v.t() if tr else v)
        self._blocks[key] = views
        if len(self._blocks) > MAX_CACHED:
            self._blocks.popitem(last=False)
        return views

    def layout(self, rank: int) -> tuple[list[list[int]], list[tuple[int, ...]]]:
        """The flat layout for `rank`: groups of stack indices with equal block shapes (first
        appearance order) and each group's block shape. It depends on the stacks' block shapes
        other than the rank width only (not on their current r_max), so initial weights can be
        drawn into it in other threads while the stacks grow."""
        hit = self._layouts.get(rank)
        if hit is None:
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, (t, d, tr) in enumerate(zip(self.stacks(), self.rank_dims, self.transpose)):
                shape = list(t.shape[1:])
                if d is not None:
                    shape[d] = rank
                groups.setdefault(tuple(reversed(shape)) if tr else tuple(shape), []).append(i)
            hit = self._layouts[rank] = (list(groups.values()), list(groups))
        return hit

    def numel(self, rank: int) -> int:
        """Elements of one slot's blocks at `rank`."""
        groups, shapes = self.layout(rank)
        return sum(len(g) * math.prod(s) for g, s in zip(groups, shapes))

    def flatten(self, blocks: Sequence[torch.Tensor], rank: int) -> torch.Tensor:
        """Blocks shaped as `blocks(slot, rank)` (e.g. on the host) as one new flat tensor in
        `gather`'s layout."""
        groups, _ = self.layout(rank)
        parts = [torch.stack([blocks[i] for i in g]).view(-1) for g in groups]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def gather(self, slot: int, rank: int) -> torch.Tensor:
        """The slot's blocks as one new flat tensor (in `layout(rank)`'s order; no host sync)."""
        return self.flatten(self.blocks(slot, rank), rank)

    def unflatten(self, flat: torch.Tensor, rank: int) -> list[torch.Tensor]:
        """Views of `flat` (in `gather`'s layout) as blocks, in the stacks' order."""
        groups, shapes = self.layout(rank)
        sizes = [len(g) * math.prod(s) for g, s in zip(groups, shapes)]
        if flat.numel() != sum(sizes):
            raise ValueError(f"flat: {flat.numel()} elements, a slot's blocks at rank {rank} have {sum(sizes)}")
        out: list[torch.Tensor | None] = [None] * len(self.rank_dims)
        for g, s, chunk in zip(groups, shapes, flat.split(sizes)):
            for i, v in zip(g, chunk.view(len(g), *s).unbind(0)):
                out[i] = v
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def zero(self, slot: int) -> None:
        torch._foreach_zero_(self.full(slot))

    @torch.no_grad()
    def scatter(self, slot: int, rank: int, flat: torch.Tensor) -> None:
        """Zero the slot, then write `flat` (a `gather` layout, on the stacks' device) into its
        rank blocks: on-device copies only, no host sync."""
        self._check()
        torch._foreach_zero_(self._full_views(slot))
        dsts = self._block_views(slot, rank)
        if flat.dtype != dsts[0].dtype:
            flat = flat.to(dsts[0].dtype)
        torch._foreach_copy_(dsts, self.unflatten(flat, rank))


__all__ = ["SlotBlocks"]
