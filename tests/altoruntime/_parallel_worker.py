"""Rank bodies for the gloo tests (spawned; no peft import so ranks start fast). Each writes its
adapters' weights and losses to `out_dir/rank{r}.pt` for the parent to compare."""

from __future__ import annotations

from pathlib import Path

import torch

from altoruntime.backbone import tiny_llama
from altoruntime.parallel import APTrainer, FSDPDPTrainer, assign
from tests.altoruntime._batches import make_batch

# (job, rank, alpha, lr, weight decay, batch size, seq len, seed)
JOBS = [
    ("a", 4, 8.0, 5e-3, 0.01, 2, 12, 1),
    ("b", 8, 16.0, 1e-2, 0.0, 2, 9, 2),
    ("c", 2, 2.0, 2e-3, 0.1, 1, 12, 3),
    ("d", 4, 4.0, 4e-3, 0.0, 1, 10, 4),
]
STEPS = 2
MOVED = "c"  # the adapter rank 0 hands to rank 1 in `ap_run`


def batches(step: int) -> dict:
    return {j: make_batch(100 * step + i, b, L) for i, (j, _, _, _, _, b, L, _) in enumerate(JOBS)}


def plan(world: int) -> dict[int, list[str]]:
    return assign({j: b for j, _, _, _, _, b, _, _ in JOBS}, world)


def _admit(t, jobs) -> None:
    for j, r, a, lr, wd, _, _, seed in JOBS:
        if j in jobs:
            t.admit(j, rank=r, alpha=a, lr=lr, weight_decay=wd, seed=seed)


def _dump(t, out_dir: str, rank: int, losses: list, extra: dict | None = None) -> None:
    weights = {j: t.adapter_weights(j) for j in t.job_ids}
    torch.save({"weights": weights, "losses": losses, **(extra or {})}, Path(out_dir) / f"rank{rank}.pt")


def ap_run(rank: int, world: int, out_dir: str) -> None:
    """AP over `plan(world)` for STEPS steps (weights saved), then exits, moves and a release:
    step STEPS: rank 1 has dropped all its adapters (it runs dummy rows only);
    step STEPS + 1: rank 0 has moved adapter MOVED to rank 1 (`migrate`);
    step STEPS + 2: rank 0 has moved its other adapters to rank 1 and been released
    (`shrink([1])`): rank 1 trains every survivor alone, its backbone resharded over itself."""
    mine = plan(world)[rank]
    t = APTrainer(lambda: tiny_llama(seed=0), world, rank, capacity=2)
    _admit(t, mine)
    losses, early, dummy, history, rejected = [], {}, [], {}, None
    for s in range(STEPS + 3):
        if s == STEPS:
            early = {j: t.adapter_weights(j) for j in t.active}
            shard_before = sharding(t)
            ev = t.evaluate({j: batches(99)[j] for j in t.active})
            ev_tokens = t.evaluate_tokens({j: batches(99)[j] for j in t.active})
            if rank == 1:
                for j in list(t.active):
                    t.drop(j)
        if s == STEPS + 1:
            try:  # a bad batch on one rank makes every rank raise (nobody left in a collective)
                t.step({"nope": batches(0)["a"]} if rank == 0 else {})
            except ValueError as e:
                rejected = str(e)
            t.migrate(MOVED, 0, 1)
        if s == STEPS + 2:
            history = t.gather_history()
            for j in [j for j in plan(world)[0] if j != MOVED]:
                t.migrate(j, 0, 1)
            if not t.shrink([1]):
                break
        b = batches(s)
        losses.append(t.step({j: b[j] for j in t.active}))
        dummy.append(t.last_dummy_rows)
    if not t.released:
        history = t.gather_history()
    out = {"early": early, "eval": ev, "eval_tokens": ev_tokens, "history": history, "dummy": dummy,
           "released": t.released, "world": t.world,
           "sharding_before": shard_before, "rejected": rejected}
    if t.released:
        torch.save({"weights": {}, "losses": losses, **out}, Path(out_dir) / f"rank{rank}.pt")
    else:
        _dump(t, out_dir, rank, losses, {**out, "sharding": sharding(t)})


def sharding(t) -> dict[str, bool]:
    """Whether every frozen weight is a DTensor sharded over the ranks, and no adapter stack is."""
    from torch.distributed.tensor import DTensor

    from altoruntime.parallel.shard import adapter_params

    model = t.trainer.model
    ignored = adapter_params(model)
    frozen = [p for p in model.parameters() if p not in ignored]
    return {
        "frozen_sharded": bool(frozen) and all(isinstance(p, DTensor) and p.to_local().numel() * t.world == p.numel() for p in frozen),
        "adapters_local": bool(ignored) and not any(isinstance(p, DTensor) for p in ignored),
    }


def dp_run(rank: int, world: int, out_dir: str) -> None:
    """FSDP data parallel: every adapter on every rank, full batches split over ranks."""
    t = FSDPDPTrainer(lambda: tiny_llama(seed=0), world, rank, capacity=2)
    _admit(t, [j for j, *_ in JOBS])
    losses, pads = [], []
    for s in range(STEPS):
        losses.append(t.step(batches(s)))
        pads.append(t.last_padded_rows)
    _dump(t, out_dir, rank, losses, {"padded": pads, "eval": t.evaluate(batches(99))})
