"""AP (rank-local adapter parallelism) vs FSDP data parallelism vs one GPU, side by side.

8 adapters (LoRA rank 16 on all 7 Llama projections) over one frozen backbone sharded on P ranks,
256-token sequences, per-adapter batch 1/2/4/8. `ap`: each rank trains its own whole adapters (no
gradient all-reduce); `fsdp`: every adapter on every rank, its batch split over P (dummy rows
where it does not split: `padded` counts them) and adapter gradients all-reduced; `single`: the
same 8 adapters fused on rank 0 alone, backbone unsharded. step_ms is the slowest rank's mean
step; tokens_per_s counts real tokens only; speedup_vs_fsdp = fsdp step_ms / step_ms at the same
batch. predicted_step_ms stays empty unless a cost model fills it (issue 12's simulator part).

    torchrun --standalone --nproc-per-node 4 experiments/bench_parallel.py --backbone llama-3.1-70b:layers=2
    python -m altoruntime.parallel.launch --nproc 2 experiments/bench_parallel.py --backbone tiny --steps 2 --seq 32
    python experiments/bench_parallel.py --backbone smollm2       # one process: the single-GPU rows

Writes results/parallel_<gpu>x<P>.csv (atomically, on rank 0).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from altoruntime.parallel import APTrainer, FSDPDPTrainer, assign, init_from_env  # noqa: E402
from altoruntime.parallel.shapes import backbone_factory, parse_spec  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402

COLUMNS = ["device", "gpus", "per_adapter_batch", "impl", "backbone", "layers", "adapters", "seq_len",
           "padded", "step_ms", "tokens_per_s", "speedup_vs_fsdp", "predicted_step_ms", "steps"]


def _batch(seed: int, rows: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, seq), generator=g)
    return ids, torch.ones_like(ids), ids.clone()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, device: torch.device, steps: int, warmup: int, world: int) -> float:
    """Mean ms of `step()` after `warmup` calls; the slowest rank's when distributed."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    ms = torch.tensor([(time.perf_counter() - t0) * 1e3 / steps], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(ms, op=dist.ReduceOp.MAX)
    return float(ms)


def _admit(t, jobs: list[str], rank: int) -> None:
    for j in jobs:
        t.admit(j, rank=rank, lr=1e-4, seed=int(j.removeprefix("j")))


def _free(device: torch.device) -> None:
    gc.collect()  # FSDP modules hold reference cycles: free one trainer before the next
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench(args: argparse.Namespace, world: int, rank: int, device: torch.device) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    factory = backbone_factory(args.backbone, device, dtype, args.gguf)
    jobs = [f"j{i}" for i in range(args.adapters)]
    batches = list(args.batches)
    rows_out: list[dict] = []
    probe = factory()
    vocab, layers = int(probe.config.vocab_size), int(probe.config.num_hidden_layers)
    del probe
    _free(device)
    data = {b: {j: _batch(1000 * b + i, b, args.seq, vocab) for i, j in enumerate(jobs)} for b in batches}

    def row(impl: str, b: int, ms: float, padded: int) -> dict:
        if rank == 0:
            print(f"{impl:6s} P={world} batch={b}: {ms:.2f} ms/step, {padded} dummy rows", flush=True)
        return dict(impl=impl, per_adapter_batch=b, step_ms=ms, padded=padded,
                    tokens_per_s=args.adapters * b * args.seq / (ms / 1e3))

    impls = args.impls.split(",")
    if world > 1 and "ap" in impls:
        t = APTrainer(factory, world, rank, device, capacity=args.adapters)
        for b in batches:
            mine = assign({j: b for j in jobs}, world)[rank]
            for j in t.job_ids:
                t.drop(j)
            _admit(t, mine, args.lora_rank)
            ms = _time_steps(lambda: t.step({j: data[b][j] for j in mine}), device, args.steps, args.warmup, world)
            dummy = torch.tensor([t.last_dummy_rows], device=device)
            dist.all_reduce(dummy)
            rows_out.append(row("ap", b, ms, int(dummy)))
        del t
        _free(device)
    if world > 1 and "fsdp" in impls:
        t = FSDPDPTrainer(factory, world, rank, device, capacity=args.adapters)
        _admit(t, jobs, args.lora_rank)
        for b in batches:
            ms = _time_steps(lambda: t.step(data[b]), device, args.steps, args.warmup, world)
            rows_out.append(row("fsdp", b, ms, t.last_padded_rows))
        del t
        _free(device)
    if "single" in impls:
        if rank == 0:
            t = MultiAdapterTrainer(factory(), capacity=args.adapters)
            _admit(t, jobs, args.lora_rank)
            for b in batches:
                ms = _time_steps(lambda: t.step(data[b]), device, args.steps, args.warmup, 1)
                rows_out.append(row("single", b, ms, 0))
            del t
        _free(device)
        if world > 1:
            dist.barrier()
    for r in rows_out:
        r.update(backbone=args.backbone, layers=layers, adapters=args.adapters, seq_len=args.seq, steps=args.steps)
    return rows_out


def finish(rows: list[dict], world: int, device: torch.device, out: Path) -> Path:
    import pandas as pd

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tag = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    df = pd.DataFrame(rows)
    fsdp = df[df.impl == "fsdp"].set_index("per_adapter_batch")["step_ms"]
    df["speedup_vs_fsdp"] = [fsdp.get(b, math.nan) / ms for b, ms in zip(df.per_adapter_batch, df.step_ms)]
    df["predicted_step_ms"] = math.nan
    df["device"], df["gpus"] = name, world
    df = df[COLUMNS].sort_values(["per_adapter_batch", "impl"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"parallel_{tag}x{world}.csv"
    tmp = path.with_suffix(".tmp")
    df.round(4).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tiny", help="tiny | smollm2 | llama-3.1-70b:layers=2 (see altoruntime.parallel.shapes)")
    ap.add_argument("--gguf", default=None, help="path of the SmolLM2 .gguf (default: the installed package's)")
    ap.add_argument("--adapters", type=count(1, 4096), default=8)
    ap.add_argument("--lora-rank", type=count(1, 4096), default=16)
    ap.add_argument("--seq", type=count(1, 1 << 20), default=256, help="tokens per sequence")
    ap.add_argument("--batches", default="1,2,4,8", help="per-adapter batch sizes")
    ap.add_argument("--impls", default="ap,fsdp,single", help="comma-separated subset of ap,fsdp,single")
    ap.add_argument("--steps", type=count(1, 100_000), default=10)
    ap.add_argument("--warmup", type=count(0, 100_000), default=3)
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    args.batches = ap.int_list("--batches", args.batches)  # checked before any rank starts
    try:
        name = parse_spec(args.backbone)[0]
    except ValueError as e:
        ap.error(str(e))
    ap.name_list("--impls", args.impls, ("ap", "fsdp", "single"))
    if args.gguf is not None and name != "smollm2":
        ap.error(f"--gguf: read only with --backbone smollm2, not {args.backbone!r}")
    if args.gguf is not None and not Path(args.gguf).expanduser().is_file():
        ap.error(f"--gguf: no such file: {args.gguf!r}")
    if "RANK" in os.environ:
        world, rank, device = init_from_env()
    else:
        world, rank = 1, 0
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        rows = bench(args, world, rank, device)
        if rank == 0:
            print(f"wrote {finish(rows, world, device, Path(args.out))}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
