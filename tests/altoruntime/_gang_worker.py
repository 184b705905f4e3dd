"""Rank bodies for the gang test (spawned over gloo): rank 0 drives a `GangTrainer`, rank 1 serves."""

from __future__ import annotations

from pathlib import Path

import torch

from altoruntime.backbone import tiny_llama
from altoruntime.parallel import APTrainer
from altoruntime.parallel.gang import GangTrainer, RankLocal, serve
from tests.altoruntime._batches import make_batch

# (job, rank, lr, batch size, dropout, seed)
JOBS = [("a", 4, 5e-3, 2, 0.1, 1), ("b", 8, 1e-2, 1, 0.0, 2), ("c", 2, 2e-3, 2, 0.2, 3)]


def batches(step: int) -> dict:
    return {j: make_batch(100 * step + i, b, 10) for i, (j, _, _, b, _, _) in enumerate(JOBS)}


def gang_run(rank: int, world: int, out_dir: str) -> None:
    """Rank 0: admit, 2 steps, save the gang's state, a 3rd step, restore the state, redo the 3rd
    step (the same losses: adapters, optimizers and every rank's RNG came back), a stop, then the
    applied model (which releases rank 1). Rank 1 serves until released."""
    torch.manual_seed(rank)
    ap = APTrainer(lambda: tiny_llama(seed=0), world, rank, capacity=2)
    local = RankLocal(ap, {j: b for j, _, _, b, _, _ in JOBS})
    if rank != 0:
        while serve(local):
            pass
        return
    t = GangTrainer(local)
    for j, r, lr, _, p, seed in JOBS:
        t.admit(j, rank=r, lr=lr, dropout=p, seed=seed)
    owners = dict(local.place.owner)
    losses = [t.step(batches(s)) for s in range(2)]
    state = t.state_dict()
    third = t.step(batches(2))
    t.load_state_dict(state)
    again = t.step(batches(2))
    active = t.active
    t.suspend("b", keep_optimizer=False)
    after = (t.active, t.status("b"), "b" in t, "zz" in t)
    ids, mask, labels = make_batch(990, 2, 9)
    t.resume("b")
    with t.applied("b") as model:
        with torch.no_grad():
            metric = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    weights = {j: t.adapter_weights(j) for j in ("a", "b", "c")}
    torch.save({"owners": owners, "losses": losses, "third": third, "again": again, "active": active,
                "after": after, "metric": metric, "world": t.world, "weights": weights},
               Path(out_dir) / "gang.pt")
