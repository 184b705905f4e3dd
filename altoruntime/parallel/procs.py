"""Joining a process group: under `torchrun` (NCCL on GPUs, gloo on CPU), or spawned locally
for tests. A script started by torchrun (or `python -m altoruntime.parallel.launch`) calls
`init_from_env()` first; it returns (world, rank, device)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist


def init_from_env(backend: str | None = None, timeout_s: float = 600.0) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes in the environment; pick NCCL when this
    process has a GPU, gloo otherwise, and bind the GPU of LOCAL_RANK."""
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ValueError(f"environment: {key} is not set (launch with torchrun or altoruntime.parallel.launch)")
    cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"), timeout=timedelta(seconds=timeout_s),
                            device_id=device if cuda else None)
    return dist.get_world_size(), dist.get_rank(), device


def _entry(rank: int, world: int, store: str, timeout_s: float, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    # A file rendezvous, not a TCP port: a free port picked by the parent is bound by rank 0 only
    # once it has imported torch (seconds later), and another process may take it meanwhile.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        fn(rank, world, *args)
        # Leave together: a rank that tears gloo down while a peer still runs (a released rank
        # of a gang) can abort in gloo's teardown at exit ("terminate called without an active
        # exception", about 1 run in 5 on 2 busy cores).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], world: int, args: tuple = (), timeout_s: float = 120.0) -> None:
    """Run `fn(rank, world, *args)` in `world` local gloo processes. A rank that raises fails
    the call; so does a run past `timeout_s` (collectives time out too), so a hang fails."""
    import tempfile
    import time

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="alto-spawn-") as folder:
        ctx = mp.start_processes(_entry, args=(world, os.path.join(folder, "store"), timeout_s, fn, args),
                                 nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"timeout_s: ranks still running after {timeout_s:.0f} s (a hang?)")
