"""Why a run's fused step is slower than `alto profile`'s point of the same size, and where the host time goes.

On an H200 (2026-12-03, session 5) `alto profile` timed SmolLM2-135M's fused step at 177-280 ms
for 4-16 adapters, while a run (and `diag_shrink.py`) of the same size took ~350-410 ms. The
profile's batches are equal-sized, unpadded, fixed-length and already on the GPU; a run's are
mixed per-adapter batch sizes (1/2/4/8), right-padded, a new padded length every step, on the host.
This script times the fused step on a SmolLM2-shaped random model for each of those differences
alone (2 warm-up + `--steps` timed steps, median), then records one step of the run-like and the
profile-like batches under torch.profiler: host (CPU) time per op, the GPU's busy time, and the
number of ops and kernel launches. One CSV row per (adapters, graphs, style); the profiler tables
go to <out>_ops.txt. `--graphs 0,1` times each setting with the steps eager and with captured CUDA
graphs (altoruntime/step_graphs.py; `--warmup` steps first, so each shape bucket is captured);
`--fused 0,1` each with the backbone's own RMSNorm, rope and SwiGLU and with the fused ones (fused_backbone.py).

    python experiments/device/diag_host.py --out $OUT/diag_host.csv
    python experiments/device/diag_host.py --graphs 1 --fused 0,1 --sizes 4 --out $OUT/diag_fused.csv
    python experiments/device/diag_host.py --model tiny --sizes 2 --steps 1 --out /tmp/h.csv   # CPU smoke
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.device.diag_shrink import SHAPES, AllFailed, admit_grid, checked_step, graph_report, grid_batches, sync  # noqa: E402,E501
from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.fused_backbone import fuse_backbone  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402
from tests.altoruntime._batches import make_batch  # noqa: E402

STYLES = ("profile", "on_host", "padded", "mixed", "new_length", "run")


def batches_for(style: str, n: int, step: int, dev: torch.device, vocab: int) -> dict[str, tuple]:
    """One step's batches: `profile` as `alto profile` makes them (4 x 112 tokens, no padding, on
    the device), `run` as `diag_shrink` (a run's: mixed sizes, padded, new length each step, on the
    host); the others change one thing from `profile`."""
    if style == "run":
        return grid_batches(n, step)
    sizes = (1, 2, 4, 8) if style == "mixed" else (4,)
    length = 112 + (step % 3) * 8 if style == "new_length" else 112
    out = {}
    for i in range(n):
        ids, mask, labels = make_batch(i, sizes[i % len(sizes)], length, vocab=vocab, pad_tail=style == "padded")
        if style != "on_host":
            ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
        out[f"j{i}"] = (ids, mask, labels)
    return out


def time_style(tr: MultiAdapterTrainer, style: str, n: int, steps: int, dev: torch.device, vocab: int,
               warmup: int = 2) -> dict:
    times = []
    for s in range(warmup + steps):
        b = batches_for(style, n, s, dev, vocab)
        sync(dev)
        t = time.perf_counter()
        checked_step(tr, b)
        sync(dev)
        if s >= warmup:
            times.append(1e3 * (time.perf_counter() - t))
    return {"adapters": n, "graphs": int(tr.graphs.enabled), "style": style, "ms_median": round(statistics.median(times), 2),
            "ms_min": round(min(times), 2), "steps": steps}


def profile_step(tr: MultiAdapterTrainer, style: str, n: int, dev: torch.device, vocab: int) -> tuple[dict, str]:
    """One step under torch.profiler: host time, GPU busy time, op and launch counts, top ops by host time."""
    from torch.profiler import ProfilerActivity, profile

    b = batches_for(style, n, 7, dev, vocab)
    same = []  # the same batches, unprofiled (the first may capture): the profiled step's own wall
    for _ in range(3):
        sync(dev)
        t = time.perf_counter()
        tr.step({j: b[j] for j in tr.active})
        sync(dev)
        same.append(1e3 * (time.perf_counter() - t))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sync(dev)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        tr.step({j: b[j] for j in tr.active})
        sync(dev)
    wall = 1e3 * (time.perf_counter() - t)
    ev = prof.key_averages()
    ops = sum(e.count for e in ev if e.key.startswith("aten::"))
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx",
                                                     "cudaLaunchKernelExC"))
    gpu_ms = sum(getattr(e, "self_device_time_total", 0) or 0 for e in ev) / 1e3
    row = {"adapters": n, "graphs": int(tr.graphs.enabled), "style": f"{style}/profiled", "ms_median": round(wall, 2), "ms_min": round(wall, 2),
           "steps": 1, "aten_ops": ops, "launches": launches, "gpu_busy_ms": round(gpu_ms, 2),
           "same_batch_ms": round(statistics.median(same[1:]), 2)}
    table = ev.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)
    return row, f"## {n} adapters, graphs {int(tr.graphs.enabled)}, {style} batches: wall {wall:.1f} ms, {ops} aten ops, {launches} launches, " \
                f"GPU busy {gpu_ms:.1f} ms\n{table}\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--sizes", default="4,15", help="group sizes (adapters)")
    ap.add_argument("--steps", type=count(1, 100_000), default=5, help="timed steps per style (after 2 warm-up)")
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--graphs", default="0", help="comma list of 0 (eager steps) / 1 (captured CUDA graphs)")
    ap.add_argument("--fused", default="0", help="comma list of 0 (transformers' RMSNorm, rope, SwiGLU) / 1 (the fused "
                    "backbone's ops on CUDA: altoruntime/fused_backbone.py)")
    ap.add_argument("--warmup", type=count(0, 100_000), default=2, help="untimed steps per style first (captures happen here)")
    ap.add_argument("--out", required=True, help="CSV to write (the profiler tables go beside it, _ops.txt)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    styles = ap.name_list("--styles", args.styles, STYLES)
    sizes = ap.int_list("--sizes", args.sizes)
    settings = [(bool(g), f) for g in ap.int_list("--graphs", args.graphs, choices=(0, 1))
                for f in ap.int_list("--fused", args.fused, choices=(0, 1))]
    rows, tables = [], []
    for n in sizes:
        for graphs, fused in settings:
            model = tiny_llama(**SHAPES[args.model]).to(dev, dtype)
            vocab = int(model.config.vocab_size)
            if fused:
                print(fuse_backbone(model), flush=True)
            tr = MultiAdapterTrainer(model, capacity=n, cuda_graphs=graphs)
            admit_grid(tr, n)
            try:
                for style in styles:
                    rows.append({**time_style(tr, style, n, args.steps, dev, vocab, args.warmup), "fused": fused})
                    print(rows[-1], flush=True)
            except AllFailed as e:  # reported; the next setting still runs
                print(f"{n} adapters, graphs {int(graphs)}, fused {fused}: {e}", flush=True)
                del tr, model
                continue
            for style in [s for s in ("run", "profile") if s in styles]:
                row, table = profile_step(tr, style, n, dev, vocab)
                timed = next(r for r in reversed(rows) if r["style"] == style and r["adapters"] == n)
                rows.append({**row, "fused": fused, "step_ms": timed["ms_median"],
                             "gpu_busy_pct": busy_pct(row["gpu_busy_ms"], timed["ms_median"]),
                             "busy_pct_same_batch": busy_pct(row["gpu_busy_ms"], row["same_batch_ms"])})
                tables.append(table.replace(" batches:", f" batches, fused backbone {fused}:", 1))
                print(row, flush=True)
            print(f"graphs {graphs}: {graph_report(tr)}", flush=True)
            del tr, model
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    out.with_name(out.stem + "_ops.txt").write_text("\n".join(tables))
    print("adapters graphs fused style              step ms  GPU busy ms  busy %  same-batch ms  busy %")
    for r in rows:
        if "gpu_busy_pct" in r:
            print(f"{r['adapters']:>8} {r['graphs']:>6} {r['fused']:>5} {r['style']:<18} {r['step_ms']:>8} "
                  f"{r['gpu_busy_ms']:>12} {r['gpu_busy_pct']:>7} {r['same_batch_ms']:>14} {r['busy_pct_same_batch']:>7}")
    return rows


def busy_pct(gpu_busy_ms: float, step_ms: float) -> float:
    """The GPU's busy share of a steady step: kernel time of one profiled step (the profiler slows
    the host, not the kernels) over the median wall of the same step timed without the profiler."""
    return round(100 * gpu_busy_ms / step_ms, 1) if step_ms > 0 else float("nan")


if __name__ == "__main__":
    main()
