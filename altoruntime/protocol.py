"""The `Trainer` protocol: what the backend (and checkpoint, export) may call on a trainer.

Two implementations: `MultiAdapterTrainer` (one device, altoruntime/trainer.py) and
`APTrainer` (rank-local adapter parallelism over a sharded backbone, altoruntime/parallel/ap.py).
Adapters are named by job id; weights travel in PEFT layout (lora_A [r, d_in], lora_B [d_out, r]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from altoruntime.adapters.records import AdapterConfig, Status, Weights
from altoruntime.batching import Batch


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


@runtime_checkable
class Trainer(Protocol):
    """Trains many LoRA adapters over one frozen backbone; adapters come and go between steps."""

    target_modules: tuple[str, ...]

    @property
    def active(self) -> list[str]:
        """Job ids of the adapters a `step` trains (admitted or resumed, not failed)."""

    @property
    def layer_names(self) -> list[str]:
        """Module names of the adapted layers, in `adapter_weights` order."""

    @property
    def job_ids(self) -> list[str]:
        """Every adapter held (any status)."""

    def __contains__(self, job_id: object) -> bool:
        """Whether the adapter is held (any status)."""

    # lifecycle
    def admit(self, job_id: str, rank: int, alpha: float | None = None, lr: float = 1e-4,
              weight_decay: float = 0.01, dropout: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
              warmup_steps: int = 0, total_steps: int = 0, max_grad_norm: float | None = None) -> None: ...
    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None: ...
    def resume(self, job_id: str) -> None: ...
    def drop(self, job_id: str) -> None: ...
    def config(self, job_id: str) -> AdapterConfig: ...
    def status(self, job_id: str) -> Status: ...
    def failure(self, job_id: str) -> str | None: ...

    # weights and best-validation snapshots
    def adapter_weights(self, job_id: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]: ...
    def snapshot_best(self, job_id: str) -> None: ...
    def has_best(self, job_id: str) -> bool: ...
    def best_weights(self, job_id: str) -> Weights | None: ...
    def restore_best(self, job_id: str) -> None: ...

    # training and evaluation
    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        """One fused forward, backward and AdamW update; each adapter's loss (NaN: it failed)."""

    def evaluate(self, batches: Mapping[str, Batch]) -> dict[str, float]: ...
    def evaluate_tokens(self, batches: Mapping[str, Batch]) -> dict[str, EvalResult]: ...
    def applied(self, job_id: str, merge: bool = True) -> ContextManager[nn.Module]:
        """The backbone with one adapter on every row (e.g. for `model.generate`); `merge`: folded
        into the frozen weights for the duration where the trainer can (faster decoding)."""

    # checkpoints
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
