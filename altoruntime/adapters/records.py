"""What the store keeps per adapter: its hyperparameters and where its state lives."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from altoruntime.adapters.lr_schedule import LR_SCHEDULES, lr_factor

Status = Literal["active", "suspended", "failed"]
Weights = list[tuple[torch.Tensor, torch.Tensor]]  # PEFT layout per layer: lora_A [r, d_in], lora_B [d_out, r]


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
    lr_schedule: str = "constant"  # constant | linear | cosine (altoruntime/adapters/lr_schedule.py)
    warmup_steps: int = 0
    total_steps: int = 0  # the job's steps, for the linear and cosine decay
    max_grad_norm: float | None = None  # clip this adapter's gradient norm (None: off)

    def lr_at(self, step: int) -> float:
        """The lr of the update after `step` earlier ones."""
        if self.lr_schedule == "constant" and self.warmup_steps == 0:
            return self.lr
        return self.lr * lr_factor(self.lr_schedule, step, self.warmup_steps, self.total_steps)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def checked(cls, job_id: str, rank: int, alpha: float | None, lr: float, weight_decay: float,
                dropout: float, seed: int, lr_schedule: str = "constant", warmup_steps: int = 0,
                total_steps: int = 0, max_grad_norm: float | None = None) -> AdapterConfig:
        """A config from `admit`'s arguments; ValueError naming the first bad one."""
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: must be a positive int, got {rank!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: must be a positive number, got {lr}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay: must be >= 0, got {weight_decay}")
        alpha = 2.0 * rank if alpha is None else float(alpha)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha: must be a positive number, got {alpha}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be an int >= 0, got {warmup_steps!r}")
        if not isinstance(total_steps, int) or total_steps < 0:
            raise ValueError(f"total_steps: must be an int >= 0, got {total_steps!r}")
        if lr_schedule != "constant" and total_steps < 1:
            raise ValueError(f"total_steps: a {lr_schedule} schedule needs the job's steps (>= 1), got {total_steps}")
        if max_grad_norm is not None and not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm: must be a positive number or None, got {max_grad_norm}")
        return cls(job_id, rank, alpha, lr, weight_decay, dropout, seed, lr_schedule=lr_schedule,
                   warmup_steps=warmup_steps, total_steps=total_steps, max_grad_norm=max_grad_norm)


@dataclass
class AdapterRecord:
    """One adapter in the store: its slot while it trains (None when suspended), its host copy
    or its parked device copy while suspended, its best-validation snapshot and why it failed, if it did."""

    cfg: AdapterConfig
    slot: int | None
    status: Status = "active"
    offloaded: dict | None = None  # suspended: weights + optimizer slot state on CPU
    # best-val weights: packed on the adapter's device by `snapshot_best` (one on-device copy, no
    # host sync), or PEFT-layout CPU pairs (from a checkpoint); read them with `best_weights`
    best: torch.Tensor | Weights | None = None
    failure: str | None = None
    # parked (suspended, kept on the device outside the stacks): {"weights": `SlotPacker.pack_slot`'s
    # flat tensor, "optim": `SlotAdamW.slot_state(host=False)`}; never part of `to_state`
    parked: dict | None = None

    def to_state(self, best: Weights | None) -> dict:
        """Plain data (checkpoints, moves between ranks), with `best` as CPU PEFT-layout pairs."""
        return {"cfg": asdict(self.cfg), "slot": self.slot, "status": self.status, "offloaded": self.offloaded,
                "best": best, "failure": self.failure}

    @classmethod
    def from_state(cls, state: dict) -> AdapterRecord:
        cfg = dict(state["cfg"])
        cfg["betas"] = tuple(cfg["betas"])
        return cls(AdapterConfig(**cfg), state["slot"], state["status"], state["offloaded"], state["best"],
                   state["failure"])
