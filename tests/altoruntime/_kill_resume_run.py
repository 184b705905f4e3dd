"""A tiny training run that checkpoints every 2 steps; killed with SIGKILL at `kill_at` if given.

    python _kill_resume_run.py CKPT LOG TOTAL [KILL_AT]

Resumes from CKPT when it exists. Appends one JSON line {step, losses} per step to LOG.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from tests.altoruntime._batches import make_batch  # noqa: E402

JOBS = {"a": (4, 2e-2, 0.2, 2), "b": (8, 1e-2, 0.0, 1)}  # rank, lr, dropout, batch size


def new_trainer() -> MultiAdapterTrainer:
    tr = MultiAdapterTrainer(tiny_llama(seed=0), capacity=2)
    for j, (r, lr, p, _) in JOBS.items():
        tr.admit(j, rank=r, lr=lr, dropout=p, seed=len(j) + r)
    return tr


def batch(job: str, position: int):
    return make_batch(1000 * len(job) + 17 * position + JOBS[job][0], JOBS[job][3], 9)


def run(ckpt: Path, log: Path | None, total: int, kill_at: int | None = None) -> list[dict]:
    torch.manual_seed(0)  # dropout draws from the global RNG; a resume restores it
    tr = new_trainer()
    pos = {j: 0 for j in JOBS}
    step = 0
    if ckpt.exists():
        extra = load_checkpoint(ckpt, tr)
        pos, step = extra["positions"], extra["step"]
    out = []
    while step < total:
        losses = tr.step({j: batch(j, pos[j]) for j in JOBS})
        pos = {j: p + 1 for j, p in pos.items()}
        step += 1
        out.append({"step": step, "losses": losses})
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps(out[-1]) + "\n")
        if step % 2 == 0:
            save_checkpoint(ckpt, tr, {"positions": pos, "step": step})
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return out


if __name__ == "__main__":
    a = sys.argv[1:]
    run(Path(a[0]), Path(a[1]), int(a[2]), int(a[3]) if len(a) > 3 else None)
