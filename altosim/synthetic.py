"""Parametric generator of SYNTHETIC loss curves, standing in until measured traces land.

Per config (lr, rank, batch) of one (model, dataset) grid, a curve over progress t in (0, 1]
(3 epochs) with the behaviours early exit must face:
- convergence speed grows with lr and shrinks with batch (fewer updates per sample); too low an
  lr converges slowly; the final loss is lowest near lr* = 2.5e-4 * (size/1.24B)^-0.25, jittered
  per task, with per-task rank/batch preferences and per-config random offsets (so the best
  config differs between tasks);
- divergence above lr_div (lower for small batch and high rank): the loss blows up from a random
  onset, and for some configs becomes NaN (val is then capped at a large finite value, since NaN
  val means "not evaluated" in the file format);
- overfitting in late epochs (after t_o in [0.35, 0.7]): val rises while train keeps falling,
  stronger for high rank, small batch and high lr;
- noise: train (logged as a mean over the steps since the last log) noisier at small batch,
  val nearly noise-free; a task metric (higher is better) that falls as val loss rises.
Evaluations land where `TaskSpec.is_eval_step` puts them (about 100 per curve); train loss is
logged about 4x as often. Values are rounded to 5 significant digits (what the files keep).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from altosim.schemas.loss import LossCurve, LossTraceSet

GENERATOR = "altosim.synthetic v1"

# parameters (billions) of known backbones; others are parsed from a "...8B" suffix
MODEL_SIZE_B = {"Llama-3.2-1B": 1.24, "Llama-3.2-3B": 3.21, "Llama-3.1-8B": 8.03, "Qwen2.5-14B": 14.7}
# dataset -> (initial loss, floor loss) for a 1B model
DATASET_LOSS = {"gsm8k": (1.25, 0.32), "tulu3": (1.55, 0.92), "openthoughts3": (1.05, 0.52),
                "ultrafeedback": (0.693, 0.42)}


def model_size_b(model: str) -> float:
    if model in MODEL_SIZE_B:
        return MODEL_SIZE_B[model]
    m = re.search(r"(\d+(?:\.\d+)?)[bB]\b", model)
    return float(m.group(1)) if m else 1.0


def dataset_loss(dataset: str) -> tuple[float, float]:
    if dataset in DATASET_LOSS:
        return DATASET_LOSS[dataset]
    h = zlib.crc32(dataset.encode()) / 2**32  # unknown dataset: a fixed, name-derived level
    return (0.9 + 0.8 * h, 0.3 + 0.6 * h)


@dataclass(frozen=True)
class SyntheticSpec:
    """One grid to generate. `samples_per_job` sets the sample axis (3 epochs of the train set)."""

    model: str
    dataset: str
    samples_per_job: int
    lrs: tuple[float, ...] = (1e-5, 5e-5, 2e-4, 3e-4, 5e-4)
    ranks: tuple[int, ...] = (16, 32, 64)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    seed: int = 0
    evals: int = 100
    logs_per_eval: int = 4
    name: str = field(default="")

    @property
    def set_name(self) -> str:
        return self.name or f"{self.model}__{self.dataset}__synthetic"


def _round5(a: np.ndarray) -> np.ndarray:
    return np.array([float(f"{x:.5g}") if math.isfinite(x) else x for x in a.tolist()])


def _log_points(spec: SyntheticSpec, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Logged steps and which of them are evaluations (TaskSpec's eval rule, default interval)."""
    s = spec.samples_per_job
    n_steps = math.ceil(s / batch)
    eval_every = max(1, round(max(1, s // spec.evals) / batch))
    log_every = max(1, eval_every // spec.logs_per_eval)
    steps = np.union1d(np.arange(log_every, n_steps + 1, log_every), np.arange(eval_every, n_steps + 1, eval_every))
    steps = np.union1d(steps, [n_steps]).astype(np.int64)
    is_eval = (steps % eval_every == 0) | (steps == n_steps)
    return steps, is_eval


def _curve(spec: SyntheticSpec, lr: float, rank: int, batch: int, task: dict, rng: np.random.Generator) -> LossCurve:
    init, floor = task["init"], task["floor"]
    steps, is_eval = _log_points(spec, batch)
    samples = np.minimum(steps * batch, spec.samples_per_job).astype(np.float64)
    t = samples / spec.samples_per_job
    prev = np.concatenate([[0.0], t[:-1]])
    tm = 0.5 * (t + prev)  # a logged train loss is the mean over its interval
    n_in = np.maximum(1, np.diff(np.concatenate([[0], steps])))  # steps averaged per log

    x = math.log(lr / task["lr_star"])
    final = floor * (1 + 0.05 * x * x + task["batch_pen"] * math.log2(batch)
                     - task["rank_gain"] * math.log2(rank / 16) + rng.normal(0, 0.008))
    k = 14.0 * (lr / task["lr_star"]) ** 0.9 * batch ** -0.35
    def clean(tt: np.ndarray) -> np.ndarray:
        return final + (init - final) * np.exp(-k * tt)

    ovf_amp = (task["ovf"] * (rank / 16) ** 0.6 * batch ** -0.5 * min(1.5, lr / task["lr_star"]) ** 0.7
               * rng.lognormal(0, 0.3))
    t_o = task["t_o"]
    late = np.maximum(0.0, tm - t_o)
    train = clean(tm) - floor * 0.4 * ovf_amp * late  # memorization: train keeps falling
    val = clean(t) * (1 + task["gap"]) + floor * ovf_amp * np.maximum(0.0, t - t_o) ** 1.5

    lr_div = task["lr_star"] * 2.3 * batch ** 0.3 * (rank / 16) ** -0.15 * rng.lognormal(0, 0.2)
    if lr > lr_div:
        onset = rng.uniform(0.03, 0.5) * min(1.0, 2.0 * lr_div / lr)
        g = rng.uniform(6, 16)
        blow = lambda tt: init * (np.exp(g * np.maximum(0.0, tt - onset)) - 1)  # noqa: E731
        train = train + blow(tm)
        val = val + blow(t)
        if rng.random() < 0.5:  # the run hits NaN once the loss is far above its start
            train = np.where(train > 6 * init, np.nan, train)
            val = np.where(np.isnan(train) | (val > 6 * init), 10 * init, val)
        else:  # or saturates at a high plateau
            train = np.minimum(train, 3 * init)
            val = np.minimum(val, 3 * init)
    noise = 0.12 / math.sqrt(batch) / np.sqrt(n_in)
    train = train * (1 + noise * rng.standard_normal(len(t)))
    val = val * (1 + 0.003 * rng.standard_normal(len(t)))
    metric = 1.0 / (1.0 + np.exp((val - task["m50"]) / (0.12 * floor))) + 0.004 * rng.standard_normal(len(t))
    metric = np.clip(metric, 0.0, 1.0)
    val = np.where(is_eval, val, np.nan)
    metric = np.where(is_eval, metric, np.nan)
    return LossCurve(lr=float(lr), rank=int(rank), batch_size=int(batch), alpha=None, samples=samples,
                     train=_round5(train), val=_round5(val), metric=_round5(metric), steps=steps)


def generate_loss_set(spec: SyntheticSpec, created: str = "") -> LossTraceSet:
    """A seeded synthetic set (same spec + seed -> identical curves)."""
    rng = np.random.default_rng([spec.seed, zlib.crc32(spec.set_name.encode())])
    size = model_size_b(spec.model)
    init1, floor1 = dataset_loss(spec.dataset)
    floor = floor1 * (1 + 0.25 * (size ** -0.35 - 1.24 ** -0.35))
    task = {
        "init": init1 * (1 + 0.05 * (size ** -0.3 - 1.24 ** -0.3)), "floor": floor,
        "lr_star": 2.5e-4 * (size / 1.24) ** -0.25 * rng.lognormal(0, 0.35),
        "ovf": rng.uniform(0.05, 0.35), "t_o": rng.uniform(0.35, 0.7), "gap": rng.uniform(0.02, 0.05),
        "m50": floor * rng.uniform(1.25, 1.45),
        # per-task preferences: small batches usually help (paper), higher rank helps or hurts
        "batch_pen": rng.uniform(-0.008, 0.015), "rank_gain": rng.uniform(-0.008, 0.01),
    }
    curves = [_curve(spec, lr, r, b, task, rng) for lr in spec.lrs for r in spec.ranks for b in spec.batch_sizes]
    meta = {
        "generator": GENERATOR, "seed": spec.seed, "samples_per_job": spec.samples_per_job,
        "created": created, "how": "parametric synthetic curves (altosim/synthetic.py), NOT measured",
        "params": {k: float(f"{v:.5g}") for k, v in task.items()},
    }
    return LossTraceSet(name=spec.set_name, model=spec.model, dataset=spec.dataset, synthetic=True,
                        source=f"synthetic: {GENERATOR}", curves=curves, meta=meta)
