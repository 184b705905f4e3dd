"""Fused-step timing on a SmolLM2-135M-shaped random model (no weights to stage): the first step
(Triton compile + autotune) and the next ones, each printed as it ends, so a time limit still
shows where the time went. The kernel/optimizer switches come from the environment
(ALTO_KERNELS_AUTOTUNE, ALTO_KERNELS_FAST_LAUNCH, ALTO_LORA_IMPL, ALTO_OPTIM_IMPL).

    python experiments/device/diag_step.py [adapters] [steps]
"""

from __future__ import annotations

import os
import sys
import time

import torch

from diag_shrink import SHAPES, admit_grid, grid_batches, sync  # the same model, adapters and batches
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import trainer_from_env

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main(n: int = 60, steps: int = 6) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("ALTO_")}
    dtype = torch.bfloat16 if DEV.type == "cuda" else torch.float32
    model = tiny_llama(**SHAPES["smollm2"]).to(DEV, dtype)
    tr = trainer_from_env(model, capacity=64)  # ALTO_LORA_IMPL / ALTO_OPTIM_IMPL, as `alto run` reads them
    admit_grid(tr, n)
    batches = grid_batches(n)  # per-adapter batch 1/2/4/8 of ~100-token sequences, like the e2e grid
    for s in range(steps):
        sync(DEV)
        t = time.perf_counter()
        tr.step(batches)
        sync(DEV)
        print(f"{env} step {s}: {1e3 * (time.perf_counter() - t):.0f} ms", flush=True)
    for rep in range(2):  # the batched run snapshots every job whose val loss improves
        sync(DEV)
        t = time.perf_counter()
        for i in range(n):
            tr.snapshot_best(f"j{i}")
        sync(DEV)
        print(f"{env} snapshot_best x{n} ({rep}): {1e3 * (time.perf_counter() - t):.0f} ms", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
