"""What a Ray Tune user with fractional GPUs gets: W PEFT worker processes sharing one GPU.

Every worker loads the backbone, waits at a barrier, then trains PEFT adapters (the standard
PEFT + torch AdamW loop) for its share of the (rank, batch) settings one after another for
`seconds`, timing every step. All W run at once, so the step times are contended ones. The
sweep's wall time is extrapolated from them: each config's steps x the contended step time of its
batch at the nearest measured rank, configs assigned to the W workers longest first (LPT), wall =
the busiest worker. Evaluation is not counted (as for the one-at-a-time baseline).

    python experiments/concurrent_peft.py --backbone tiny --workers 2 --seconds 5 --ranks 2 --seq-len 256
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from altosim.argparser import OneLineParser, count, finite

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_peft(model: torch.nn.Module, rank: int) -> tuple[Any, torch.optim.Optimizer]:
    """One PEFT LoRA adapter (alpha = 2r, all 7 projections) and its AdamW, as a user writes it."""
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0))
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    return peft, opt


def timed_step(model: Any, opt: torch.optim.Optimizer, batch: Any, dev: torch.device) -> float:
    """Seconds of one synchronized forward/backward/AdamW step."""
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                 labels=batch.labels.to(dev)).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _worker(i: int, cfg: dict, barrier: Any, queue: Any) -> None:
    sys.path.insert(0, cfg["root"])
    from altoruntime.data import get_dataset
    from altoruntime.run import open_backbone

    torch.manual_seed(i)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = open_backbone(cfg["backbone"], torch.bfloat16 if dev.type == "cuda" else torch.float32)
    ds = get_dataset(cfg["dataset"], n_train=cfg["n_train"], n_val=8, n_eval=1, seed=0)
    split = ds.tokenize(base.tokenizer, "train", seq_len=cfg["seq_len"])
    model = base.model.to(dev)
    pairs = cfg["pairs"][i::cfg["workers"]] or [cfg["pairs"][i % len(cfg["pairs"])]]
    times: dict[tuple[int, int], list[float]] = {}
    barrier.wait()
    deadline = time.perf_counter() + cfg["seconds"]
    k = 0
    # every setting gets at least one timed step, however slow; then round-robin until the deadline
    while time.perf_counter() < deadline or any(p not in times for p in pairs):
        r, b = pairs[k % len(pairs)]
        k += 1
        peft, opt = make_peft(model, r)
        batches = list(split.batches(b, epoch=k, seed=i))
        for s in range(cfg["steps_per_config"] + 2):
            t = timed_step(peft, opt, batches[s % len(batches)], dev)
            if s >= 2:  # the first steps of a fresh adapter allocate and warm up
                times.setdefault((r, b), []).append(t)
            if time.perf_counter() >= deadline and (r, b) in times:
                break
        model = peft.unload()
    queue.put((i, times))


def measure(backbone: str, dataset: str, n_train: int, seq_len: int, ranks: Sequence[int], batches: Sequence[int],
            workers: int, seconds: float, steps_per_config: int = 8) -> dict[tuple[int, int], float]:
    """Median contended seconds per step of each (rank, batch), with `workers` processes at once."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    pairs = [(r, b) for r in ranks for b in batches]
    cfg = dict(root=str(Path(__file__).resolve().parents[1]), backbone=backbone, dataset=dataset, n_train=n_train,
               seq_len=seq_len, pairs=pairs, workers=workers, seconds=seconds, steps_per_config=steps_per_config)
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, cfg, barrier, queue)) for i in range(workers)]
    for p in procs:
        p.start()
    merged: dict[tuple[int, int], list[float]] = {}
    for _ in procs:
        _, times = queue.get()
        for k, v in times.items():
            merged.setdefault(k, []).extend(v)
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a PEFT worker exited with code {p.exitcode}")
    missing = [p for p in pairs if p not in merged]
    if missing:
        raise RuntimeError(f"no step measured for (rank, batch) {missing}: raise --seconds")
    return {k: statistics.median(v) for k, v in merged.items()}


def extrapolate(jobs: Sequence[tuple[int, int, int]], step_s: dict[tuple[int, int], float], workers: int) -> float:
    """Wall seconds of the sweep: jobs (rank, batch, steps) on `workers` workers, longest first."""
    ranks = sorted({r for r, _ in step_s})
    loads = [0.0] * workers
    durations = []
    for r, b, steps in jobs:
        near = min(ranks, key=lambda m: (abs(m - r), m))
        durations.append(steps * step_s[(near, b)])
    for d in sorted(durations, reverse=True):
        i = min(range(workers), key=loads.__getitem__)
        loads[i] += d
    return max(loads) if loads else 0.0


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--n-train", type=count(1, 10**9), default=128)
    ap.add_argument("--seq-len", type=count(1, 1 << 20), default=256)
    ap.add_argument("--ranks", default="16,64")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--workers", type=count(1, 1024), default=15)
    ap.add_argument("--seconds", type=finite(1e-3, 1e6), default=60.0)
    args = ap.parse_args()
    ranks = ap.int_list("--ranks", args.ranks)
    batches = ap.int_list("--batches", args.batches)
    t = measure(args.backbone, args.dataset, args.n_train, args.seq_len, ranks, batches, args.workers, args.seconds)
    for (r, b), s in sorted(t.items()):
        print(f"r={r} b={b}: {1e3 * s:.1f} ms/step with {args.workers} workers sharing the device")
    jobs = [(r, b, math.ceil(3 * args.n_train / b)) for r in ranks for b in batches]
    print(f"those {len(jobs)} configs, 3 epochs: {extrapolate(jobs, t, args.workers):.0f} s")


if __name__ == "__main__":
    main()
