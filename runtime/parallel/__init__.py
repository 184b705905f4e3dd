"""Several ranks over one sharded frozen backbone: rank-local adapter parallelism (AP) and the
FSDP data-parallel baseline, a coordinator that places adapters on ranks, and launch helpers.

    world, rank, device = init_from_env()                      # under torchrun
    plan = assign({"a": 2, "b": 2, "c": 4}, world)             # {rank: [job ids]}
    ap = APTrainer(lambda: tiny_llama(), world, rank, device)
    for j in plan[rank]: ap.admit(j, rank=8, lr=1e-4)
    ap.step({j: batch_of(j) for j in plan[rank]})              # collective, no gradient all-reduce
"""

from runtime.parallel.ap import APTrainer
from runtime.parallel.assign import assign, rebalance, rows_per_rank
from runtime.parallel.dp import FSDPDPTrainer, split_rows
from runtime.parallel.placement import Placement, apply_action
from runtime.parallel.procs import init_from_env, spawn

__all__ = [
    "APTrainer", "FSDPDPTrainer", "Placement", "apply_action", "assign", "init_from_env", "rebalance",
    "rows_per_rank", "spawn", "split_rows",
]
