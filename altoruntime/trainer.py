"""Fused multi-adapter training over one frozen backbone.

One `step` concatenates every active adapter's micro-batch along the batch dimension (right
padded to a common length, which leaves each sample's causal logits unchanged), runs one
forward/backward through the frozen backbone with each adapter applied to its own rows, reduces
each adapter's loss separately (mean token CE over its own tokens, as HF computes it for one
adapter alone) and backpropagates their sum. Adapters share no parameters and samples do not
attend to each other, so each adapter gets exactly the gradient it would get alone. A non-finite
loss or gradient fails that adapter only: it is left out of the backward sum and the update.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from contextlib import contextmanager
from typing import Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from altokernels import build_meta
from altokernels.validate import IMPLS
from altoruntime.backbone import LLAMA_TARGETS, freeze
from altoruntime.batching import IGNORE, Batch, concat_batches, labelled_counts
from altoruntime.lora_layer import LoraContext, MultiLoraLinear, install_lora_layers, peft_init
from altoruntime.optim import SlotAdamW

Status = Literal["active", "suspended", "failed"]
GRAD_CHECK_CHUNK = 1 << 22  # elements per slot concatenated at once by the finite-gradient check


@dataclass(frozen=True)
class AdapterConfig:
    """One adapter's hyperparameters (alpha None -> 2 * rank, the paper's default)."""

    job_id: str
    rank: int
    alpha: float
    lr: float
    weight_decay: float = 0.01
    dropout: float = 0.0
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class EvalResult:
    """One adapter's evaluation on one batch: CE summed over `tokens` labelled tokens, `correct`
    of which the argmax predicted."""

    loss_sum: float
    tokens: int
    correct: int

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens

    @property
    def accuracy(self) -> float:
        return self.correct / self.tokens


@dataclass
class _Job:
    cfg: AdapterConfig
    slot: int | None
    status: Status = "active"
    offloaded: dict | None = None  # suspended: weights + optimizer slot state on CPU
    # best-val weights: packed on the adapter's device by `snapshot_best` (one on-device copy, no
    # host sync), or PEFT-layout CPU pairs (from a checkpoint); read them with `best_weights`
    best: torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]] | None = None
    failure: str | None = None


class MultiAdapterTrainer:
    """Trains many LoRA adapters at once; adapters come and go between steps."""

    def __init__(
        self,
        model: nn.Module,
        target_modules: Sequence[str] = LLAMA_TARGETS,
        capacity: int = 4,
        impl: str = "auto",
        gradient_checkpointing: bool = False,
        pad_token_id: int = 0,
        shrink_rank: bool | None = None,
    ) -> None:
        """shrink_rank: whether `compact` narrows the stacks to the largest live rank (default: off
        on CUDA, where a new rank width makes every Triton kernel re-tune and recompile, 3-11 s on
        an H200 for a few MB of adapter memory; on elsewhere)."""
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.model = freeze(model)
        self.target_modules = tuple(target_modules)
        self.ctx = LoraContext(impl=impl)
        self.named_layers = install_lora_layers(model, self.target_modules, self.ctx, capacity, 1)
        self.layers: list[MultiLoraLinear] = [l for _, l in self.named_layers]
        self.device = self.layers[0].weight.device
        self.shrink_rank = self.device.type != "cuda" if shrink_rank is None else shrink_rank
        # per-slot A is [d_in, r_max] (rank dim 1), B is [r_max, d_out] (rank dim 0)
        self.optim = SlotAdamW([p for l in self.layers for p in (l.A, l.B)], rank_dims=[1, 0] * len(self.layers))
        self._init_cache: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._stage: torch.Tensor | None = None  # pinned device-to-host staging buffer (CUDA only)
        # pack a slot's layers into one transfer only off the CPU (on the CPU there is no copy to
        # save and the packing is pure overhead); tests turn it on to check the packed path
        self.pack = self.device.type != "cpu"
        self.optim.pack = self.pack
        self.jobs: dict[str, _Job] = {}
        self._launch_cache: dict = {}  # the kernels' direct-launch plans, reused across steps
        self._grad_views: tuple | None = None  # (grads' identity, [slots, -1] views in chunks), see _grad_finite
        self.pad_token_id = pad_token_id
        cfg = getattr(model, "config", None)
        plain_head = not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        has_parts = hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
        self._head = model.get_output_embeddings() if plain_head and has_parts else None
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ----------------------------------------------------------------------------- slots
    @property
    def capacity(self) -> int:
        return self.layers[0].A.shape[0]

    @property
    def r_max(self) -> int:
        return self.layers[0].A.shape[2]

    def _resize(self, capacity: int, r_max: int) -> None:
        self._grad_views = None  # the views would keep the old gradients alive
        for l in self.layers:
            l.resize(capacity, r_max)
        self.optim.resize()

    def _alloc_slot(self, rank: int) -> int:
        used = {j.slot for j in self.jobs.values() if j.slot is not None}
        free = [s for s in range(self.capacity) if s not in used]
        cap = self.capacity if free else self.capacity * 2
        if cap != self.capacity or rank > self.r_max:
            self._resize(cap, max(rank, self.r_max))
        return free[0] if free else len(used)

    def _release_slot(self, job: _Job) -> None:
        for l in self.layers:
            l.zero_slot(job.slot)
        self.optim.free_slot(job.slot)
        job.slot = None
        live = sum(1 for j in self.jobs.values() if j.slot is not None)
        if live <= self.capacity // 4:  # hysteresis: shrink only when at most a quarter is used
            self.compact()

    def compact(self) -> None:
        """Move live adapters to the lowest slots and shrink the stacks and optimizer state to
        the smallest power of two that holds them (and, with `shrink_rank`, r_max to the largest
        live rank), so memory freed by drops and suspends goes back to the allocator."""
        live = sorted((j.slot, j) for j in self.jobs.values() if j.slot is not None)
        capacity = 1 << max(0, len(live) - 1).bit_length()
        r_max = max((j.cfg.rank for _, j in live), default=1) if self.shrink_rank else self.r_max
        if capacity >= self.capacity and r_max >= self.r_max:
            return
        order = [slot for slot, _ in live]
        self._grad_views = None
        capacity = min(capacity, self.capacity)
        for l in self.layers:
            l.compact(order, capacity, min(r_max, self.r_max))
        self.optim.compact(order)
        for new, (_, job) in enumerate(live):
            job.slot = new

    def _job(self, job_id: str, *status: Status) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ValueError(f"job_id: unknown adapter {job_id!r}")
        if status and job.status not in status:
            raise ValueError(f"job_id: adapter {job_id!r} is {job.status}, expected {' or '.join(status)}")
        return job

    @torch.no_grad()
    def _write(self, slot: int, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write PEFT-layout weights of every layer into `slot`: one host-to-device copy of all
        layers (as [d_in | d_out, r] blocks stacked along dim 0), then on-device copies."""
        ranks = {a.shape[0] for a, _ in weights} | {b.shape[1] for _, b in weights}
        if not self.pack or len(ranks) != 1 or len(weights) != len(self.layers):
            for l, (a, b) in zip(self.layers, weights):
                l.set_slot(slot, a, b)
            return
        r = ranks.pop()
        dtype = self.layers[0].A.dtype
        srcs = [t for a, b in weights for t in (a, b)]  # [r, d_in], [d_out, r]: flat host memcpys
        flat = torch.cat([t.reshape(-1).to(dtype) for t in srcs]).to(self.device)
        pieces = [p.view(t.shape).t() for p, t in zip(flat.split([t.numel() for t in srcs]), srcs)]
        torch._foreach_zero_([t[slot] for l in self.layers for t in (l.A, l.B)])
        dsts = [t for l in self.layers for t in (l.A.data[slot, :, :r], l.B.data[slot, :r, :])]
        torch._foreach_copy_(dsts, pieces)  # the transposes happen on the device

    @torch.no_grad()
    def _read(self, job: _Job) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The adapter's PEFT-layout weights (lora_A [r, d_in], lora_B [d_out, r]) per layer on
        the CPU, each its own contiguous tensor. A live slot is transposed and packed on the
        device (one stack per distinct d_in, one cat) and moved in ONE device-to-host copy
        (through a reused pinned buffer on CUDA), so the host only does plain memcpys."""
        if job.slot is None:
            return [(a.clone(), b.clone()) for a, b in job.offloaded["weights"]]
        s, r = job.slot, job.cfg.rank
        if not self.pack:
            return [l.get_slot(s, r) for l in self.layers]
        return self._unpack(self._to_host(self._pack(s, r)), r)

    @torch.no_grad()
    def _pack(self, s: int, r: int) -> torch.Tensor:
        """Slot `s`'s first `r` rank columns of every layer as one new flat tensor on the device
        (A^T stacked per distinct d_in, then all B^T): a few kernels, no host sync."""
        groups = self._groups_by_d_in()
        a_parts = [torch.stack([self.layers[k].A.detach()[s, :, :r].t() for k in ks]) for ks in groups.values()]
        b_part = torch.cat([l.B.detach()[s, :r, :].t() for l in self.layers])  # [sum d_out, r]
        return torch.cat([t.reshape(-1) for t in (*a_parts, b_part)])

    def _unpack(self, flat: torch.Tensor, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`_pack`'s layout (on the host) -> PEFT-layout (lora_A [r, d_in], lora_B [d_out, r]) per
        layer, each its own contiguous tensor (`flat` may be a reused staging buffer)."""
        groups = self._groups_by_d_in()
        sizes = [len(ks) * r * self.layers[ks[0]].in_features for ks in groups.values()]
        sizes.append(r * sum(l.out_features for l in self.layers))
        *a_flat, b_flat = flat.split(sizes)
        a_out: list[torch.Tensor | None] = [None] * len(self.layers)
        for ks, fa in zip(groups.values(), a_flat):
            for k, a in zip(ks, fa.view(len(ks), r, -1).unbind(0)):
                a_out[k] = a.clone()
        b_out = [b.clone() for b in b_flat.view(-1, r).split([l.out_features for l in self.layers])]
        return list(zip(a_out, b_out))

    def _groups_by_d_in(self) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for k, l in enumerate(self.layers):
            groups.setdefault(l.in_features, []).append(k)
        return groups

    def _to_host(self, flat: torch.Tensor) -> torch.Tensor:
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

    def _peft_init(self, rank: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`peft_init`, remembered for the last few (rank, seed): a sweep admits many configs
        that share both, and the CPU draws dominate an admit. The tensors are only read."""
        key = (rank, seed)
        if key not in self._init_cache:
            while len(self._init_cache) >= 4:
                del self._init_cache[next(iter(self._init_cache))]
            self._init_cache[key] = peft_init(self.layers, rank, seed)
        return self._init_cache[key]

    # ----------------------------------------------------------------------------- lifecycle
    def admit(
        self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
        weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0,
    ) -> None:
        """Add a fresh adapter, initialized as PEFT would after `torch.manual_seed(seed)`."""
        if job_id in self.jobs:
            raise ValueError(f"job_id: adapter {job_id!r} already exists")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: must be a positive int, got {rank!r}")
        for name, l in self.named_layers:
            if rank > l.max_rank:
                raise ValueError(f"rank: {rank} exceeds min(d_in, d_out) = {l.max_rank} of layer {name!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: must be a positive number, got {lr}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay: must be >= 0, got {weight_decay}")
        alpha = 2.0 * rank if alpha is None else float(alpha)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha: must be a positive number, got {alpha}")
        cfg = AdapterConfig(job_id, rank, alpha, lr, weight_decay, dropout, seed)
        slot = self._alloc_slot(rank)
        self.optim.init_slot(slot, lr, weight_decay, cfg.betas, cfg.eps)
        self._write(slot, self._peft_init(rank, seed))
        self.jobs[job_id] = _Job(cfg, slot)

    def drop(self, job_id: str) -> None:
        """Forget an adapter: free its slot, weights, optimizer state and snapshot."""
        job = self._job(job_id)
        if job.slot is not None:
            self._release_slot(job)
        del self.jobs[job_id]

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        """Move an adapter and its optimizer state to host memory and free its slot.

        `keep_optimizer=False` is for a job that never trains again (a stopped one): its weights
        stay for the task's result, its AdamW moments (twice the weights' size) are not copied
        or kept; a later `resume` (to evaluate it) starts them at zero."""
        job = self._job(job_id, "active")
        job.offloaded = {"weights": self._read(job),
                         "optim": self.optim.slot_state(job.slot, job.cfg.rank, moments=keep_optimizer)}
        self._release_slot(job)
        job.status = "suspended"

    def resume(self, job_id: str) -> None:
        """Bring a suspended adapter back (possibly into another slot) exactly as it was."""
        job = self._job(job_id, "suspended")
        slot = self._alloc_slot(job.cfg.rank)
        self._write(slot, job.offloaded["weights"])
        self.optim.load_slot_state(slot, job.offloaded["optim"])
        job.slot, job.offloaded, job.status = slot, None, "active"

    def snapshot_best(self, job_id: str) -> None:
        """Remember the adapter's current weights as its best (call when val loss improves)."""
        job = self._job(job_id)
        # kept packed on the device (one adapter's weights, rank x sum of layer widths): a sweep
        # snapshots most adapters at most evaluations, and a host copy cost 12-25 ms each on an H200
        job.best = self._pack(job.slot, job.cfg.rank) if self.pack and job.slot is not None else self._read(job)

    def best_weights(self, job_id: str) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The best-val snapshot in PEFT layout on the CPU (None when there is none)."""
        job = self._job(job_id)
        if job.best is None or isinstance(job.best, list):
            return job.best
        return self._unpack(self._to_host(job.best), job.cfg.rank)

    def restore_best(self, job_id: str) -> None:
        """Make the best snapshot the adapter's weights (an overfitting exit keeps its best)."""
        best = self.best_weights(job_id)
        if best is None:
            raise ValueError(f"job_id: adapter {job_id!r} has no best snapshot")
        job = self._job(job_id)
        if job.slot is None:
            job.offloaded["weights"] = [(a.clone(), b.clone()) for a, b in best]
        else:
            self._write(job.slot, best)

    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(module name, lora_A [r, d_in], lora_B [d_out, r]) per target layer, on the CPU."""
        job = self._job(job_id)
        return [(n, a, b) for (n, _), (a, b) in zip(self.named_layers, self._read(job))]

    def config(self, job_id: str) -> AdapterConfig:
        return self._job(job_id).cfg

    def status(self, job_id: str) -> Status:
        return self._job(job_id).status

    def failure(self, job_id: str) -> str | None:
        return self._job(job_id).failure

    def step_count(self, job_id: str) -> int:
        job = self._job(job_id)
        return self.optim.step_count(job.slot) if job.slot is not None else int(job.offloaded["optim"]["hyper"]["step"])

    @property
    def active(self) -> list[str]:
        return [k for k, j in self.jobs.items() if j.status == "active"]

    # ----------------------------------------------------------------------------- batches
    def _concat(self, batches: Mapping[str, Batch]) -> tuple[list[_Job], torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        if not batches:
            raise ValueError("batches: need at least one adapter's batch")
        jobs = [self._job(job_id, "active") for job_id in batches]
        return (jobs, *concat_batches(batches, self.pad_token_id, self.device))

    def _set_meta(self, jobs: Sequence[_Job], rows: Sequence[int], length: int, training: bool) -> None:
        self.ctx.meta = build_meta(
            [r * length for r in rows], [j.slot for j in jobs], [j.cfg.rank for j in jobs],
            [j.cfg.scale for j in jobs], self.device,
            dropout=[j.cfg.dropout for j in jobs] if training else None, launch_cache=self._launch_cache,
        )
        self.ctx.training = training

    def _forward_tokens(self, jobs: Sequence[_Job], ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                        rows: Sequence[int], training: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Forward the concatenated batch: CE of every labelled token, whether its argmax was
        right, and how many labelled tokens each job has. The metadata stays set until the
        caller clears it: checkpointed layers re-run in the backward.

        The LM head runs only on positions that have a label (fine-tuning data labels answers
        only), so the [tokens, vocab] logits are never built for prompts and padding."""
        self._set_meta(jobs, rows, ids.shape[1], training)
        target = labels[:, 1:]
        valid = target != IGNORE
        if self._head is None:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1][valid].float()
        else:
            hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            logits = self._head(hidden[:, :-1][valid]).float()
        tgt = target[valid]
        per_token = nn.functional.cross_entropy(logits, tgt, reduction="none")
        return per_token, logits.detach().argmax(-1) == tgt, labelled_counts(valid, rows)

    def _losses(self, jobs: Sequence[_Job], ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                rows: Sequence[int], training: bool) -> list[torch.Tensor]:
        """One mean-token-CE loss tensor per job (HF's loss for that job's batch alone)."""
        per_token, _, per_job = self._forward_tokens(jobs, ids, mask, labels, rows, training)
        return [t.mean() for t in torch.split(per_token, per_job)]

    # ----------------------------------------------------------------------------- train / eval
    def _forward_backward(self, jobs: list[_Job], ids, mask, labels, rows) -> list[float]:
        """Losses of `jobs`; on out-of-memory, retry in halves (a job that cannot fit alone fails)."""
        try:
            losses = torch.stack(self._losses(jobs, ids, mask, labels, rows, training=True))
            # non-finite losses are masked on the device (one host sync per step instead of one per
            # adapter); such an adapter's own rows may get NaN gradients: it is marked failed below
            finite = torch.isfinite(losses)
            torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
            return losses.detach().float().tolist()  # the step's one host sync
        except torch.OutOfMemoryError:
            self._zero_grads([j.slot for j in jobs])  # a backward may have half-run
            if len(jobs) == 1:
                jobs[0].failure = "out of memory even alone"
                return [math.nan]
            h, r = len(jobs) // 2, sum(rows[: len(jobs) // 2])
            return (self._forward_backward(jobs[:h], ids[:r], mask[:r], labels[:r], rows[:h])
                    + self._forward_backward(jobs[h:], ids[r:], mask[r:], labels[r:], rows[h:]))

    @torch.no_grad()
    def _zero_grads(self, slots: list[int]) -> None:
        for p in self.optim.params:
            if p.grad is not None:
                p.grad[slots] = 0

    @torch.no_grad()
    def _grad_finite(self, slots: list[int]) -> list[bool]:
        """Whether each slot's gradient is finite in every layer, with one host sync.

        The gradients (zeroed in place between steps, so their [slots, -1] views are cached) are
        concatenated along the parameter axis in chunks of <= GRAD_CHECK_CHUNK elements per slot
        and max-abs reduced per slot (it cannot overflow; NaN/inf propagate): a few ops per step
        instead of three per parameter (1,260 for SmolLM2's 420 stacks). (A multi-tensor norm over
        per-slot views was slower on an H100: it makes one host tensor per (slot, param).)"""
        grads = [p.grad for p in self.optim.params if p.grad is not None]
        if not grads or not slots:
            return [True] * len(slots)
        key = tuple((g.data_ptr(), g.shape, g.dtype) for g in grads)
        if self._grad_views is None or self._grad_views[0] != key:
            chunks: list[list[torch.Tensor]] = []
            size = 0
            for g in grads:
                v = g.view(g.shape[0], -1)
                if not chunks or size + v.shape[1] > GRAD_CHECK_CHUNK or chunks[-1][0].dtype != v.dtype:
                    chunks.append([])
                    size = 0
                chunks[-1].append(v)
                size += v.shape[1]
            self._grad_views = (key, chunks)
        amax = torch.stack([torch.linalg.vector_norm(torch.cat(c, 1) if len(c) > 1 else c[0], math.inf, dim=1)
                            for c in self._grad_views[1]])
        ok = torch.isfinite(amax).all(0)
        return ok[torch.as_tensor(slots, device=ok.device)].tolist()

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """One fused training step; returns each adapter's loss (NaN -> that adapter failed)."""
        jobs, ids, mask, labels, rows = self._concat(batches)
        self.optim.zero_grad()  # in place: the backward accumulates into the same tensors
        self.model.train()
        try:
            losses = self._forward_backward(jobs, ids, mask, labels, rows)
        finally:
            self.ctx.meta = None
        self._apply_update(jobs, losses)
        return {j.cfg.job_id: l for j, l in zip(jobs, losses)}

    def _apply_update(self, jobs: Sequence[_Job], losses: Sequence[float]) -> None:
        """Mark adapters with a non-finite loss or gradient failed; AdamW-step the rest (grads stay allocated and are zeroed in place by the next step)."""
        grad_ok = self._grad_finite([j.slot for j in jobs]) if jobs else []
        good = []
        for job, loss, gok in zip(jobs, losses, grad_ok):
            if math.isfinite(loss) and gok:
                good.append(job.slot)
            else:
                job.status = "failed"
                job.failure = job.failure or ("non-finite loss" if not math.isfinite(loss) else "non-finite gradient")
        self.optim.step(good)

    @torch.no_grad()
    def evaluate(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """Each adapter's mean token CE on its batch (no dropout, no update)."""
        return {j: r.loss for j, r in self.evaluate_tokens(batches).items()}

    @torch.no_grad()
    def evaluate_tokens(self, batches: Mapping[str, Batch]) -> dict[str, "EvalResult"]:
        """Per adapter: CE sum, labelled tokens and argmax hits on its batch, so callers can
        average over many batches by tokens (and report teacher-forced answer accuracy)."""
        jobs, ids, mask, labels, rows = self._concat(batches)
        self.model.eval()
        try:
            per_token, hit, per_job = self._forward_tokens(jobs, ids, mask, labels, rows, training=False)
        finally:
            self.ctx.meta = None
        seg = torch.repeat_interleave(torch.arange(len(per_job), device=per_token.device),
                                      torch.as_tensor(per_job, device=per_token.device), output_size=sum(per_job))
        both = torch.zeros(2, len(per_job), dtype=torch.float64, device=per_token.device)
        both[0].index_add_(0, seg, per_token.double())
        both[1].index_add_(0, seg, hit.double())
        sums, hits = both.tolist()  # one host sync for every adapter's sums
        hits = [int(h) for h in hits]
        return {j.cfg.job_id: EvalResult(s, n, h) for j, s, n, h in zip(jobs, sums, per_job, hits)}

    @torch.no_grad()
    def logits(self, job_id: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's logits with one adapter applied (for export checks and generation)."""
        job = self._job(job_id, "active")
        ids = input_ids.to(self.device)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(self.device)
        self.model.eval()
        self._set_meta([job], [ids.shape[0]], ids.shape[1], training=False)
        try:
            return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        finally:
            self.ctx.meta = None

    @contextmanager
    def applied(self, job_id: str) -> Iterator[nn.Module]:
        """The backbone with one adapter on every row, e.g. for `model.generate` (any row count)."""
        job = self._job(job_id, "active")
        self.model.eval()
        self.ctx.training = False
        self.ctx.set_single((job.slot, job.cfg.rank, job.cfg.scale))
        try:
            with torch.no_grad():
                yield self.model
        finally:
            self.ctx.set_single(None)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to rebuild the adapters and their optimizers (CPU tensors)."""
        return {
            "target_modules": list(self.target_modules),
            "capacity": self.capacity,
            "r_max": self.r_max,
            "stacks": [(l.A.detach().cpu().clone(), l.B.detach().cpu().clone()) for l in self.layers],
            "optim": self.optim.state_dict(),
            "jobs": {k: {"cfg": asdict(j.cfg), "slot": j.slot, "status": j.status, "offloaded": j.offloaded,
                         "best": self.best_weights(k), "failure": j.failure} for k, j in self.jobs.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["target_modules"]) != list(self.target_modules):
            raise ValueError(f"state: target_modules {state['target_modules']} != trainer's {list(self.target_modules)}")
        for l, (a, b) in zip(self.layers, state["stacks"]):
            l.A.grad, l.B.grad = None, None
            l.A.data, l.B.data = a.to(self.device).clone(), b.to(self.device).clone()
        self.optim.load_state_dict(state["optim"])
        self.jobs = {}
        for k, j in state["jobs"].items():
            cfg = dict(j["cfg"])
            cfg["betas"] = tuple(cfg["betas"])
            self.jobs[k] = _Job(AdapterConfig(**cfg), j["slot"], j["status"], j["offloaded"], j["best"], j["failure"])


def trainer_from_env(model: nn.Module, capacity: int, pad_token_id: int = 0,
                     env: Mapping[str, str] | None = None) -> MultiAdapterTrainer:
    """A trainer on the paths ALTO_LORA_IMPL (LoRA kernels) and ALTO_OPTIM_IMPL ("fused" or "loop")
    choose. `alto run` and `alto profile` both build theirs here: a profile measured on other paths
    than the run it models is off by the difference (H200, 2026-12-03: the run took the per-parameter
    optimizer loop, the profiler its fused default, and the run's steps came out 78% slower)."""
    env = os.environ if env is None else env
    impl = env.get("ALTO_LORA_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"ALTO_LORA_IMPL: expected one of {', '.join(IMPLS)}, got {impl!r}")
    optim_impl = env.get("ALTO_OPTIM_IMPL")
    if optim_impl is not None and optim_impl not in ("fused", "loop"):
        raise ValueError(f"ALTO_OPTIM_IMPL: expected 'fused' or 'loop', got {optim_impl!r}")
    tr = MultiAdapterTrainer(model, capacity=capacity, pad_token_id=pad_token_id, impl=impl)
    if optim_impl == "loop":  # "fused" is the default where the slots allow it (one device and dtype)
        tr.optim.impl = "loop"
    return tr


def env_paths(env: Mapping[str, str] | None = None) -> str:
    """The paths `trainer_from_env` and the kernels take under `env`, for logs and profiles."""
    env = os.environ if env is None else env
    flags = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("ALTO_KERNELS_"))
    return (f"lora={env.get('ALTO_LORA_IMPL', 'auto')} optim={env.get('ALTO_OPTIM_IMPL', 'fused')}"
            + (f" {flags}" if flags else ""))
