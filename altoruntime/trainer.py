"""Fused multi-adapter training over one frozen backbone on one device.

One `step` concatenates every active adapter's micro-batch along the batch dimension (right
padded to a common length, which leaves each sample's causal logits unchanged), runs one
forward/backward through the frozen backbone with each adapter applied to its own rows, reduces
each adapter's loss separately (mean token CE over its own tokens, as HF computes it for one
adapter alone) and backpropagates their sum. Adapters share no parameters and samples do not
attend to each other, so each adapter gets exactly the gradient it would get alone. A non-finite
loss or gradient fails that adapter only: it is left out of the backward sum and the update.

The adapters' tensors and optimizer state live in an `AdapterStore` (`self.store`); the trainer
runs the model on them. Lifecycle calls are the store's, forwarded so that the trainer is a
`Trainer` (altoruntime/protocol.py).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from altokernels import build_meta
from altokernels.validate import IMPLS
from altoruntime.adapters import AdapterConfig, AdapterStore, Status, Weights
from altoruntime.backbone import LLAMA_TARGETS, freeze
from altoruntime.batching import IGNORE, Batch, concat_batches, labelled_counts
from altoruntime.lora_layer import LoraContext, install_lora_layers
from altoruntime.protocol import EvalResult

__all__ = ["AdapterConfig", "EvalResult", "MultiAdapterTrainer", "Status", "env_paths", "trainer_from_env"]


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
        """shrink_rank: see `AdapterStore`."""
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.model = freeze(model)
        self.target_modules = tuple(target_modules)
        self.ctx = LoraContext(impl=impl)
        self.store = AdapterStore(install_lora_layers(model, self.target_modules, self.ctx, capacity, 1), shrink_rank)
        self.device = self.store.device
        self.pad_token_id = pad_token_id
        cfg = getattr(model, "config", None)
        plain_head = not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        has_parts = hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
        # the LM head run on labelled positions only; None: take the model's full logits
        self.head: nn.Module | None = model.get_output_embeddings() if plain_head and has_parts else None
        self._launch_cache: dict = {}  # the kernels' direct-launch plans, reused across steps
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ----------------------------------------------------------------------------- the store's
    def admit(self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0) -> None:
        self.store.admit(job_id, rank, alpha, lr, weight_decay, dropout, seed)

    def drop(self, job_id: str) -> None:
        self.store.drop(job_id)

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        self.store.suspend(job_id, keep_optimizer)

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
    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """One fused training step: forward, backward and AdamW update of every adapter in
        `batches`; returns each adapter's loss (NaN -> that adapter failed)."""
        job_ids, ids, mask, labels, rows = self._concat(batches)
        self.store.zero_grad()  # in place: the backward accumulates into the same tensors
        self.model.train()
        try:
            losses = self._forward_backward(job_ids, ids, mask, labels, rows)
        finally:
            self.ctx.meta = None
        self.store.update(job_ids, losses)
        return dict(zip(job_ids, losses))

    def _forward_backward(self, job_ids: list[str], ids, mask, labels, rows) -> list[float]:
        """Losses of `job_ids`; on out-of-memory, retry in halves (a job that cannot fit alone fails)."""
        try:
            per_token, _, per_job = self.forward_tokens(job_ids, ids, mask, labels, rows, training=True)
            losses = torch.stack([t.mean() for t in torch.split(per_token, per_job)])
            # non-finite losses are masked on the device (one host sync per step instead of one per
            # adapter); such an adapter's own rows may get NaN gradients: it is marked failed after
            finite = torch.isfinite(losses)
            torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
            return losses.detach().float().tolist()  # the step's one host sync
        except torch.OutOfMemoryError:
            self.store.zero_grad(job_ids)  # a backward may have half-run
            if len(job_ids) == 1:
                self.store.fail(job_ids[0], "out of memory even alone")
                return [math.nan]
            h, r = len(job_ids) // 2, sum(rows[: len(job_ids) // 2])
            return (self._forward_backward(job_ids[:h], ids[:r], mask[:r], labels[:r], rows[:h])
                    + self._forward_backward(job_ids[h:], ids[r:], mask[r:], labels[r:], rows[h:]))

    def _concat(self, batches: Mapping[str, Batch]) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        if not batches:
            raise ValueError("batches: need at least one adapter's batch")
        for job_id in batches:
            self.store.record(job_id, "active")
        return (list(batches), *concat_batches(batches, self.pad_token_id, self.device))

    def _set_meta(self, job_ids: Sequence[str], rows: Sequence[int], length: int, training: bool) -> None:
        cfgs = [self.store.record(j, "active") for j in job_ids]
        self.ctx.meta = build_meta(
            [r * length for r in rows], [c.slot for c in cfgs], [c.cfg.rank for c in cfgs],
            [c.cfg.scale for c in cfgs], self.device,
            dropout=[c.cfg.dropout for c in cfgs] if training else None, launch_cache=self._launch_cache,
        )
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
        job_ids, ids, mask, labels, rows = self._concat(batches)
        self.model.eval()
        try:
            per_token, hit, per_job = self.forward_tokens(job_ids, ids, mask, labels, rows, training=False)
        finally:
            self.ctx.meta = None
        seg = torch.repeat_interleave(torch.arange(len(per_job), device=per_token.device),
                                      torch.as_tensor(per_job, device=per_token.device), output_size=sum(per_job))
        both = torch.zeros(2, len(per_job), dtype=torch.float64, device=per_token.device)
        both[0].index_add_(0, seg, per_token.double())
        both[1].index_add_(0, seg, hit.double())
        sums, hits = both.tolist()  # one host sync for every adapter's sums
        return {j: EvalResult(s, n, int(h)) for j, s, n, h in zip(job_ids, sums, per_job, hits)}

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
    def applied(self, job_id: str) -> Iterator[nn.Module]:
        """The backbone with one adapter on every row, e.g. for `model.generate` (any row count)."""
        rec = self.store.record(job_id, "active")
        self.model.eval()
        self.ctx.training = False
        self.ctx.set_single((rec.slot, rec.cfg.rank, rec.cfg.scale))
        try:
            with torch.no_grad():
                yield self.model
        finally:
            self.ctx.set_single(None)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to rebuild the adapters and their optimizers (CPU tensors)."""
        return {"target_modules": list(self.target_modules), **self.store.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if list(state["target_modules"]) != list(self.target_modules):
            raise ValueError(f"state: target_modules {state['target_modules']} != trainer's {list(self.target_modules)}")
        self.store.load_state_dict(state)


def trainer_from_env(model: nn.Module, capacity: int, pad_token_id: int = 0,
                     env: Mapping[str, str] | None = None) -> MultiAdapterTrainer:
    """A trainer on the paths ALTO_LORA_IMPL (LoRA kernels) and ALTO_OPTIM_IMPL ("fused" or "loop")
    choose. `alto run` and `alto profile` both build theirs here, so a profile measures the
    paths of the run it models."""
    env = os.environ if env is None else env
    impl = env.get("ALTO_LORA_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"ALTO_LORA_IMPL: expected one of {', '.join(IMPLS)}, got {impl!r}")
    optim_impl = env.get("ALTO_OPTIM_IMPL")
    if optim_impl is not None and optim_impl not in ("fused", "loop"):
        raise ValueError(f"ALTO_OPTIM_IMPL: expected 'fused' or 'loop', got {optim_impl!r}")
    tr = MultiAdapterTrainer(model, capacity=capacity, pad_token_id=pad_token_id, impl=impl)
    if optim_impl == "loop":  # "fused" is the default where the slots allow it (one device and dtype)
        tr.store.optim.impl = "loop"
    return tr


def env_paths(env: Mapping[str, str] | None = None) -> str:
    """The paths `trainer_from_env` and the kernels take under `env`, for logs and profiles."""
    env = os.environ if env is None else env
    flags = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("ALTO_KERNELS_"))
    return (f"lora={env.get('ALTO_LORA_IMPL', 'auto')} optim={env.get('ALTO_OPTIM_IMPL', 'fused')}"
            + (f" {flags}" if flags else ""))
