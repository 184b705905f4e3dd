"""Several ranks over one sharded frozen backbone: rank-local adapter parallelism (AP), the FSDP
data-parallel baseline, the coordinator that places adapters on ranks, and launch helpers.

The frozen backbone is sharded with FSDP2 `fully_shard` (one unit per decoder layer, adapters
kept out as `ignored_params`); this runs as is on CPU with gloo and on GPUs with NCCL.

    # torchrun --standalone --nproc-per-node P script.py   (or python -m altoruntime.parallel.launch --nproc P)
    world, rank, device = init_from_env()
    ap = APTrainer(lambda: tiny_llama(), world, rank, device)
    place = Placement(world)                                   # identical on every rank
    for a in [Admit("t", j) for j in specs]:
        apply_action(ap, place, a, specs)                      # only the owner admits
    ap.step({j: next(data[j]) for j in ap.active})             # collective; no gradient all-reduce
    for m in place.rebalance(): ap.migrate(*m)                 # after exits: even the rows again
    if not ap.shrink([r for r, js in place.plan(False).items() if js]): ...  # released: exit
"""

from altoruntime.parallel.ap import APTrainer
from altoruntime.parallel.assign import assign, rebalance, rows_per_rank
from altoruntime.parallel.dp import FSDPDPTrainer, split_rows
from altoruntime.parallel.placement import Placement, apply_action
from altoruntime.parallel.procs import init_from_env, spawn

__all__ = [
    "APTrainer", "FSDPDPTrainer", "Placement", "apply_action", "assign", "init_from_env", "rebalance",
    "rows_per_rank", "spawn", "split_rows",
]
