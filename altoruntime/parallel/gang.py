"""A multi-GPU task's AP ranks behind the one-trainer interface the `TaskRunner` drives.

Rank 0 holds a `GangTrainer`: every call it gets (admit, step, status, ...) is broadcast over the
task's process group (`broadcast_object_list`), carried out by every rank's `RankLocal` (the
shared `Placement` and that rank's `APTrainer`) and the answers gathered back (`all_gather_object`):
lifecycle calls touch the owner rank only, `step`/`evaluate_tokens` run on every rank (collective,
each rank its own adapters) and merge. The other ranks sit in `serve` for the length of one
exchange, until rank 0's `pause`. No other messages: the process group is the only channel.

`applied` (a task's final metric or objective scoring) needs the whole backbone on one rank: the
first call moves every adapter to rank 0 and shrinks the gang to it (`APTrainer.shrink`); the
other ranks are released (their GPUs free), and rank 0 goes on alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn

from altoruntime.parallel.ap import APTrainer
from altoruntime.parallel.placement import Placement

_MERGED = ("step", "evaluate", "evaluate_tokens", "active", "job_ids")  # every rank's part, merged
_LISTED = ("state_dict",)  # every rank's part, in rank order
_PLACED = ("admit", "resume", "suspend", "drop")  # the placement changes on every rank, the owner acts


class RankLocal:
    """One rank's side of every gang call: the placement (identical on all ranks) and its APTrainer.
    `batch_size` maps each job id to its batch size (the placement evens rows by it)."""

    def __init__(self, ap: APTrainer, batch_size: Mapping[str, int]) -> None:
        self.ap, self.batch_size = ap, dict(batch_size)
        self.place = Placement(ap.world)

    def call(self, name: str, args: tuple, kwargs: dict) -> tuple[bool, Any]:
        """(answered, value): answered is False on a rank that does not own the job asked about."""
        ap, place = self.ap, self.place
        if name in ("step", "evaluate", "evaluate_tokens"):
            mine = {j: b for j, b in args[0].items() if place.owner.get(j) == ap.rank}
            return True, getattr(ap, name)(mine)
        if name in ("active", "job_ids"):
            return True, list(getattr(ap, name))
        if name == "state_dict":
            return True, self.state_dict()
        if name == "load_state_dict":
            self.load_state_dict(args[0]["ranks"][ap.rank])
            return True, None
        if name == "release":
            return True, self.release()
        job_id = args[0]
        if name in _PLACED:
            if name == "admit":
                owner = place.place(job_id, self.batch_size[job_id])
            elif name == "drop":
                owner = place.remove(job_id)
            else:
                owner = place.set_active(job_id, name == "resume")
            if owner == ap.rank:
                getattr(ap, name)(*args, **kwargs)
            return owner == ap.rank, None
        if place.owner.get(job_id) != ap.rank:
            return False, None
        if name == "contains":
            return True, job_id in ap
        return True, getattr(ap, name)(*args, **kwargs)

    def release(self) -> bool:
        """Every adapter to rank 0, then the backbone resharded over rank 0 alone; True on rank 0."""
        keep = [0]
        for job_id, src, dst in self.place.rebalance(keep):
            self.ap.migrate(job_id, src, dst)
        kept = self.ap.shrink(keep)
        self.place.shrink(keep)
        return kept

    def state_dict(self) -> dict:
        """This rank's adapters, the placement and the RNG its dropout draws from (CPU data)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        p = self.place
        return {"ap": self.ap.state_dict(), "owner": dict(p.owner), "batch": dict(p.batch),
                "active": sorted(p.active), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.ap.load_state_dict(state["ap"])
        self.place = Placement(self.ap.world, dict(state["owner"]), dict(state["batch"]), set(state["active"]))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])


def serve(local: RankLocal) -> bool:
    """A rank other than 0: carry out rank 0's calls until its `pause` (True) or until this rank
    is released (False: it must make no further calls)."""
    while True:
        msg: list[Any] = [None]
        dist.broadcast_object_list(msg, src=0)
        name, args, kwargs = msg[0]
        if name == "pause":
            return True
        answer = _answer(local, name, args, kwargs)
        dist.all_gather_object([None] * dist.get_world_size(), answer)
        if name == "release":
            return False


def _answer(local: RankLocal, name: str, args: tuple, kwargs: dict) -> tuple[str | None, bool, Any]:
    """(error, answered, value): a rank whose call raised says so, so rank 0 raises it."""
    try:
        return (None, *local.call(name, args, kwargs))
    except (ValueError, KeyError, RuntimeError) as e:
        return (f"{type(e).__name__}: {e}", False, None)


class GangTrainer:
    """Rank 0's view of the whole gang as one `Trainer` (altoruntime/protocol.py)."""

    def __init__(self, local: RankLocal) -> None:
        if local.ap.rank != 0:
            raise ValueError(f"local: the gang's trainer lives on rank 0, this is rank {local.ap.rank}")
        self.local = local
        self.target_modules = local.ap.target_modules
        self.layer_names = local.ap.layer_names

    @property
    def world(self) -> int:
        return self.local.ap.world

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.world == 1:  # released to rank 0: no one else to ask
            answers = [_answer(self.local, name, args, kwargs)]
        else:
            dist.broadcast_object_list([(name, args, kwargs)], src=0)
            answers = [None] * self.world
            dist.all_gather_object(answers, _answer(self.local, name, args, kwargs))
        errors = [e for e, _, _ in answers if e is not None]
        if errors:
            raise ValueError(f"gang call {name}: {errors[0]}")
        if name in _LISTED:
            return [v for _, _, v in answers]
        if name in _MERGED:
            parts = [v for _, _, v in answers]
            if isinstance(parts[0], dict):
                return {k: v for p in parts for k, v in p.items()}
            order = list(self.local.place.owner)  # admission order, as one trainer lists its adapters
            return sorted((j for p in parts for j in p), key=order.index)
        owned = [v for _, ok, v in answers if ok]
        return owned[0] if owned else None

    def pause(self) -> None:
        """End of an exchange: the other ranks leave `serve`."""
        if self.world > 1:
            dist.broadcast_object_list([("pause", (), {})], src=0)

    # the Trainer protocol
    @property
    def active(self) -> list[str]:
        return self._call("active")

    @property
    def job_ids(self) -> list[str]:
        return self._call("job_ids")

    def __contains__(self, job_id: object) -> bool:
        return bool(self._call("contains", job_id))

    def admit(self, job_id: str, rank: int, **kwargs: Any) -> None:
        self._call("admit", job_id, rank=rank, **kwargs)

    def suspend(self, job_id: str, keep_optimizer: bool = True) -> None:
        self._call("suspend", job_id, keep_optimizer)

    def resume(self, job_id: str) -> None:
        self._call("resume", job_id)

    def drop(self, job_id: str) -> None:
        self._call("drop", job_id)

    def __getattr__(self, name: str) -> Any:
        """The owner-answered queries and per-adapter calls (status, failure, config, ...)."""
        if name in ("status", "failure", "config", "adapter_weights", "snapshot_best", "has_best",
                    "best_weights", "restore_best"):
            return lambda job_id, *a, **k: self._call(name, job_id, *a, **k)
        raise AttributeError(name)

    def step(self, batches: Mapping[str, Any]) -> dict[str, float]:
        return self._call("step", dict(batches))

    def evaluate(self, batches: Mapping[str, Any]) -> dict[str, float]:
        return self._call("evaluate", dict(batches))

    def evaluate_tokens(self, batches: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("evaluate_tokens", dict(batches))

    @contextmanager
    def applied(self, job_id: str, merge: bool = True) -> Iterator[nn.Module]:
        """The backbone with one adapter, on rank 0 alone: the gang is released to rank 0 first."""
        if self.world > 1:
            self._call("release")
        with self.local.ap.applied(job_id, merge) as model:
            yield model

    def state_dict(self) -> dict:
        """Every rank's adapters, placement and RNG (what `load_state_dict` gives back to each rank)."""
        return {"ranks": self._call("state_dict")}

    def load_state_dict(self, state: dict) -> None:
        if len(state["ranks"]) != self.world:
            raise ValueError(f"state: {len(state['ranks'])} ranks saved, the gang has {self.world}")
        self._call("load_state_dict", state)
