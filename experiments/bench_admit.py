"""Admit latency on the critical path: a burst of fresh admits, as at an early-exit run's start.

The policy admits a task's jobs in its own order (on the H200 python_docs run: batch size 8 first,
j003, j007, ...), not the task's (j000, j001, ...) in which the runner prefetched their initial
weights, so most admits drew theirs synchronously (PEFT's kaiming draws of a rank-64 SmolLM2
adapter: ~29M random numbers), then gathered the per-layer tensors into one host buffer and copied
it to the device. Side by side on one SmolLM2-135M-shaped random model (slots moving packed, as on
CUDA), this times each admit of the burst:

- before: prefetch in the task's order, PEFT-layout initial weights gathered at the admit;
- after: the runner tells the store what the admits about to run are (`TaskRunner.expect`): the
  stacks grow once for the whole burst (not 8 -> 16 -> 32 -> 64), the prefetch follows the admits'
  order, and the draws land in the packed layout (pinned memory on CUDA: one asynchronous copy,
  no host sync).

On a CPU the device copy is a memcpy and no host sync exists, so the figures are a proxy for the
host time an admit takes, not for an H200's; the background draws share this machine's cores.

    python experiments/bench_admit.py --out results/bench_admit
    python experiments/bench_admit.py --out /tmp/b --layers 1 --hidden 64 --admits 4   # smoke
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402
from altosim.report import write_csv  # noqa: E402

RANKS = (16, 32, 64)
BATCHES = (1, 2, 4, 8)


def jobs(n: int) -> list[tuple[str, int, int, int]]:
    """(job id, rank, batch size, seed) in the task's order, as the python_docs grid lays it out."""
    out = []
    for i in range(n):
        out.append((f"j{i:03d}", RANKS[(i // len(BATCHES)) % len(RANKS)], BATCHES[i % len(BATCHES)], 1000 + i))
    return out


def policy_order(task: list[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    """The order the H200 run admitted them in: largest batch first, then the task's order."""
    return sorted(task, key=lambda j: (-j[2], j[0]))


def burst(model: torch.nn.Module, n: int, mode: str) -> tuple[list[float], list[float]]:
    """Wall seconds and this thread's CPU seconds of each admit of a burst of `n` (`mode`: before /
    after). The thread's CPU time is the work the admit itself does on the critical path; waiting
    for a draw that background threads do costs none (on the H200's 16 cores they run 8 at once)."""
    tr = MultiAdapterTrainer(copy.deepcopy(model), capacity=8, park=True, cuda_graphs=False)
    store = tr.store
    store.pack = True  # the CUDA path: slots move as one packed tensor
    store.packed_inits = mode == "after"
    task = jobs(n)
    order = policy_order(task)
    store.prefetch_inits([(r, s) for _, r, _, s in task])  # what the runner does when it starts
    if mode == "after":  # what TaskRunner.expect does with the burst of Admit actions
        store.reserve([r for _, r, _, _ in order])
        store.prefetch_inits([(r, s) for _, r, _, s in order])
    wall, cpu = [], []
    for job_id, rank, _, seed in order:
        t0, c0 = time.perf_counter(), time.thread_time()
        tr.admit(job_id, rank=rank, lr=1e-4, seed=seed)
        if tr.device.type == "cuda":
            torch.cuda.synchronize(tr.device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for bench_admit.csv")
    ap.add_argument("--admits", type=count(1, 100_000), default=16)
    ap.add_argument("--layers", type=count(1, 4096), default=8, help="decoder layers (SmolLM2-135M has 30)")
    ap.add_argument("--hidden", type=count(1, 1 << 16), default=576)
    ap.add_argument("--repeats", type=count(1, 10_000), default=2)
    a = ap.parse_args(argv)  # (the bounded types refuse 0 and negatives in one line, exit 2)
    inter = a.hidden * 8 // 3 if a.hidden != 576 else 1536
    model = tiny_llama(hidden=a.hidden, layers=a.layers, heads=max(1, a.hidden // 64),
                       kv_heads=max(1, a.hidden // 192), intermediate=inter, seed=0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(dev)
    rows = []
    for rep in range(a.repeats):
        for mode in ("before", "after"):
            t, c = burst(model, a.admits, mode)
            rows.append({"mode": mode, "repeat": rep, "device": dev, "layers": a.layers, "hidden": a.hidden,
                         "admits": a.admits, "wall_s": round(sum(t), 4), "thread_cpu_s": round(sum(c), 4),
                         "median_cpu_ms": round(1e3 * statistics.median(c), 2),
                         "median_wall_ms": round(1e3 * statistics.median(t), 2), "cpus": os.cpu_count()})
            print(rows[-1])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame(rows), out / "bench_admit.csv")
    for k in ("thread_cpu_s", "wall_s"):
        best = {m: min(r[k] for r in rows if r["mode"] == m) for m in ("before", "after")}
        print(f"burst of {a.admits} admits, {k}: before {best['before']:.3f}, after {best['after']:.3f} "
              f"({1 - best['after'] / best['before']:.0%} removed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
