"""Reproducible `alto run`s: every RNG seeded from the config, and a checkpoint that knows its run.

`seed_everything` seeds Python's `random`, numpy's global RNG and torch's (CPU and every CUDA
device: dropout masks draw from it), so two runs of one config take the same decisions; each
job's adapter init and data order are already pure functions of its own seed.

`run_key` hashes what a checkpoint's state belongs to: the config (less its `out`), the
workload, every task's data (the examples themselves, not just their names), the backbone and the
kernel paths. `check_resumable` refuses a checkpoint of another run with one line saying how to
start fresh, instead of resuming it silently with the old decisions and the new settings.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from altosim.errors import InputError

KEY = "run_key"  # the entry of the checkpoint's `extra` that holds the hash


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _examples_digest(h: Any, examples: Iterable[Any]) -> None:
    for ex in examples:
        h.update(json.dumps([ex.prompt, ex.answer]).encode())


def run_key(cfg: Any, workload: Any, datasets: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """sha256 of the config (without `out`), workload, each task's examples and `settings`."""
    h = hashlib.sha256()
    h.update(json.dumps(cfg.model_dump(mode="json", exclude={"out"}), sort_keys=True).encode())
    h.update(json.dumps(workload.model_dump(mode="json"), sort_keys=True).encode())
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    for task_id in sorted(datasets):
        ds = datasets[task_id]
        h.update(task_id.encode())
        for split in ("train", "val", "eval"):
            _examples_digest(h, getattr(ds, split))
    return h.hexdigest()


def check_resumable(ckpt: Path, key: str) -> None:
    """Raise a one-line InputError unless `ckpt` (when it exists) was written by the run `key` names."""
    if not ckpt.exists():
        return
    from altoruntime.checkpoint import read_checkpoint

    fresh = f"delete {ckpt} or use another --out to start fresh"
    try:
        payload = read_checkpoint(ckpt)
    except Exception as e:  # noqa: BLE001  (torch.load of a damaged file raises many kinds)
        raise InputError(str(ckpt), "<checkpoint>", f"cannot read it ({type(e).__name__}); {fresh}") from None
    if payload.get("extra", {}).get(KEY) != key:
        raise InputError(str(ckpt), "<checkpoint>", "belongs to another run (its config, workload, data, backbone "
                         f"or sizes differ from this command's), so it cannot be resumed; {fresh}")
