"""Every adapter of one trainer: slots in the stacked LoRA weights, their AdamW state, lifecycle
(admit, suspend to the host, resume, drop), best-validation snapshots and their state as data.

The store owns the tensors a step reads and writes (the layers' A/B stacks, the optimizer's
per-slot moments) and the gradient check over them; the trainer only runs the model on them.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Sequence

import torch

from altoruntime.adapters.grad_check import GradCheck
from altoruntime.adapters.grad_clip import clip_slot_grad_norms
from altoruntime.adapters.packing import SlotPacker
from altoruntime.adapters.records import AdapterConfig, AdapterRecord, Status, Weights
from altoruntime.lora_layer import MultiLoraLinear, peft_init
from altoruntime.optim import SlotAdamW


class AdapterStore:
    """Adapters by job id over the multi-adapter layers `named_layers` (name, layer)."""

    def __init__(self, named_layers: Iterable[tuple[str, MultiLoraLinear]], shrink_rank: bool | None = None,
                 park: bool | None = None, shrink_at: int | None = None) -> None:
        """shrink_rank: whether `compact` narrows the stacks to the largest live rank (default: off
        on CUDA, where a new rank width makes every Triton kernel re-tune and recompile, 3-11 s on
        an H200 for a few MB of adapter memory; on elsewhere).
        park: whether `suspend` keeps the adapter on the device (parked: its rank block of
        weights and AdamW moments gathered into one tensor outside the stacks, its slot freed) and
        copies it to the host only on demand (default: on CUDA, where a copy each way through the
        host costs ~0.2 s per adapter and a job held at an early-exit rung comes back soon; off
        elsewhere). A parked adapter holds no slot, so the stacks can shrink with the adapters that
        train, not with those waiting.
        shrink_at: the stacks shrink when at most 1/shrink_at of their slots hold adapters (default
        SHRINK_AT; 0: never, what the trainer asks for under CUDA graphs, where its per-step passes
        cover the step's slots only and a reallocation would drop every captured graph)."""
        self.named_layers = list(named_layers)
        self.layers = [l for _, l in self.named_layers]
        self.device = self.layers[0].weight.device
        self.shrink_rank = self.device.type != "cuda" if shrink_rank is None else shrink_rank
        self.park = self.device.type == "cuda" if park is None else park
        self._parked: dict[str, None] = {}  # parked adapters, oldest first
        # per-slot A is [d_in, r_max] (rank dim 1), B is [r_max, d_out] (rank dim 0)
        self.optim = SlotAdamW([p for l in self.layers for p in (l.A, l.B)], rank_dims=[1, 0] * len(self.layers))
        self.packer = SlotPacker(self.layers, self.device)
        self.optim.pack = self.packer.pack
        self.grad_check = GradCheck(self.optim.params)
        self.adapters: dict[str, AdapterRecord] = {}
        self._incoming: list[int] = []  # ranks of the adapters about to take slots (`reserve`)
        self._init_cache: dict[tuple[int, int], Weights | torch.Tensor] = {}
        # draw initial weights straight into the packed layout (None: when slots move packed), so
        # an admit is one asynchronous copy from pinned memory; False: PEFT-layout pairs gathered
        # and copied at the admit (the path before; experiments/bench_admit.py compares them)
        self.packed_inits: bool | None = None
        self._inits_ahead: list[tuple[int, int]] = []  # (rank, seed) to draw in the background, in order
        self._inits_pending: dict[tuple[int, int], Future] = {}
        self._init_pool: ThreadPoolExecutor | None = None
        # bumped whenever the stacks or their gradients are reallocated: whatever holds their
        # addresses (cached views, captured CUDA graphs) must be rebuilt
        self.generation = 0
        self.shrink_at = self.SHRINK_AT if shrink_at is None else shrink_at
        if self.shrink_at < 0:
            raise ValueError(f"shrink_at: must be >= 0, got {shrink_at}")
        self._flags: torch.Tensor | None = None  # per-slot non-finite gradient flags (`grad_flags`)

    @property
    def pack(self) -> bool:
        """Whether slots move in one packed transfer (default: off the CPU only)."""
        return self.packer.pack

    @pack.setter
    def pack(self, on: bool) -> None:
        self.packer.pack = self.optim.pack = on

    @property
    def layer_names(self) -> list[str]:
        return [n for n, _ in self.named_layers]

    # ----------------------------------------------------------------------------- queries
    def record(self, job_id: str, *status: Status) -> AdapterRecord:
        """The adapter's record; ValueError if unknown or not in one of `status` (when given)."""
        rec = self.adapters.get(job_id)
        if rec is None:
            raise ValueError(f"job_id: unknown adapter {job_id!r}")
        if status and rec.status not in status:
            raise ValueError(f"job_id: adapter {job_id!r} is {rec.status}, expected {' or '.join(status)}")
        return rec

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.adapters

    @property
    def job_ids(self) -> list[str]:
        return list(self.adapters)

    @property
    def active(self) -> list[str]:
        return [k for k, r in self.adapters.items() if r.status == "active"]

    def config(self, job_id: str) -> AdapterConfig:
        return self.record(job_id).cfg

    def status(self, job_id: str) -> Status:
        return self.record(job_id).status

    def failure(self, job_id: str) -> str | None:
        return self.record(job_id).failure

    def step_count(self, job_id: str) -> int:
        rec = self.record(job_id)
        if rec.slot is not None:
            return self.optim.step_count(rec.slot)
        held = rec.parked if rec.parked is not None else rec.offloaded
        return int(held["optim"]["hyper"]["step"])

    # ----------------------------------------------------------------------------- slots
    @property
    def capacity(self) -> int:
        return self.layers[0].A.shape[0]

    @property
    def r_max(self) -> int:
        return self.layers[0].A.shape[2]

    def _alloc_slot(self, rank: int) -> int:
        used = {r.slot for r in self.adapters.values() if r.slot is not None}
        free = [s for s in range(self.capacity) if s not in used]
        if not free and rank <= self.r_max:  # a legacy parked adapter (one holding its slot) gives it up
            held = [j for j in self._parked if self.adapters[j].slot is not None]
            if held:
                rec = self.adapters[held[0]]
                slot = rec.slot
                self._park_out(rec, compact=False)  # its slot is taken at once
                return slot
        coming, self._incoming = self._incoming[1:], []  # this one, then the rest of a burst
        if not free or rank > self.r_max:  # a reallocation: make it room for the whole burst
            cap = self.capacity
            while cap < len(used) + 1 + len(coming):
                cap *= 2
            widest = max([rank, self.r_max, *(r for r in coming if r <= self.layers[0].max_rank)])
            self._stacks_move()  # the views would keep the old gradients alive
            for l in self.layers:
                l.resize(cap, widest)
            self.optim.resize()
        self._incoming = coming
        return free[0] if free else len(used)

    def reserve(self, ranks: Sequence[int]) -> None:
        """Adapters of these ranks are about to take slots (admits and resumes, in order): when
        the stacks must grow for one of them, they grow at once to hold the rest too, so a burst
        grows them once, not by repeated doubling (each a reallocation and copy of every stack
        and moment, and new CUDA graphs)."""
        self._incoming = [int(r) for r in ranks if int(r) >= 1]

    def _release_slot(self, rec: AdapterRecord, compact: bool = True) -> None:
        self.packer.zero(rec.slot)  # free slots are zero
        self.optim.free_slot(rec.slot)
        rec.slot = None
        if compact:
            self.maybe_compact()

    def maybe_compact(self) -> None:
        """Compact the stacks where few enough slots are live (see `compact`)."""
        live = sum(1 for r in self.adapters.values() if r.slot is not None)
        if self.shrink_at and live <= self.capacity // self.shrink_at:  # hysteresis (growth doubles)
            self.compact()

    def compact(self) -> None:
        """Move live adapters to the lowest slots and shrink the stacks and optimizer state to
        the smallest power of two that holds them (and, with `shrink_rank`, r_max to the largest
        live rank), so memory freed by drops and suspends goes back to the allocator."""
        live = sorted((r.slot, r) for r in self.adapters.values() if r.slot is not None)
        capacity = 1 << max(0, len(live) - 1).bit_length()
        r_max = max((r.cfg.rank for _, r in live), default=1) if self.shrink_rank else self.r_max
        if capacity >= self.capacity and r_max >= self.r_max:
            return
        order = [slot for slot, _ in live]
        self._stacks_move()
        capacity = min(capacity, self.capacity)
        for l in self.layers:
            l.compact(order, capacity, min(r_max, self.r_max))
        self.optim.compact(order)
        for new, (_, rec) in enumerate(live):
            rec.slot = new

    def _stacks_move(self) -> None:
        self.grad_check.invalidate()
        self.packer.blocks.invalidate()  # its views would keep the old stacks alive
        self.generation += 1

    def _peft_init(self, rank: int, seed: int) -> Weights | torch.Tensor:
        """`peft_init` (packed by `SlotPacker.init_packed` when slots move packed), remembered
        for the last few (rank, seed): a sweep admits many configs that share both, and the CPU
        draws dominate an admit. The tensors are only read."""
        key = (rank, seed)
        pending = self._inits_pending.pop(key, None)
        if pending is not None:
            self._top_up_inits()
            return pending.result()
        if key not in self._init_cache:
            while len(self._init_cache) >= 4:
                del self._init_cache[next(iter(self._init_cache))]
            self._init_cache[key] = self._draw_init(rank, seed)
        return self._init_cache[key]

    def _draw_init(self, rank: int, seed: int) -> Weights | torch.Tensor:
        packed = self.pack if self.packed_inits is None else self.packed_inits
        return self.packer.init_packed(rank, seed) if packed else peft_init(self.layers, rank, seed)

    # shrink the stacks when at most 1/SHRINK_AT of their slots is used: every per-step pass over
    # the stacks costs at most SHRINK_AT x what the training adapters need (the default `shrink_at`)
    SHRINK_AT = 2

    INITS_AHEAD = 8  # initial weights drawn ahead at most (each is an adapter's size in host memory)

    def prefetch_inits(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Draw the initial weights of adapters about to be admitted, (rank, seed) in admit order,
        in background threads (the draws are CPU work that releases the GIL, so they overlap the
        GPU steps and each other). Admits take them as they come; the draws are the same. A later
        call re-orders: draws not among its first INITS_AHEAD are dropped (drawn again if needed)."""
        self._inits_ahead = list(dict.fromkeys((int(r), int(s)) for r, s in pairs if r >= 1))
        head = set(self._inits_ahead[:self.INITS_AHEAD])
        for key in [k for k in self._inits_pending if k not in head]:  # drawn for another order: make room
            self._inits_pending.pop(key).cancel()
        self._top_up_inits()

    def _top_up_inits(self) -> None:
        while self._inits_ahead and len(self._inits_pending) < self.INITS_AHEAD:
            rank, seed = self._inits_ahead.pop(0)
            if (rank, seed) in self._inits_pending or (rank, seed) in self._init_cache:
                continue
            if self._init_pool is None:
                self._init_pool = ThreadPoolExecutor(max_workers=min(self.INITS_AHEAD, os.cpu_count() or 1),
                                                     thread_name_prefix="peft-init")
            self._inits_pending[(rank, seed)] = self._init_pool.submit(self._draw_init, rank, seed)

    # ----------------------------------------------------------------------------- lifecycle
    def admit(self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
              warmup_steps: int = 0, total_steps: int = 0, max_grad_norm: float | None = None) -> None:
        """Add a fresh adapter, initialized as PEFT would after `torch.manual_seed(seed)`; its lr
        follows `lr_schedule` over `total_steps` after `warmup_steps` of linear warm-up, and
        `max_grad_norm` (None: off) clips its own gradient norm over all its layers."""
        if job_id in self.adapters:
            raise ValueError(f"job_id: adapter {job_id!r} already exists")
        if isinstance(rank, int) and rank >= 1:
            for name, l in self.named_layers:
                if rank > l.max_rank:
                    raise ValueError(f"rank: {rank} exceeds min(d_in, d_out) = {l.max_rank} of layer {name!r}")
        cfg = AdapterConfig.checked(job_id, rank, alpha, lr, weight_decay, dropout, seed, lr_schedule,
                                    warmup_steps, total_steps, max_grad_norm)
        slot = self._alloc_slot(rank)
        self.optim.init_slot(slot, lr, weight_decay, cfg.betas, cfg.eps)
        init = self._peft_init(rank, seed)
        if isinstance(init, torch.Tensor):  # packed (pinned on CUDA): one asynchronous copy, no host sync
            self.packer.write_packed(slot, init.to(self.device, non_blocking=True), rank)
        else:
            self.packer.write(slot, init)
        self.adapters[job_id] = AdapterRecord(cfg, slot)

    def drop(self, job_id: str) -> None:
        """Forget an adapter: free its slot, weights, optimizer state and snapshot."""
        rec = self.record(job_id)
        self._parked.pop(job_id, None)
        if rec.slot is not None:
            self._release_slot(rec)
        del self.adapters[job_id]

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        """Stop training an adapter, keeping its weights and (unless `keep_optimizer=False`) its
        optimizer state; its slot is freed (its state copied to host memory) or, with `park`,
        kept until another adapter needs it.

        `keep_optimizer=False` is for a job that never trains again (a stopped one): its weights
        stay for the task's result, its AdamW moments (twice the weights' size) are not copied
        or kept; a later `resume` (to evaluate it) starts them at zero."""
        rec = self.record(job_id, "active")
        if self.park and keep_optimizer:
            self._park_out(rec, compact=False)
        else:
            self._offload(rec, keep_optimizer, compact=False)
        rec.status = "suspended"  # (after the copies: one that ran out of memory left the adapter as it was)
        self.maybe_compact()

    def _park_out(self, rec: AdapterRecord, compact: bool = True) -> None:
        """Gather a suspended adapter's rank block (weights, AdamW moments) into device tensors
        of its own and free its slot: on-device copies only, no host sync."""
        rank = rec.cfg.rank
        rec.parked = {"weights": self.packer.pack_slot(rec.slot, rank),
                      "optim": self.optim.slot_state(rec.slot, rank, host=False)}
        self._parked[rec.cfg.job_id] = None
        self._release_slot(rec, compact)

    def _offload(self, rec: AdapterRecord, keep_optimizer: bool, compact: bool = True) -> None:
        """Copy a suspended adapter's state to the host and free its slot."""
        self._parked.pop(rec.cfg.job_id, None)
        rec.offloaded = {"weights": self.weights(rec.cfg.job_id),
                         "optim": self.optim.slot_state(rec.slot, rec.cfg.rank, moments=keep_optimizer)}
        self._release_slot(rec, compact)

    def _host_state(self, rec: AdapterRecord) -> dict:
        """A parked adapter's state as `offloaded` holds it (CPU tensors, PEFT layout)."""
        optim = rec.parked["optim"]
        return {"weights": self.packer.unpack(self.packer.to_host(rec.parked["weights"]), rec.cfg.rank),
                "optim": {"exp_avg": [t.cpu().clone() for t in optim["exp_avg"]],
                          "exp_avg_sq": [t.cpu().clone() for t in optim["exp_avg_sq"]],
                          "hyper": dict(optim["hyper"])}}

    def offload(self, job_id: str) -> None:
        """Move a parked adapter to the host now (no-op if it is there already)."""
        rec = self.record(job_id, "suspended")
        if rec.parked is not None:
            rec.offloaded, rec.parked = self._host_state(rec), None
            self._parked.pop(job_id, None)
        elif rec.slot is not None:  # parked in its slot (a checkpoint of an older version)
            self._offload(rec, keep_optimizer=True)

    @property
    def parked(self) -> list[str]:
        """Suspended adapters kept on the device, oldest first."""
        return list(self._parked)

    def resume(self, job_id: str) -> None:
        """Bring a suspended adapter back (possibly into another slot) exactly as it was."""
        rec = self.record(job_id, "suspended")
        self._parked.pop(job_id, None)
        if rec.slot is not None:  # parked in its slot (a checkpoint of an older version): it never left
            rec.status = "active"
            return
        slot = self._alloc_slot(rec.cfg.rank)
        if rec.parked is not None:  # on-device copies only
            self.packer.write_packed(slot, rec.parked["weights"], rec.cfg.rank)
            self.optim.load_slot_state(slot, rec.parked["optim"])
        else:
            self.packer.write(slot, rec.offloaded["weights"])
            self.optim.load_slot_state(slot, rec.offloaded["optim"])
        rec.slot, rec.offloaded, rec.parked, rec.status = slot, None, None, "active"

    def fail(self, job_id: str, reason: str) -> None:
        """Mark an adapter failed (it keeps its slot until dropped); the first reason sticks."""
        rec = self.record(job_id)
        rec.status = "failed"
        rec.failure = rec.failure or reason

    # ----------------------------------------------------------------------------- weights
    def weights(self, job_id: str) -> Weights:
        """The adapter's PEFT-layout weights per layer on the CPU, each its own tensor."""
        rec = self.record(job_id)
        if rec.parked is not None:
            return self.packer.unpack(self.packer.to_host(rec.parked["weights"]), rec.cfg.rank)
        if rec.slot is None:
            return [(a.clone(), b.clone()) for a, b in rec.offloaded["weights"]]
        return self.packer.read(rec.slot, rec.cfg.rank)

    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(module name, lora_A [r, d_in], lora_B [d_out, r]) per target layer, on the CPU."""
        return [(n, a, b) for n, (a, b) in zip(self.layer_names, self.weights(job_id))]

    def snapshot_best(self, job_id: str) -> None:
        """Remember the adapter's current weights as its best (call when val loss improves)."""
        rec = self.record(job_id)
        # kept packed on the device (one adapter's weights, rank x sum of layer widths): a sweep
        # snapshots most adapters at most evaluations, and a host copy cost 12-25 ms each on an H200
        if self.pack and rec.parked is not None:
            rec.best = rec.parked["weights"].clone()
        elif self.pack and rec.slot is not None:
            rec.best = self.packer.pack_slot(rec.slot, rec.cfg.rank)
        else:
            rec.best = self.weights(job_id)

    def has_best(self, job_id: str) -> bool:
        return self.record(job_id).best is not None

    def best_weights(self, job_id: str) -> Weights | None:
        """The best-val snapshot in PEFT layout on the CPU (None when there is none)."""
        rec = self.record(job_id)
        if rec.best is None or isinstance(rec.best, list):
            return rec.best
        return self.packer.unpack(self.packer.to_host(rec.best), rec.cfg.rank)

    def restore_best(self, job_id: str) -> None:
        """Make the best snapshot the adapter's weights (an overfitting exit keeps its best)."""
        rec = self.record(job_id)
        if rec.best is None:
            raise ValueError(f"job_id: adapter {job_id!r} has no best snapshot")
        packed = isinstance(rec.best, torch.Tensor)  # on the device, in `pack_slot`'s layout
        if rec.parked is not None and packed:
            rec.parked["weights"] = rec.best.clone()
        elif rec.slot is not None and packed:
            self.packer.write_packed(rec.slot, rec.best, rec.cfg.rank)
        else:
            best = self.best_weights(job_id)
            if rec.parked is not None:
                self.offload(job_id)
            if rec.slot is None:
                rec.offloaded["weights"] = [(a.clone(), b.clone()) for a, b in best]
            else:
                self.packer.write(rec.slot, best)

    # ----------------------------------------------------------------------------- a step's update
    def zero_grad(self, job_ids: Sequence[str] | None = None) -> None:
        """Zero the gradients in place (the optimizer keeps views of the same tensors): every
        slot's, or only these adapters' (after a backward that ran out of memory half-way), and
        their `grad_flags`."""
        if job_ids is None:
            self.optim.zero_grad()
            if self._flags is not None:
                self._flags.zero_()
        else:
            slots = [self.record(j).slot for j in job_ids]
            self.optim.zero_grad(slots)
            if self._flags is not None:
                self._flags[slots] = 0

    @property
    def grad_flags(self) -> torch.Tensor:
        """An int32 flag per slot, set by the fused kernels that write weight gradients in place
        when a slot's gradient is not finite (allocated at first use and again when the capacity
        changes; zeroed by `zero_step`)."""
        if self._flags is None or self._flags.shape[0] != self.capacity:
            self._flags = torch.zeros(self.capacity, dtype=torch.int32, device=self.device)
        return self._flags

    def ensure_grads(self) -> None:
        """Zero gradients for every stack that has none (in-place weight gradients write into
        them; autograd would otherwise make them at the first backward)."""
        for p in self.optim.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def zero_step(self, job_ids: Sequence[str]) -> None:
        """Before a step whose weight gradients are written in place: zero these adapters'
        gradient slots (one multi-tensor launch; no pass over the other slots, whose stale
        gradients nothing reads) and every slot's flag."""
        self.ensure_grads()
        slots = [self.record(j).slot for j in job_ids]
        self.optim.zero_grad(None if 2 * len(slots) >= self.capacity else slots)  # most slots: all, one launch each
        self.grad_flags.zero_()

    def update(self, job_ids: Sequence[str], losses: Sequence[float], flagged: bool = False) -> None:
        """After a backward: fail adapters with a non-finite loss or gradient; AdamW-step the rest
        (grads stay allocated and are zeroed in place by the next step). flagged: the backward
        wrote the gradients in place and flagged non-finite slots (`grad_flags`): read those
        instead of checking the gradients."""
        recs = [self.record(j) for j in job_ids]
        slots = [r.slot for r in recs]
        if not recs:
            grad_ok = []
        elif flagged:
            flags = self.grad_flags.tolist()  # one copy back, read on the host
            grad_ok = [flags[s] == 0 for s in slots]
        else:
            grad_ok = self.grad_check.finite(slots)
        good = []
        for j, rec, loss, gok in zip(job_ids, recs, losses, grad_ok):
            if math.isfinite(loss) and gok:
                good.append(rec.slot)
            else:
                self.fail(j, "non-finite loss" if not math.isfinite(loss) else "non-finite gradient")
        self._apply_knobs([r for r in recs if r.slot in good])
        self.optim.step(good)

    def _apply_knobs(self, recs: Sequence[AdapterRecord]) -> None:
        """Before an update: clip the gradients of adapters with a max norm (a batched pass over
        their slots only, no host sync) and set each scheduled adapter's lr for this step."""
        clipped = [r for r in recs if r.cfg.max_grad_norm is not None]
        if clipped:
            clip_slot_grad_norms(self.optim.params, [r.cfg.max_grad_norm for r in clipped], [r.slot for r in clipped])
        for r in recs:
            if r.cfg.lr_schedule != "constant" or r.cfg.warmup_steps:
                self.optim.set_lr(r.slot, r.cfg.lr_at(self.optim.step_count(r.slot)))

    # ----------------------------------------------------------------------------- state as data
    def _state_of(self, job_id: str) -> dict:
        rec = self.adapters[job_id]
        state = rec.to_state(self.best_weights(job_id))
        if rec.parked is not None:  # as if offloaded (the store keeps it parked)
            state["offloaded"] = self._host_state(rec)
        return state

    def export_adapter(self, job_id: str) -> dict:
        """A suspended adapter's whole state (config, host weights and AdamW state, snapshot) as
        picklable CPU data, for `import_adapter` in another store (it stays here too)."""
        self.offload(job_id)
        return self._state_of(job_id)

    def import_adapter(self, job_id: str, state: dict) -> None:
        """Add an adapter from `export_adapter`'s data, suspended (`resume` puts it in a slot)."""
        if job_id in self.adapters:
            raise ValueError(f"job_id: adapter {job_id!r} already exists")
        if state.get("status") != "suspended" or state.get("slot") is not None:
            raise ValueError(f"state: adapter {job_id!r} must be exported suspended")
        self.adapters[job_id] = AdapterRecord.from_state(state)

    def state_dict(self) -> dict:
        """Every adapter, the stacks and the optimizer state (CPU tensors)."""
        return {
            "capacity": self.capacity,
            "r_max": self.r_max,
            "stacks": [(l.A.detach().cpu().clone(), l.B.detach().cpu().clone()) for l in self.layers],
            "optim": self.optim.state_dict(),
            "jobs": {k: self._state_of(k) for k in self.adapters},
        }

    def load_state_dict(self, state: dict) -> None:
        self._stacks_move()
        for l, (a, b) in zip(self.layers, state["stacks"]):
            l.replace_stacks(a.to(self.device).clone(), b.to(self.device).clone())
        self.optim.load_state_dict(state["optim"])
        self.adapters = {k: AdapterRecord.from_state(j) for k, j in state["jobs"].items()}
        self._parked = {k: None for k, r in self.adapters.items() if r.status == "suspended" and r.slot is not None}
