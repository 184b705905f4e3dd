"""Per-step batch metadata shared by every LoRA layer (vLLM-style).

The runtime builds one `LoraBatchMeta` per training step on the host: token offsets per segment
(one segment = one adapter's rows of the flattened activation buffer), the slot each segment
uses in the stacked adapter tensors, ranks, scales, optional dropout, and the schedule table of
(segment, row-block) pairs that the grouped Triton kernels walk. All device tensors are made
here, once, with a single host-to-device copy, so a layer call does almost no host work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

SCHED_BLOCK_M = 64  # rows per schedule entry; the Triton kernels' BLOCK_M is tied to it


@dataclass(frozen=True, eq=False)
class LoraBatchMeta:
    """Segments of one flattened batch and the tensors the kernels read (built by `build_meta`)."""

    token_counts: tuple[int, ...]
    offsets: tuple[int, ...]  # len = segments + 1; segment i = rows offsets[i]:offsets[i+1]
    slots: tuple[int, ...]
    ranks: tuple[int, ...]
    scales: tuple[float, ...]
    dropout: tuple[float, ...]
    device: torch.device
    block_m: int
    num_blocks: int  # rows of the schedule table
    equal_counts: bool  # every segment has the same (non-zero) token count
    # device tensors (int32 unless noted); views into one buffer copied once
    seg_start: torch.Tensor
    seg_end: torch.Tensor
    seg_slot: torch.Tensor
    seg_rank: torch.Tensor
    seg_scale: torch.Tensor  # float32
    sched_seg: torch.Tensor  # segment of each schedule entry
    sched_row: torch.Tensor  # first row of each schedule entry
    row_dropout: torch.Tensor | None  # float32 [T] (None when no segment drops out)
    side_stream: object = None  # torch.cuda.Stream for LoRA work overlapped with the base GEMMs
    sched_row_host: tuple[int, ...] = ()  # host copy of sched_row (chunk boundaries)
    # direct-launch plans of altokernels.launch (keys hold every specialization detail, none of this
    # meta's data, so build_meta(launch_cache=d) may share one dict across steps)
    launch_cache: dict = field(default_factory=dict, repr=False)
    # this meta's derived host data (chunk tables, scale tensors): computed once a step, not shared
    step_cache: dict = field(default_factory=dict, repr=False)
    shared_slots: bool = False  # segments may read one slot (forward only: no weight gradient)

    @property
    def num_segments(self) -> int:
        return len(self.token_counts)

    @property
    def total_tokens(self) -> int:
        return self.offsets[-1]

    @property
    def max_rank(self) -> int:
        return max(self.ranks)

    @property
    def has_dropout(self) -> bool:
        return self.row_dropout is not None

    def retarget(self, slots: Sequence[int], ranks: Sequence[int], scales: Sequence[float],
                 dropout: Sequence[float] | None = None, token_counts: Sequence[int] | None = None) -> None:
        """Point this meta at other adapters of as many segments, in place: new slots, ranks,
        scales and dropout rates (and, given `token_counts` with the same total, new segment
        bounds and schedule) written into its device tables, so a CUDA graph captured with it
        serves another group of the same shape (the Triton path reads only these device tables
        and `num_blocks`), and into its host fields. Whether any segment drops out must stay as
        it was (the dropout draw is part of the graph); new counts must fit the schedule table
        (`build_meta(sched_entries=...)` pads it for that), and a graph replayed with new counts
        must not have taken the paths that read the counts on the host at capture (the pipelined
        variant's chunks, bmm weight gradients at equal counts; the runtime takes neither)."""
        n = self.num_segments
        dropout = tuple(float(p) for p in dropout) if dropout is not None else (0.0,) * n
        _check_lengths(n, slots=slots, ranks=ranks, scales=scales, dropout=dropout)
        slots_t, ranks_t, scales_t = tuple(int(s) for s in slots), tuple(int(r) for r in ranks), tuple(
            float(s) for s in scales)
        if any(s < 0 for s in slots_t) or (len(set(slots_t)) != n and not self.shared_slots):
            raise ValueError(f"slots: need distinct slots >= 0, got {slots_t}")
        if any(r < 1 for r in ranks_t):
            raise ValueError(f"ranks: must be >= 1, got {ranks_t}")
        if not all(math.isfinite(s) for s in scales_t):
            raise ValueError(f"scales: must be finite, got {scales_t}")
        if not all(0.0 <= p < 1.0 for p in dropout) or any(p > 0 for p in dropout) != self.has_dropout:
            raise ValueError(f"dropout: must be in [0, 1) and drop out where this meta does, got {dropout}")
        if token_counts is not None:
            self._recount(token_counts)
        self.seg_slot.copy_(torch.tensor(slots_t, dtype=torch.int32), non_blocking=True)
        self.seg_rank.copy_(torch.tensor(ranks_t, dtype=torch.int32), non_blocking=True)
        self.seg_scale.copy_(torch.tensor(scales_t, dtype=torch.float32), non_blocking=True)
        if self.row_dropout is not None:
            per_seg = torch.tensor(dropout, dtype=torch.float32)
            self.row_dropout.copy_(torch.repeat_interleave(per_seg, torch.tensor(self.token_counts)))
        for name, value in (("slots", slots_t), ("ranks", ranks_t), ("scales", scales_t), ("dropout", dropout)):
            object.__setattr__(self, name, value)  # (frozen: its one sanctioned change)
        self.step_cache.clear()  # derived from the old tables

    def _recount(self, token_counts: Sequence[int]) -> None:
        counts = tuple(int(c) for c in token_counts)
        _check_lengths(self.num_segments, token_counts=counts)
        if any(c < 0 for c in counts) or sum(counts) != self.total_tokens:
            raise ValueError(f"token_counts: need {self.total_tokens} rows in all, each >= 0, got {counts}")
        offsets, seg, row = _schedule(counts, self.block_m)
        if len(seg) > self.num_blocks:
            raise ValueError(f"token_counts: {len(seg)} schedule entries do not fit this meta's {self.num_blocks}")
        seg, row = _pad_schedule(seg, row, self.num_blocks, self.total_tokens)
        ints = torch.tensor(offsets[:-1] + offsets[1:] + seg + row, dtype=torch.int32)
        n, e = self.num_segments, self.num_blocks
        for dst, src in zip((self.seg_start, self.seg_end, self.sched_seg, self.sched_row),
                            torch.split(ints, (n, n, e, e))):
            dst.copy_(src, non_blocking=True)
        for name, value in (("token_counts", counts), ("offsets", tuple(offsets)), ("sched_row_host", tuple(row)),
                            ("equal_counts", len(set(counts)) == 1 and counts[0] > 0)):
            object.__setattr__(self, name, value)  # (frozen: part of the sanctioned retarget)

    def chunks(self, n: int) -> list[tuple[int, int, int, int]]:
        """Split the schedule into <= n contiguous pieces: (entry0, entry1, row0, row1) each.

        Entries are ordered by row and cover every row, so the row ranges partition [0, T)."""
        key = ("chunks", n)
        if key not in self.step_cache:
            self.step_cache[key] = self._chunks(n)
        return self.step_cache[key]

    def _chunks(self, n: int) -> list[tuple[int, int, int, int]]:
        e = self.num_blocks
        cuts = sorted({round(i * e / n) for i in range(n + 1)})
        rows = list(self.sched_row_host) + [self.total_tokens]
        return [(a, b, rows[a], rows[b]) for a, b in zip(cuts, cuts[1:]) if b > a]


def _schedule(counts: Sequence[int], block_m: int) -> tuple[list[int], list[int], list[int]]:
    """Segment offsets and the (segment, first row) schedule entries of `block_m` rows each."""
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    sched_seg: list[int] = []
    sched_row: list[int] = []
    for i, c in enumerate(counts):
        for r0 in range(offsets[i], offsets[i + 1], block_m):
            sched_seg.append(i)
            sched_row.append(r0)
    return offsets, sched_seg, sched_row


def _pad_schedule(seg: list[int], row: list[int], entries: int, total: int) -> tuple[list[int], list[int]]:
    """The schedule padded to `entries` with no-op entries: segment 0 from row `total`, past
    every segment's end, so a row kernel's program on it masks all its rows off."""
    pad = entries - len(seg)
    return seg + [0] * pad, row + [total] * pad


def _check_lengths(n: int, **seqs: Sequence) -> None:
    for name, seq in seqs.items():
        if len(seq) != n:
            raise ValueError(f"{name}: expected {n} entries (one per segment), got {len(seq)}")


def build_meta(
    token_counts: Sequence[int],
    slots: Sequence[int],
    ranks: Sequence[int],
    scales: Sequence[float],
    device: torch.device | str,
    dropout: Sequence[float] | None = None,
    block_m: int = SCHED_BLOCK_M,
    launch_cache: dict | None = None,
    sched_entries: int | None = None,
    shared_slots: bool = False,
) -> LoraBatchMeta:
    """Validate per-segment settings and build the device-side tables once per step.

    launch_cache: a dict kept by the caller across steps for the kernels' direct-launch plans
    (default: a fresh one per meta, so each step's first layer of each shape takes Triton's path).
    sched_entries: the schedule table's length, padded with no-op entries (default: exactly the
    entries these counts need); `max_sched_entries(total, segments)` fits every split of the
    same rows, so `retarget` can give the meta any such counts.
    shared_slots: segments may name one slot twice (a forward-only evaluation that pads its
    group with repeats; a backward would write that slot's gradient twice)."""
    n = len(token_counts)
    if n == 0:
        raise ValueError("token_counts: need at least one segment")
    dropout = tuple(float(p) for p in dropout) if dropout is not None else (0.0,) * n
    _check_lengths(n, slots=slots, ranks=ranks, scales=scales, dropout=dropout)
    counts = tuple(int(c) for c in token_counts)
    if any(c < 0 for c in counts):
        raise ValueError(f"token_counts: must be >= 0, got {counts}")
    slots_t = tuple(int(s) for s in slots)
    if any(s < 0 for s in slots_t):
        raise ValueError(f"slots: must be >= 0, got {slots_t}")
    if len(set(slots_t)) != n and not shared_slots:
        raise ValueError(f"slots: each segment needs its own slot, got duplicates in {slots_t}")
    ranks_t = tuple(int(r) for r in ranks)
    if any(r < 1 for r in ranks_t):
        raise ValueError(f"ranks: must be >= 1, got {ranks_t}")
    scales_t = tuple(float(s) for s in scales)
    if not all(math.isfinite(s) for s in scales_t):
        raise ValueError(f"scales: must be finite, got {scales_t}")
    if not all(0.0 <= p < 1.0 for p in dropout):
        raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
    if block_m < 16 or block_m & (block_m - 1):
        raise ValueError(f"block_m: must be a power of two >= 16, got {block_m}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())

    offsets, sched_seg, sched_row = _schedule(counts, block_m)
    total = offsets[-1]
    if total >= 2**31:
        raise ValueError(f"token_counts: total {total} rows exceeds int32 indexing")
    if sched_entries is not None:
        if sched_entries < len(sched_seg):
            raise ValueError(f"sched_entries: these counts need {len(sched_seg)} entries, got {sched_entries}")
        sched_seg, sched_row = _pad_schedule(sched_seg, sched_row, sched_entries, total)
    # one buffer, one copy; each table starts on a 16-byte boundary (padded to 4 int32s): Triton
    # specializes a pointer on its 16-byte alignment, and tables packed back to back moved with the
    # segment count and the entry count (every step's token count), so a new group size or a new
    # entry count mod 4 compiled every kernel again (H200, session 6: 18-44 compiles at each new
    # group size of a shrinking run, ~0.5 s each)
    tables = [offsets[:-1], offsets[1:], list(slots_t), list(ranks_t), sched_seg, sched_row]
    padded = [len(t) + (-len(t)) % 4 for t in tables]
    ints = [v for t, m in zip(tables, padded) for v in t + [0] * (m - len(t))]
    int_dev = torch.tensor(ints, dtype=torch.int32).to(device, non_blocking=True)
    e = len(sched_seg)
    parts = [p[: len(t)] for p, t in zip(torch.split(int_dev, padded), tables)]
    seg_scale = torch.tensor(scales_t, dtype=torch.float32).to(device, non_blocking=True)

    row_dropout = None
    if any(p > 0 for p in dropout):
        per_seg = torch.tensor(dropout, dtype=torch.float32)
        row_dropout = torch.repeat_interleave(per_seg, torch.tensor(counts)).to(device)

    return LoraBatchMeta(
        token_counts=counts,
        offsets=tuple(offsets),
        slots=slots_t,
        ranks=ranks_t,
        scales=scales_t,
        dropout=dropout,
        device=device,
        block_m=block_m,
        num_blocks=e,
        equal_counts=len(set(counts)) == 1 and counts[0] > 0,
        seg_start=parts[0],
        seg_end=parts[1],
        seg_slot=parts[2],
        seg_rank=parts[3],
        seg_scale=seg_scale,
        sched_seg=parts[4],
        sched_row=parts[5],
        row_dropout=row_dropout,
        side_stream=torch.cuda.Stream(device) if device.type == "cuda" else None,
        sched_row_host=tuple(sched_row),
        launch_cache=launch_cache if launch_cache is not None else {},
        shared_slots=shared_slots,
    )


def max_sched_entries(total: int, segments: int, block_m: int = SCHED_BLOCK_M) -> int:
    """The most schedule entries any split of `total` rows into `segments` can need."""
    return min(-(-total // block_m) + segments, max(1, total))
