"""Atomic trainer checkpoints: adapters, optimizer states, RNG states and caller state.

The caller's `extra` (data-order positions, early-exit state, step counters, ...) rides along
as plain picklable data so one file restores everything a resumed run needs to take the same
decisions. The file is written beside its final name and renamed into place (os.replace is
atomic on POSIX), so a run killed mid-write keeps its previous checkpoint; Ctrl-C and SIGTERM wait
until the file is in place.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from altoruntime.protocol import Trainer
from altosim.interrupts import deferred_interrupts

FORMAT = 1


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


Trainers = Trainer | Mapping[str, Trainer]


def save_checkpoint(path: str | Path, trainers: Trainers, extra: dict[str, Any] | None = None) -> Path:
    """Write the trainers' full state (one, or several by name) plus `extra` to `path`
    atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(trainers, Mapping):
        states: Any = trainers.state_dict()
    else:
        states = {k: t.state_dict() for k, t in trainers.items()}
    payload = {"format": FORMAT, "trainer": states, "rng": _rng_state(), "extra": extra or {}}
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with deferred_interrupts():  # torch.save interrupted mid-record raises a RuntimeError on cleanup
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's payload, unapplied (read `extra` first to rebuild the trainers)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: checkpoint {str(path)!r} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"path: {str(path)!r} is not a runtime checkpoint (format {FORMAT})")
    return payload


def apply_checkpoint(payload: dict[str, Any], trainers: Trainers) -> dict[str, Any]:
    """Restore trainers (built on the same backbone and targets) and the RNGs; return `extra`."""
    if not isinstance(trainers, Mapping):
        trainers.load_state_dict(payload["trainer"])
    else:
        missing = sorted(set(payload["trainer"]) - set(trainers))
        if missing:
            raise ValueError(f"trainers: checkpoint has trainer {missing[0]!r} that was not rebuilt")
        for k, state in payload["trainer"].items():
            trainers[k].load_state_dict(state)
    _set_rng_state(payload["rng"])
    return payload["extra"]


def load_checkpoint(path: str | Path, trainers: Trainers) -> dict[str, Any]:
    """`read_checkpoint` + `apply_checkpoint`."""
    return apply_checkpoint(read_checkpoint(path), trainers)
