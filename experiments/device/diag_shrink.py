"""A group that shrinks, as an early-exit run's does: per-step time and new Triton compiles.

In the python_docs early-exit run on an H200 (traces/real/runs/h200_python_docs_ee) the first
report after the first cut (45 of 60 jobs stopped) came 8.6 s later, against ~1.2 s per report
interval, and the last survivor trained alone at ~0.4 s per fused step, slower than PEFT's own
step on that machine (0.17-0.33 s). This script tells which: on a SmolLM2-135M-shaped random
model (no weights to stage) it trains a group of adapters, then drops them group by group
(default 60 -> 15 -> 4 -> 2 -> 1), and prints for each step the wall time and how many kernels
Triton compiled during it (new files in a private TRITON_CACHE_DIR), for each LoRA implementation
(`triton` and `torch_grouped`, or what --impls says), beside the frozen base alone (forward and
backward with no adapter: the floor). Each step's padded length differs, as with real data
(`--fixed-lengths`: the same batches every step). One CSV row per step; its `compiled` column names
each kernel compiled during the step (kernel, block sizes, specialized ones, warps, stages).

    python experiments/device/diag_shrink.py --out $OUT/diag_shrink.csv
    python experiments/device/diag_shrink.py --model tiny --sizes 4,2,1 --impls torch_grouped   # CPU smoke
"""

from __future__ import annotations

import cProfile
import csv
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # a private, empty kernel cache: every compile of the run writes new files there
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="alto-diag-triton-"))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from altokernels.validate import IMPLS  # noqa: E402
from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer, trainer_from_env  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402
from tests.altoruntime._batches import make_batch  # noqa: E402

SHAPES = {  # name -> tiny_llama kwargs
    "smollm2": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2),
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def compiled_files() -> int:
    """Kernel binaries in Triton's cache so far (the script's private one; 0 where Triton never
    compiled): a compile writes new ones, a cached kernel does not."""
    root = Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")
    return sum(1 for p in root.rglob("*") if p.suffix in (".cubin", ".hsaco", ".so") and p.is_file())


class CompileLog:
    """Names every kernel Triton compiles (not cache hits) while installed, through
    `triton.knobs.compilation.listener` where this Triton has it: kernel name and its constexprs /
    specialization, so a step's new compiles can be told apart (autotune configs, a new
    specialization of an int argument, a new rank block)."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._knobs = None

    def __enter__(self) -> "CompileLog":
        try:
            from triton import knobs
        except ImportError:
            return self
        if hasattr(knobs.compilation, "listener"):
            self._knobs, self._prev = knobs, knobs.compilation.listener
            knobs.compilation.listener = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._knobs is not None:
            self._knobs.compilation.listener = self._prev

    def __call__(self, *, src: object, metadata: dict, cache_hit: bool = False, **_: object) -> None:
        if cache_hit:
            return
        fn = getattr(src, "fn", None)
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", None) or metadata.get("name", "?")
        args = list(getattr(fn, "arg_names", None) or [])
        consts = getattr(src, "constexprs", None) or getattr(src, "constants", None) or {}
        attrs = getattr(src, "attrs", None) or {}
        # session 6 logged keys as argument positions ('(28,)': 1); name them, and add the
        # specialization attributes (16-divisibility of pointers and ints), which the constants miss
        keep = {_arg(k, args): v for k, v in dict(consts).items()}
        spec = {_arg(k, args): v for k, v in dict(attrs).items()} if isinstance(attrs, dict) else attrs
        self.entries.append(f"{name} {keep} spec={spec} warps={metadata.get('num_warps')} "
                            f"stages={metadata.get('num_stages')}")

    def take(self) -> str:
        out, self.entries = "; ".join(self.entries), []
        return out


def _arg(key: object, names: list[str]) -> str:
    """A Triton specialization key ((index,) or a name) as the argument's name where known."""
    if isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], int) and key[0] < len(names):
        return names[key[0]]
    return str(key)


class AllFailed(RuntimeError):
    """Every adapter of a step failed: the message says how (graphs, reasons, memory)."""


def checked_step(tr: MultiAdapterTrainer, batches: dict[str, tuple]) -> None:
    """tr.step on the active adapters' batches; raises AllFailed (with `graph_report`) where none is
    left active after it, printing the report once where some failed."""
    active = [j for j in tr.active if j in batches]
    if not active:
        raise AllFailed("no adapter is active; " + graph_report(tr))
    tr.step({j: batches[j] for j in active})
    failed = [j for j in active if tr.failure(j)]
    if failed:
        report = graph_report(tr)
        if len(failed) == len(active):
            raise AllFailed(f"all {len(active)} adapters failed in this step; {report}")
        print(f"{len(failed)} of {len(active)} adapters failed; {report}", flush=True)


def graph_report(tr: MultiAdapterTrainer) -> str:
    """The trainer's graph counters and state, its adapters' failure reasons, the first failed
    capture's trace (tail) and the device's memory: what a diagnosis of a failed step needs."""
    reasons: dict[str, int] = {}
    for j in tr.job_ids:
        if (why := tr.failure(j)) is not None:
            reasons[why] = reasons.get(why, 0) + 1
    mem = ""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        mem = (f"; memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak allocated, "
               f"{torch.cuda.memory_reserved() / 2**30:.1f} reserved, {free / 2**30:.1f} of {total / 2**30:.1f} free")
    trace = tr.graphs.failure_trace.strip().splitlines()[-12:]
    return (f"graphs {dict(tr.graphs.stats)} {tr.graphs.disabled or 'on'}; failures {reasons}{mem}"
            + ("\nfirst failed capture:\n" + "\n".join(trace) if trace else ""))


def admit_grid(tr: MultiAdapterTrainer, n: int) -> None:
    """Adapters j0..j{n-1} of ranks 16/32/64 in turn (capped by the narrowest projection)."""
    cap = min(l.max_rank for l in tr.store.layers)
    for i in range(n):
        tr.admit(f"j{i}", rank=min(cap, (16, 32, 64)[i % 3]), lr=2e-4, seed=i)


def grid_batches(n: int, step: int = 0) -> dict[str, tuple]:
    """Per-adapter batch 1/2/4/8 of ~100-token sequences, as in the e2e grid; the padded length
    changes with `step` as real data's does (each step a new token count)."""
    return {f"j{i}": make_batch(i + 1000 * step, (1, 2, 4, 8)[i % 4], 96 + ((i + step) % 5) * 8 + step % 3)
            for i in range(n)}


def shrink_rows(model_name: str, impl: str, sizes: list[int], steps: int, dev: torch.device,
                vary: bool, profile_first: Path | None = None) -> list[dict]:
    """The group's steps as it shrinks, on the paths `alto run` takes (`trainer_from_env`: fused
    backbone, compile ahead and CUDA graphs where the ALTO_* variables leave them on). profile_first:
    write a cProfile table of the first step there (a cold process's first step: compiles, loads)."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = tiny_llama(**SHAPES[model_name]).to(dev, dtype)
    tr = trainer_from_env(model, capacity=max(sizes), env={**os.environ, "ALTO_LORA_IMPL": impl})
    admit_grid(tr, max(sizes))
    rows = []
    log = CompileLog()
    for n in sizes:
        for j in [j for j in tr.job_ids if int(j[1:]) >= n]:
            tr.drop(j)  # the group shrinks as an early-exit cut stops jobs
        for s in range(steps):
            batches = grid_batches(max(sizes), s if vary else 0)
            before = compiled_files()
            sync(dev)
            prof = cProfile.Profile() if profile_first is not None and not rows else None
            with log:
                t = time.perf_counter()
                if prof is not None:
                    prof.enable()
                try:
                    checked_step(tr, batches)
                except AllFailed as e:
                    print(f"{impl} at {n} adapters, step {s}: {e}", flush=True)
                    return rows
                sync(dev)
                ms = 1e3 * (time.perf_counter() - t)
            if prof is not None:
                prof.disable()
                write_profile(prof, profile_first, f"{impl}, {n} adapters, first step: {ms:.0f} ms")
            rows.append({"impl": impl, "adapters": n, "step": s, "ms": round(ms, 2),
                         "new_compiles": compiled_files() - before,
                         "rows": sum(int(batches[j][0].shape[0]) for j in tr.active),
                         "tokens": sum(int(batches[j][0].numel()) for j in tr.active), "compiled": log.take(),
                         "graph": tr.graphs.last if tr.graphs.enabled else "off"})
            print(f"{impl:14s} adapters {n:3d} step {s}: {ms:8.1f} ms, {rows[-1]['new_compiles']} new compiles, "
                  f"{rows[-1]['graph']}", flush=True)
    print(f"{impl}: {graph_report(tr)}", flush=True)
    return rows


def write_profile(prof: cProfile.Profile, path: Path, title: str) -> None:
    """The profile's top functions by cumulative and by own time, as text."""
    buf = io.StringIO()
    for key in ("cumulative", "tottime"):
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n{buf.getvalue()}")


def base_rows(model_name: str, sizes: list[int], steps: int, dev: torch.device) -> list[dict]:
    """The frozen base alone (no LoRA): forward and backward to the input embeddings."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = tiny_llama(**SHAPES[model_name]).to(dev, dtype).train()
    for p in model.parameters():
        p.requires_grad_(False)
    batches = grid_batches(max(sizes))
    rows = []
    for n in sizes:
        ids = torch.nn.utils.rnn.pad_sequence([r for j in list(batches)[:n] for r in batches[j][0]], batch_first=True)
        mask = (ids != 0).long()
        labels = ids.masked_fill(mask == 0, -100)
        ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
        for s in range(steps):
            sync(dev)
            t = time.perf_counter()
            emb = model.get_input_embeddings()(ids).detach().requires_grad_()
            model(inputs_embeds=emb, attention_mask=mask, labels=labels).loss.backward()
            sync(dev)
            ms = 1e3 * (time.perf_counter() - t)
            rows.append({"impl": "base_only", "adapters": n, "step": s, "ms": round(ms, 2), "new_compiles": 0,
                         "rows": int(ids.shape[0]), "tokens": int(ids.numel()), "compiled": "", "graph": "off"})
            print(f"{'base_only':14s} adapters {n:3d} step {s}: {ms:8.1f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--sizes", default="60,15,4,2,1", help="group sizes, largest first")
    ap.add_argument("--steps", type=count(1, 100_000), default=3, help="steps per group size")
    ap.add_argument("--impls", default="auto,torch_grouped", help="LoRA implementations (auto: Triton on CUDA)")
    ap.add_argument("--fixed-lengths", action="store_true",
                    help="the same batches every step (default: the padded length changes per step, as real data's)")
    ap.add_argument("--out", help="CSV to write")
    ap.add_argument("--profile-first", type=Path, help="write a cProfile table of the first LoRA step here")
    args = ap.parse_args(argv)
    sizes = ap.int_list("--sizes", args.sizes)
    if sizes != sorted(sizes, reverse=True):
        ap.error(f"--sizes: need the largest first, got {args.sizes!r}")
    ap.name_list("--impls", args.impls, IMPLS)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("ALTO_"))
    print(f"device {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu'}; {env or 'default paths'}",
          flush=True)
    rows = base_rows(args.model, sizes, args.steps, dev)
    for i, impl in enumerate(args.impls.split(",")):  # the first implementation's first step is profiled
        rows += shrink_rows(args.model, impl, sizes, args.steps, dev, vary=not args.fixed_lengths,
                            profile_first=args.profile_first if i == 0 else None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
