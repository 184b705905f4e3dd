"""Fused multi-adapter training over one frozen backbone on one device.

One `step` concatenates every active adapter's micro-batch along the batch dimension (right
padded to a common length, which leaves each sample's causal logits unchanged), runs one
forward/backward through the frozen backbone with each adapter applied to its own rows, reduces
each adapter's loss separately (mean token CE over its own tokens, as HF computes it for one
adapter alone) and backpropagates their sum. Adapters share no parameters and samples do not
attend to each other, so each adapter gets exactly the gradient it would get alone. A non-finite
loss or gradient fails that adapter only: it is left out of the backward sum and the update.

A step's inputs are packed on the host into bucketed shapes (altoruntime/step_inputs.py) and its
forward and backward run as one body that never reads a device value back; on CUDA that body is
captured per shape as a CUDA graph and replayed (altoruntime/step_graphs.py), so the host's
Python no longer paces the GPU. Evaluation runs the same way, forward only.

The adapters' tensors and optimizer state live in an `AdapterStore` (`self.store`); the trainer
runs the model on them. Lifecycle calls are the store's, forwarded so that the trainer is a
`Trainer` (altoruntime/protocol.py).
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from altokernels import build_meta, max_sched_entries
from altokernels.compile_ahead import CompileAhead, unavailable
from altokernels.validate import IMPLS
from altoruntime.adapters import AdapterConfig, AdapterStore, Status, Weights
from altoruntime.backbone import LLAMA_TARGETS, find_targets, freeze, peft_target_names
from altoruntime.batching import IGNORE, Batch, labelled_counts
from altoruntime.fused_backbone import fuse_backbone
from altoruntime.lora_layer import LoraContext, install_lora_layers
from altoruntime.protocol import EvalResult
from altoruntime.step_graphs import StepGraphs
from altoruntime.step_inputs import StepInputs, bucket, pack_step

__all__ = ["AdapterConfig", "EvalResult", "MultiAdapterTrainer", "Status", "env_paths", "trainer_from_env"]

log = logging.getLogger(__name__)


GRAPH_BUCKET_STEPS = 2  # under retargeted graphs rows, length and labels round up to powers of two


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class MultiAdapterTrainer:
    """Trains many LoRA adapters at once; adapters come and go between steps."""

    def __init__(
        self,
        model: nn.Module,
        target_modules: str | Sequence[str] = LLAMA_TARGETS,
        capacity: int = 4,
        impl: str = "auto",
        gradient_checkpointing: bool = False,
        pad_token_id: int = 0,
        shrink_rank: bool | None = None,
        cuda_graphs: bool = True,
        park: bool | None = None,
        group_projections: bool = False,
    ) -> None:
        """target_modules: PEFT's forms (`backbone.find_targets`); `self.target_modules` is what an
        exported adapter_config.json names (`backbone.peft_target_names`). shrink_rank, park: see
        `AdapterStore`. cuda_graphs: capture and replay steps on CUDA. group_projections: the
        projections that share an input (q/k/v; gate/up) make one fused LoRA call where the model's
        forward groups them (`lora_layer.lora_group`, called by a fused backbone's attention and MLP)."""
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.model = freeze(model)
        self.target_modules = tuple(peft_target_names(model, [n for n, _ in find_targets(model, target_modules)]))
        self.ctx = LoraContext(impl=impl, group=group_projections)
        layers = install_lora_layers(model, target_modules, self.ctx, capacity, 1)
        self.fan_in_fan_out = any(layer.fan_in_fan_out for _, layer in layers)  # Conv1D targets (GPT-2)
        self.device = layers[0][1].weight.device
        self.graphs = StepGraphs(self.device, enabled=cuda_graphs)
        # a graph serves every group of its shape (segments, rows, length, labels, dropout or not):
        # the Triton path reads the adapters' slots, ranks, scales and dropout rates only from the
        # step metadata's device tables, which a replay rewrites (`LoraBatchMeta.retarget`); the
        # torch paths bake them into their kernels, so their graphs stay per group
        self.retarget_graphs = self.device.type == "cuda" and impl in ("auto", "triton")
        # the Triton path writes weight gradients in place at the step's slots and flags non-finite
        # ones (altokernels `grad_flags`): no per-step pass over the stacks' capacity is left (no
        # zeroing, accumulation or finite check of every slot), so under CUDA graphs the stacks keep
        # their capacity instead of shrinking: a reallocation invalidates every captured graph
        # (9 reallocations cost ~17 of 43 captures, ~0.4 s each, in session 11's H200 e2e run)
        self.in_place_grads = impl == "triton" or (impl == "auto" and self.device.type == "cuda")
        keep = self.retarget_graphs and self.graphs.enabled
        self.store = AdapterStore(layers, shrink_rank, park, shrink_at=0 if keep else None)
        self.pad_token_id = pad_token_id
        cfg = getattr(model, "config", None)
        plain_head = not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        has_parts = hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
        # the LM head run on labelled positions only; None: take the model's full logits
        self.head: nn.Module | None = model.get_output_embeddings() if plain_head and has_parts else None
        self._launch_cache: dict = {}  # the kernels' direct-launch plans, reused across steps
        # set: the first training and the first evaluation body run once with their uncompiled
        # Triton kernels deferred, then those compile in parallel (altokernels/compile_ahead.py)
        self.compile_ahead: CompileAhead | None = None
        self._ahead_done: set[bool] = set()
        self._graphs_at: tuple = ()  # the tensors' addresses the captured graphs point into
        # a list: every fused call is recorded in it (kind, adapters, rows, length, graph outcome, wall
        # seconds to its host sync), to see where a run's step and validation time goes
        self.calls: list[dict] | None = None
        self._widest: dict[tuple, tuple[int, int]] = {}  # step family -> widest (length, labels) so far
        self._largest: dict[bool, tuple[int, int]] = {}  # training? -> most (tokens, labels) of a step that ran
        # training? -> the longest length and most labels per row of a step that ran: with
        # pad_new_families, a family's first step pads up to them (no capture when it would grow)
        self._kind_widest: dict[bool, tuple[int, float]] = {}
        self.pad_new_families = False
        # a length bucket never passes the model's position limit (learned position embeddings)
        self.max_length = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if gradient_checkpointing:  # transformers 5.x renamed it; the old name goes in v6
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ----------------------------------------------------------------------------- the store's
    def admit(self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
              warmup_steps: int = 0, total_steps: int = 0, max_grad_norm: float | None = None) -> None:
        self.store.admit(job_id, rank, alpha, lr, weight_decay, dropout, seed, lr_schedule, warmup_steps,
                         total_steps, max_grad_norm)

    def drop(self, job_id: str) -> None:
        self.store.drop(job_id)

    def prefetch_inits(self, pairs: Sequence[tuple[int, int]]) -> None:
        """(rank, seed) of adapters about to be admitted: their initial weights are drawn ahead."""
        self.store.prefetch_inits(pairs)

    def reserve(self, ranks: Sequence[int]) -> None:
        """Room for adapters of these ranks about to be admitted or resumed (one resize)."""
        self.store.reserve(ranks)

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        """Suspend an adapter (its state copied out of its slot). Out of memory for the copies while
        captured graphs hold memory: they give it back and the suspend runs once more (the e2e run
        on an 80-GB H100, session 19, crashed parking an adapter while graphs held 51 GiB)."""
        def again() -> None:
            if self.store.status(job_id) == "suspended":  # the copies went through, the compaction after them did not
                self.store.maybe_compact()
            else:
                self.store.suspend(job_id, keep_optimizer)

        self._freeing_graphs(lambda: self.store.suspend(job_id, keep_optimizer), again)

    def _freeing_graphs(self, run: Callable[[], Any], again: Callable[[], Any] | None = None) -> Any:
        """run(); where it runs out of memory while captured graphs hold some, the graphs give it
        back (`StepGraphs.release`) and `again` (default: run) runs once more, outside the failed
        attempt's frames. With no graph held the error stands."""
        try:
            return run()
        except torch.OutOfMemoryError:
            if not len(self.graphs):
                raise
        self.graphs.release()
        return (again or run)()

    def resume(self, job_id: str) -> None:
        self.store.resume(job_id)

    def snapshot_best(self, job_id: str) -> None:
        self.store.snapshot_best(job_id)

    def has_best(self, job_id: str) -> bool:
        return self.store.has_best(job_id)

    def best_weights(self, job_id: str) -> Weights | None:
        return self.store.best_weights(job_id)

    def restore_best(self, job_id: str) -> None:
        self.store.restore_best(job_id)

    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        return self.store.adapter_weights(job_id)

    def config(self, job_id: str) -> AdapterConfig:
        return self.store.config(job_id)

    def status(self, job_id: str) -> Status:
        return self.store.status(job_id)

    def failure(self, job_id: str) -> str | None:
        return self.store.failure(job_id)

    def step_count(self, job_id: str) -> int:
        return self.store.step_count(job_id)

    def compact(self) -> None:
        self.store.compact()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.store

    @property
    def active(self) -> list[str]:
        return self.store.active

    @property
    def job_ids(self) -> list[str]:
        return self.store.job_ids

    @property
    def layer_names(self) -> list[str]:
        return self.store.layer_names

    @property
    def capacity(self) -> int:
        return self.store.capacity

    @property
    def r_max(self) -> int:
        return self.store.r_max

    # ----------------------------------------------------------------------------- the step
    def step(self, batches: Mapping[str, Batch | list[Batch]]) -> dict[str, float]:
        """One fused training step: forward, backward and AdamW update of every adapter in
        `batches`; returns each adapter's loss (NaN -> that adapter failed).

        Gradient accumulation: an adapter given a list of k micro-batches gets one update from
        their summed gradients, each micro-batch's mean token loss divided by k (torch's
        accumulation loop); pass i runs the i-th micro-batch of every adapter that has one. Its
        loss is the mean of its micro-batches' losses. (Limit: a pass that runs out of memory is
        retried in halves after zeroing its adapters' gradients, which also drops their earlier
        micro-batches' share of this update.)"""
        self._check_active(batches)
        if self.in_place_grads:  # the kernels accumulate into these slots' gradients
            self.store.zero_step(list(batches))
        else:
            self.store.zero_grad()  # in place: the backward accumulates into the same tensors
        self.model.train()
        micro = {j: b for j, b in batches.items() if isinstance(b, list)}
        if not micro:
            losses = self._train(batches, bucketed=True)
        else:
            if any(not m for m in micro.values()):
                raise ValueError("batches: a list of micro-batches must not be empty")
            parts = {j: (b if isinstance(b, list) else [b]) for j, b in batches.items()}
            total = dict.fromkeys(parts, 0.0)
            for i in range(max(len(m) for m in parts.values())):
                now = {j: m[i] for j, m in parts.items() if i < len(m)}
                scale = {j: 1.0 / len(parts[j]) for j in now}
                for j, loss in zip(now, self._train(now, bucketed=True, scale=scale)):
                    total[j] += loss
            losses = [total[j] for j in batches]
        self.store.update(list(batches), losses, flagged=self.in_place_grads)
        return dict(zip(batches, losses))

    def _check_active(self, batches: Mapping[str, Batch]) -> None:
        if not batches:
            raise ValueError("batches: need at least one adapter's batch")
        for job_id in batches:
            self.store.record(job_id, "active")

    def _train(self, batches: Mapping[str, Batch], bucketed: bool,
               scale: Mapping[str, float] | None = None, retried: bool = False) -> list[float]:
        """Losses of the adapters in `batches` (times `scale`, when given). On out-of-memory the
        captured graphs and the allocator's cache give their memory back first, and where graphs
        held some the same step runs once more; then it retries in halves at exact sizes (a job
        that cannot fit alone fails)."""
        job_ids = list(batches)
        try:
            t0 = time.perf_counter()
            pairs = list(batches.items())
            inp, family = self._pack(True, pairs, pairs, mean=True, bucketed=bucketed, scale=scale)
            losses = self._run(inp, training=True).tolist()  # the step's one host sync for the losses
            self._ran(True, inp, family, t0)
            return losses
        except torch.OutOfMemoryError:
            pass  # handled below, once the failed attempt's frames (and their tensors) are gone
        self.store.zero_grad(job_ids)  # a backward may have half-run
        held = len(self.graphs) > 0
        self.graphs.release()
        if held and not retried:  # graphs held memory an eager step needed (H100, session 19)
            return self._train(batches, bucketed, scale, retried=True)
        if len(job_ids) == 1:
            if bucketed:  # padded shapes may be what did not fit: once more at the exact size
                return self._train(batches, bucketed=False, scale=scale, retried=True)
            self.store.fail(job_ids[0], "out of memory even alone")
            return [math.nan]
        h = len(job_ids) // 2
        return (self._train({j: batches[j] for j in job_ids[:h]}, bucketed=False, scale=scale, retried=True)
                + self._train({j: batches[j] for j in job_ids[h:]}, bucketed=False, scale=scale, retried=True))

    def _run(self, inp: StepInputs, training: bool) -> torch.Tensor:
        """The step body on `inp`: training -> each adapter's mean loss (after its backward);
        else [2, adapters] float64 CE sums and argmax hits. Replayed from a CUDA graph when one is
        captured for this shape; the adapters' metadata is built only when the body runs."""
        where = self._addresses()
        if where != self._graphs_at:  # the stacks or their gradients moved: graphs point at freed memory
            self.graphs.invalidate()
            self._graphs_at = where
        adapters = self._segments(inp.job_ids, training)
        counts = [r * inp.length for r in inp.rows]
        dropout = any(a[3] > 0 for a in adapters)
        on_replay = None
        if self.retarget_graphs:  # one graph per shape, whichever adapters and however their rows split
            if training and self._bucket_steps() is not None:  # phantom segments: few group sizes
                unused = sorted(set(range(self.store.capacity)) - {a[0] for a in adapters})
                phantoms = unused[:min(_pow2(len(adapters)), self.store.capacity) - len(adapters)]
                adapters += tuple((slot, 1, 0.0, 0.0) for slot in phantoms)
                counts += [0] * len(phantoms)
            key = (training, len(adapters), dropout, sum(inp.rows), inp.length, inp.labels, inp.causal_only)

            def on_replay(meta) -> None:  # noqa: ANN001
                meta.retarget(*zip(*adapters), token_counts=counts)
        else:
            key = (training, adapters, inp.shape_key())

        def prepare():  # noqa: ANN202
            meta = self._build_meta(adapters, counts, training, padded=self.retarget_graphs)
            return (lambda *t: self._body(meta, training, inp.mask if not inp.causal_only else None, *t)), meta

        if self.compile_ahead is not None and training not in self._ahead_done:
            self._ahead_done.add(training)
            self._compile_ahead(inp, training, prepare)
        if not inp.causal_only:  # a mask that is not right padding: the eager path with the mask
            out = prepare()[0](*(t.to(self.device) for t in inp.tensors()))
        else:
            out = self.graphs.run(key, inp.tensors(), prepare, on_replay, warm=(training, dropout))
            if not self.graphs.enabled and self.store.shrink_at == 0:  # a capture failed: eager from now on,
                self.store.shrink_at = AdapterStore.SHRINK_AT  # where the stacks may shrink again
        return out[:len(inp.job_ids)] if training else out  # (no phantom segment's loss)

    def _compile_ahead(self, inp: StepInputs, training: bool, prepare) -> None:  # noqa: ANN001
        """Run the body once with its uncompiled Triton kernels deferred, then compile those in
        parallel. The run leaves nothing behind: its outputs are dropped, the RNG it drew dropout
        masks from is put back and the gradients it wrote are zeroed (it is the first run of its
        kind: nothing was accumulated before it)."""
        t0 = time.perf_counter()
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            with self.compile_ahead.deferred(self.device) as found:
                try:
                    prepare()[0](*(t.to(self.device) for t in inp.tensors()))
                except torch.OutOfMemoryError:  # what it met before is compiled; the real run handles memory
                    pass
        finally:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            if training and self.in_place_grads:
                self.store.zero_step(list(inp.job_ids))
            elif training:
                self.store.zero_grad(list(inp.job_ids))
        figures = self.compile_ahead.compile_all(found)
        log.info("compiled ahead for the first %s body: %s", "training" if training else "evaluation", figures)
        if self.calls is not None:  # the deferred run and the compiles, as one row of the call log
            self._log_call("train_ahead" if training else "eval_ahead", inp, "deferred", t0, kernels=figures["kernels"],
                           compile_s=figures["seconds"], workers=figures["workers"])

    def _bucket_steps(self) -> int | None:
        """Coarse shape buckets (powers of two) where retargeted graphs serve every group of a
        shape: each new shape costs a capture (~0.3 s for a SmolLM2 step on an H200) while a
        replay's time hardly depends on the padding (launch-bound); None: the fine default."""
        return GRAPH_BUCKET_STEPS if self.retarget_graphs and self.graphs.enabled else None

    @staticmethod
    def _family(training: bool, pairs: Sequence[tuple[str, Batch]], steps: int) -> tuple:
        """Steps that may share a graph up to their length and label count: same kind, segments and
        row bucket (of `steps`)."""
        rows = sum(int(b[0].shape[0]) for _, b in pairs)
        return training, _pow2(len(pairs)), bucket(rows, 1, steps=steps)

    def _pack(self, training: bool, padded: Sequence[tuple[str, Batch]], plain: Sequence[tuple[str, Batch]],
              **kw) -> tuple[StepInputs, tuple | None]:  # noqa: ANN003
        """The step's inputs and their family: under retargeted graphs `padded` (an evaluation's
        group with repeats) in coarse buckets, up to its family's widest shape (a new family, with
        `pad_new_families`, up to its kind's longest length and most labels per row so far, so that
        it is not captured again as it grows), unless that makes it larger (tokens or labels) than
        the largest step of its kind that ran, which bounds the padding's memory: then `plain` in
        the fine buckets (a task's first, largest steps go that way) and no family."""
        common = dict(pad_token_id=self.pad_token_id, max_length=self.max_length, **kw)
        steps = self._bucket_steps()
        if steps is not None and kw.get("bucketed", True):  # (an out-of-memory retry: exact sizes)
            family = self._family(training, padded, steps)
            most = self._largest.get(training, (0, 0))
            tries = [self._widest.get(family, (0, 0))]
            if family not in self._widest and self.pad_new_families and training in self._kind_widest:
                length, per_row = self._kind_widest[training]
                tries.insert(0, (length, bucket(math.ceil(per_row * family[2]), 1, steps=steps)))
            for at_least in tries:
                inp = pack_step(padded, steps=steps, at_least=at_least, **common)
                if sum(inp.rows) * inp.length <= most[0] and inp.labels <= most[1]:
                    return inp, family
        return pack_step(plain, **common), None

    def _ran(self, training: bool, inp: StepInputs, family: tuple | None, t0: float) -> None:
        """A step of these sizes ran (it fit in memory): later steps of its family pad up to it, no
        step of its kind pads beyond the largest; the call is recorded when asked to."""
        if family is not None:
            old = self._widest.get(family, (0, 0))
            self._widest[family] = (max(old[0], inp.length), max(old[1], inp.labels))
        most = self._largest.get(training, (0, 0))
        self._largest[training] = (max(most[0], sum(inp.rows) * inp.length), max(most[1], inp.labels))
        wide = self._kind_widest.get(training, (0, 0.0))
        self._kind_widest[training] = (max(wide[0], inp.length), max(wide[1], inp.labels / max(1, sum(inp.rows))))
        if self.calls is not None:
            self._log_call("train" if training else "eval", inp, self.graphs.last, t0)

    def _log_call(self, kind: str, inp: StepInputs, graph: str, t0: float, **extra: object) -> None:
        """One row of the call log (`calls`): the call's sizes, graph outcome, the graphs' drops and
        memory-gated or out-of-memory captures so far, the allocator's reserved MiB (CUDA) and the
        wall ms since t0."""
        stats = self.graphs.stats
        memory = ({"reserved_mib": round(torch.cuda.memory_reserved(self.device) / 2**20)}
                  if self.device.type == "cuda" else {})
        self.calls.append({"kind": kind, "adapters": len(inp.job_ids), "rows": sum(inp.rows), "length": inp.length,
                           "labels": inp.labels, "graph": graph, "invalidated": stats["invalidated"],
                           "skipped_memory": stats["capture_skipped_memory"], "capture_oom": stats["capture_oom"],
                           "ms": round((time.perf_counter() - t0) * 1e3, 3), **memory, **extra})

    def _causal_mask(self, length: int) -> torch.Tensor | None:
        """No mask where the attention kernel takes `is_causal` (SDPA, flash); elsewhere (eager
        attention) a [1, 1, L, L] additive causal mask made on the device, as transformers
        would, but without its host-made scalar (a host-to-device copy cannot be captured)."""
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if impl in (None, "sdpa") or str(impl).startswith("flash"):
            return None
        dtype = next(self.model.parameters()).dtype
        full = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=self.device)
        return full.triu_(1)[None, None]

    def _addresses(self) -> tuple:
        """Where the adapter stacks and their gradients live (what a captured graph writes)."""
        ps = self.store.optim.params
        flags = self.store.grad_flags.data_ptr() if self.in_place_grads else 0
        return (self.store.generation, flags, *(p.data_ptr() for p in ps),
                *(p.grad.data_ptr() if p.grad is not None else 0 for p in ps))

    def _body(self, meta, training: bool, mask: torch.Tensor | None, ids: torch.Tensor, gather: torch.Tensor,  # noqa: ANN001
              target: torch.Tensor, segment: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Forward (and, training, backward) of one packed step; no host sync, fixed shapes."""
        self.ctx.meta, self.ctx.training = meta, training
        self.ctx.grad_flags = self.store.grad_flags if training and self.in_place_grads else None
        try:
            am = self._causal_mask(ids.shape[1]) if mask is None else mask.to(self.device)
            if self.head is None:
                logits = self.model(input_ids=ids, attention_mask=am, use_cache=False).logits
                logits = logits.reshape(-1, logits.shape[-1]).index_select(0, gather).float()
            else:
                hidden = self.model.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state
                logits = self.head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, gather)).float()
            per_token = nn.functional.cross_entropy(logits, target, reduction="none")
            live = weight > 0
            n = len(meta.token_counts)
            if training:
                # non-finite losses are masked on the device; such an adapter's own rows may get NaN
                # gradients: the store fails it after the step
                losses = per_token.new_zeros(n).index_add_(0, segment, torch.where(live, per_token * weight, 0.0))
                torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses)).sum().backward()
                return losses.detach()
            hit = (logits.argmax(-1) == target) & live
            both = torch.zeros(2, n, dtype=torch.float64, device=per_token.device)
            both[0].index_add_(0, segment, torch.where(live, per_token, 0.0).double())
            both[1].index_add_(0, segment, hit.double())
            return both
        finally:
            self.ctx.meta = self.ctx.grad_flags = None

    def _segments(self, job_ids: Sequence[str], training: bool) -> tuple[tuple[int, int, float, float], ...]:
        """(slot, rank, scale, dropout) of each active adapter, as the step metadata takes them
        (no dropout outside training)."""
        recs = [self.store.record(j, "active") for j in job_ids]
        return tuple((r.slot, r.cfg.rank, r.cfg.scale, r.cfg.dropout if training else 0.0) for r in recs)

    def _meta(self, job_ids: Sequence[str], rows: Sequence[int], length: int, training: bool):  # noqa: ANN202
        return self._build_meta(self._segments(job_ids, training), [r * length for r in rows], training)

    def _build_meta(self, adapters: Sequence[tuple[int, int, float, float]], counts: Sequence[int], training: bool,  # noqa: ANN202
                    padded: bool = False):
        """LoRA metadata of (slot, rank, scale, dropout) segments of `counts` token rows; padded: a
        schedule table that fits any split of these rows among as many segments (a captured graph
        retargets it, `LoraBatchMeta.retarget`). Evaluations may repeat a slot; training segments
        of zero rows (phantoms on unused slots) write zero gradients there."""
        slots, ranks, scales, drops = zip(*adapters)
        entries = max_sched_entries(sum(counts), len(counts)) if padded else None
        return build_meta(counts, slots, ranks, scales, self.device, dropout=drops if training else None,
                          launch_cache=self._launch_cache, sched_entries=entries, shared_slots=not training)

    def _set_meta(self, job_ids: Sequence[str], rows: Sequence[int], length: int, training: bool) -> None:
        self.ctx.meta = self._meta(job_ids, rows, length, training)
        self.ctx.training = training

    def forward_tokens(self, job_ids: Sequence[str], ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                       rows: Sequence[int], training: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Forward concatenated rows (`rows[i]` of them for active adapter `job_ids[i]`): CE of
        every labelled token, whether its argmax was right, and how many labelled tokens each
        adapter has. The adapters stay applied (`ctx.meta`) until the caller sets `ctx.meta =
        None`: checkpointed layers re-run in the backward.

        The LM head runs only on positions that have a label (fine-tuning data labels answers
        only), so the [tokens, vocab] logits are never built for prompts and padding."""
        self._set_meta(job_ids, rows, ids.shape[1], training)
        target = labels[:, 1:]
        valid = target != IGNORE
        if self.head is None:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1][valid].float()
        else:
            hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            logits = self.head(hidden[:, :-1][valid]).float()
        tgt = target[valid]
        per_token = nn.functional.cross_entropy(logits, tgt, reduction="none")
        return per_token, logits.detach().argmax(-1) == tgt, labelled_counts(valid, rows)

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """Each adapter's mean token CE on its batch (no dropout, no update)."""
        return {j: r.loss for j, r in self.evaluate_tokens(batches).items()}

    @torch.no_grad()
    def evaluate_tokens(self, batches: Mapping[str, Batch]) -> dict[str, EvalResult]:
        """Per adapter: CE sum, labelled tokens and argmax hits on its batch, so callers can
        average over many batches by tokens (and report teacher-forced answer accuracy)."""
        self._check_active(batches)
        self.model.eval()
        t0 = time.perf_counter()
        pairs = list(batches.items())
        padded = pairs + pairs[-1:] * (_pow2(len(pairs)) - len(pairs))  # repeats: few group sizes, few graphs
        inp, family = self._pack(False, padded, pairs, mean=False)
        # one host sync for every adapter's sums; graphs that held memory it needed give it back, once more
        sums, hits = self._freeing_graphs(lambda: self._run(inp, training=False).tolist())
        self._ran(False, inp, family, t0)
        n = len(batches)  # a repeat's numbers are its original's
        return {j: EvalResult(s, c, int(h)) for j, s, c, h in zip(inp.job_ids[:n], sums, inp.counts, hits)}

    @torch.no_grad()
    def logits(self, job_id: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's logits with one adapter applied (for export checks and generation)."""
        ids = input_ids.to(self.device)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(self.device)
        self.model.eval()
        self._set_meta([job_id], [ids.shape[0]], ids.shape[1], training=False)
        try:
            return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        finally:
            self.ctx.meta = None

    @contextmanager
    def applied(self, job_id: str, merge: bool = True) -> Iterator[nn.Module]:
        """The backbone with one adapter on every row, e.g. for `model.generate` (any row count).

        merge: add the adapter into the frozen weights for the duration (PEFT's `merge_adapter`),
        so each decoded token runs plain linears, not the LoRA kernels (generation is a long
        chain of tiny steps: the launches, not the math, set its pace); the weights are restored
        exactly afterwards (kept copies, not a subtraction). False: the unmerged LoRA path."""
        rec = self.store.record(job_id, "active")
        self.model.eval()
        self.ctx.training = False
        saved: list[tuple[nn.Module, torch.Tensor]] = []
        try:
            with torch.no_grad():
                if merge:
                    r, scale = rec.cfg.rank, rec.cfg.scale
                    for layer in self.store.layers:
                        delta = (layer.A[rec.slot, :, :r].float() @ layer.B[rec.slot, :r, :].float()).mul_(scale)
                        delta = delta if layer.fan_in_fan_out else delta.t()  # the weight's own layout
                        saved.append((layer, layer.weight.detach().clone()))
                        layer.weight.add_(delta.to(layer.weight.dtype))
                else:
                    self.ctx.set_single((rec.slot, rec.cfg.rank, rec.cfg.scale))
                yield self.model
        finally:
            self.ctx.set_single(None)
            with torch.no_grad():
                for layer, w in saved:
                    layer.weight.copy_(w)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to rebuild the adapters and their optimizers (CPU tensors)."""
        return {"target_modules": list(self.target_modules), **self.store.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if list(state["target_modules"]) != list(self.target_modules):
            raise ValueError(f"state: target_modules {state['target_modules']} != trainer's {list(self.target_modules)}")
        self.store.load_state_dict(state)


def trainer_from_env(model: nn.Module, capacity: int, pad_token_id: int = 0,
                     env: Mapping[str, str] | None = None,
                     target_modules: str | Sequence[str] = LLAMA_TARGETS) -> MultiAdapterTrainer:
    """A trainer on the paths ALTO_LORA_IMPL (LoRA kernels), ALTO_OPTIM_IMPL ("fused" or "loop"),
    ALTO_CUDA_GRAPHS ("1", the default: captured steps on CUDA; "0": eager) and ALTO_FUSED_BACKBONE
    ("1", the default: a Llama-family backbone on CUDA runs Liger-Kernel's fused RMSNorm, rope and
    SwiGLU, altoruntime/fused_backbone.py; "0": transformers' own modules) choose; ALTO_CALL_LOG=1
    records every fused call (`MultiAdapterTrainer.calls`); ALTO_COMPILE_AHEAD ("1", the default:
    on CUDA the first training and evaluation bodies' Triton kernels compile in parallel,
    `MultiAdapterTrainer.compile_ahead`; "0": each compiles at its first launch); ALTO_GROUP_PROJECTIONS=1 (off until measured
    on a GPU) runs q/k/v and gate/up as one fused LoRA call each (`group_projections`). `alto run` and `alto profile` both build
    theirs here, so a profile measures the paths of the run it models. ALTO_GRAPH_PAD_FAMILIES=1 (off
    until measured on a GPU) pads a new family of captured shapes up front to its kind's widest so
    far (`pad_new_families`): session 18's H200 run re-captured families 20 times as they grew."""
    env = os.environ if env is None else env
    impl = env.get("ALTO_LORA_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"ALTO_LORA_IMPL: expected one of {', '.join(IMPLS)}, got {impl!r}")
    optim_impl = env.get("ALTO_OPTIM_IMPL")
    if optim_impl is not None and optim_impl not in ("fused", "loop"):
        raise ValueError(f"ALTO_OPTIM_IMPL: expected 'fused' or 'loop', got {optim_impl!r}")
    graphs = env.get("ALTO_CUDA_GRAPHS", "1")
    if graphs not in ("0", "1"):
        raise ValueError(f"ALTO_CUDA_GRAPHS: expected '0' or '1', got {graphs!r}")
    fused = env.get("ALTO_FUSED_BACKBONE", "1")
    if fused not in ("0", "1"):
        raise ValueError(f"ALTO_FUSED_BACKBONE: expected '0' or '1', got {fused!r}")
    if fused == "1":
        try:
            log.info("%s", fuse_backbone(model))
        except ImportError as e:  # liger-kernel is in the gpu extra; a CUDA machine without it says so
            raise ValueError(f"ALTO_FUSED_BACKBONE: '1' (the default) needs liger-kernel on CUDA ({e}); "
                             "install it, or set ALTO_FUSED_BACKBONE=0") from None
    pad_families = env.get("ALTO_GRAPH_PAD_FAMILIES", "0")
    if pad_families not in ("0", "1"):
        raise ValueError(f"ALTO_GRAPH_PAD_FAMILIES: expected '0' or '1', got {pad_families!r}")
    group = env.get("ALTO_GROUP_PROJECTIONS", "0")
    if group not in ("0", "1"):
        raise ValueError(f"ALTO_GROUP_PROJECTIONS: expected '0' or '1', got {group!r}")
    tr = MultiAdapterTrainer(model, target_modules=target_modules, capacity=capacity, pad_token_id=pad_token_id,
                             impl=impl, cuda_graphs=graphs == "1", group_projections=group == "1")
    tr.pad_new_families = pad_families == "1"
    if optim_impl == "loop":  # "fused" is the default where the slots allow it (one device and dtype)
        tr.store.optim.impl = "loop"
    calls = env.get("ALTO_CALL_LOG", "0")
    if calls not in ("0", "1"):
        raise ValueError(f"ALTO_CALL_LOG: expected '0' or '1', got {calls!r}")
    if calls == "1":  # each task writes <out>/<task>/fused_calls.csv (altoruntime/task_runner.py)
        tr.calls = []
    ahead = env.get("ALTO_COMPILE_AHEAD", "1")
    if ahead not in ("0", "1"):
        raise ValueError(f"ALTO_COMPILE_AHEAD: expected '0' or '1', got {ahead!r}")
    if ahead == "1" and tr.device.type == "cuda":
        why = unavailable()
        if why is None:
            tr.compile_ahead = CompileAhead()
        else:
            log.info("ALTO_COMPILE_AHEAD=1 ignored: %s", why)  # the kernels compile at first launch, as before
    return tr


def env_paths(env: Mapping[str, str] | None = None) -> str:
    """The paths `trainer_from_env` and the kernels take under `env`, for logs and profiles."""
    env = os.environ if env is None else env
    flags = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("ALTO_KERNELS_"))
    return (f"lora={env.get('ALTO_LORA_IMPL', 'auto')} optim={env.get('ALTO_OPTIM_IMPL', 'fused')}"
            + (" graphs=0" if env.get("ALTO_CUDA_GRAPHS") == "0" else "")
            + (" fused_backbone=0" if env.get("ALTO_FUSED_BACKBONE") == "0" else "")
            + (" compile_ahead=0" if env.get("ALTO_COMPILE_AHEAD") == "0" else "")
            + (" group=1" if env.get("ALTO_GROUP_PROJECTIONS") == "1" else "")
            + (" pad_families=1" if env.get("ALTO_GRAPH_PAD_FAMILIES") == "1" else "")
            + (f" {flags}" if flags else ""))
