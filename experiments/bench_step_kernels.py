"""Kernels one fused training step launches on the GPU path, counted on a CPU, by where they come from.

Under CUDA graphs a SmolLM2-sized step is launch-bound: a replay takes about as long as its kernels'
count times a few microseconds (H200, session 11: 2 adapters ~15 ms), so the count is what to cut.
This builds the GPU configuration on a CPU: SmolLM2's 30 decoder layers (narrow widths: the count does
not depend on them), alto's Triton LoRA kernels (run by Triton's interpreter), alto's RMSNorm and
rope and Liger's SwiGLU swapped in as on CUDA (`fuse_backbone`; stand-ins here that count one launch
forward and one backward, as those kernels do, since Liger's do not run in the interpreter), SDPA attention, the
fused AdamW; then counts, for one warm step, each Triton launch and each tensor op that launches a
kernel (views and allocations excluded), by source. Two interpreter-only ops are left out: the
split-K zeroing (the GPU's default configs do not split K) and the interpreter's own copies.
`--group 0,1` counts the step with the per-projection LoRA calls and with q/k/v and gate/up grouped
(ALTO_GROUP_PROJECTIONS, `lora_layer.lora_group`), side by side (default: as ALTO_GROUP_PROJECTIONS says).

    python experiments/bench_step_kernels.py --out results/step_kernels_cpu
    python experiments/bench_step_kernels.py --adapters 2 --group 0,1 --out results/step_kernels_group_cpu
"""

from __future__ import annotations

import collections
import os
import sys
import traceback
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
os.environ.setdefault("ALTO_KERNELS_AUTOTUNE", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.batching import Batch  # noqa: E402
from altoruntime.fused_backbone import fuse_backbone  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402
from altosim.report import write_csv  # noqa: E402

# ops that launch no kernel on a GPU (views, metadata, allocations, host reads)
NO_KERNEL = {"view", "_unsafe_view", "transpose", "t", "unsqueeze", "squeeze", "expand", "slice", "select", "detach",
             "as_strided", "alias", "permute", "split", "split_with_sizes", "unbind", "narrow", "reshape",
             "_reshape_alias", "lift_fresh", "empty", "empty_strided", "new_empty", "new_empty_strided", "set_",
             "_local_scalar_dense", "is_same_size", "unflatten", "flatten", "view_as", "diagonal", "chunk",
             "_has_compatible_shallow_copy_type", "is_nonzero", "equal", "item"}
RANKS = (16, 32, 64)  # the python_docs grid's ranks


class Counter(TorchDispatchMode):
    """Counts kernel-launching tensor ops and Triton launches by source (the deepest frame of alto,
    transformers or torch's optimizer on the stack)."""

    def __init__(self) -> None:
        super().__init__()
        self.by = collections.Counter()
        self.depth = 0  # > 0 inside a Triton launch or a stand-in: their own ops are not kernels

    def launch(self, source: str) -> None:
        self.by[source] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = func.overloadpacket.__name__
        if not self.depth and name not in NO_KERNEL:
            self.by[_source(name)] += 1
        return func(*args, **(kwargs or {}))


def _source(op: str) -> str:
    frames = [f for f in traceback.extract_stack()[:-3] if "/alto" in f.filename or "transformers" in f.filename]
    where = frames[-1].filename if frames else ""
    if op == "zero_" and where.endswith("triton_kernels.py"):
        return "interpreter-only (split-K zeroing)"
    for key, name in (("altokernels/", f"LoRA torch op ({op})"), ("optim.py", "optimizer"),
                      ("adapters/", "optimizer"), ("step_inputs.py", "step inputs"), ("batching.py", "step inputs"),
                      ("sdpa", "attention"), ("modeling_", f"backbone op ({op})"), ("fused_backbone.py", f"backbone op ({op})")):
        if key in where:
            return name
    if where.endswith("trainer.py"):  # the backward's engine ops (gradient sums) and the loss
        return f"autograd/loss ({op})"
    return f"other ({op})"


def _stand_in(counter: Counter, name: str, ref):  # noqa: ANN001, ANN202
    """An autograd Function computing `ref` with plain torch ops (not counted) that counts one launch
    forward and one backward under `name`, as the fused backbone's kernels launch."""

    class StandIn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):  # noqa: ANN001, ANN205
            counter.launch(name)
            counter.depth += 1
            try:
                ins = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
                with torch.enable_grad():
                    out = ref(*ins)
                ctx.ins, ctx.out = ins, out
                return tuple(o.detach() for o in out) if isinstance(out, tuple) else out.detach()
            finally:
                counter.depth -= 1

        @staticmethod
        def backward(ctx, *grads):  # noqa: ANN001, ANN205
            counter.launch(name)
            counter.depth += 1
            try:
                outs = ctx.out if isinstance(ctx.out, tuple) else (ctx.out,)
                need = [t for t in ctx.ins if isinstance(t, torch.Tensor) and t.requires_grad]
                got = iter(torch.autograd.grad(outs, need, grads, allow_unused=True))
                return tuple(next(got) if isinstance(t, torch.Tensor) and t.requires_grad else None for t in ctx.ins)
            finally:
                counter.depth -= 1

    return StandIn


def _rms(x, w, eps):  # noqa: ANN001, ANN202
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rope(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):  # noqa: ANN001, ANN202
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)

    def rot(x):  # noqa: ANN001, ANN202
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), -1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def install(counter: Counter) -> None:
    """The fused backbone's Functions (alto's RMSNorm and rope, Liger's SwiGLU) -> counting stand-ins
    (before `fuse_backbone` imports them); every Triton launch counted as one kernel and its own
    interpreter ops not."""
    import liger_kernel.ops.swiglu as swiglu

    import altokernels.rms_norm as rms_norm
    import altokernels.rope as rope

    rms_norm.RMSNormFunction = _stand_in(counter, "alto RMSNorm", _rms)
    rope.RopeFunction = _stand_in(counter, "alto rope", _rope)
    swiglu.LigerSiLUMulFunction = _stand_in(counter, "Liger SwiGLU", lambda a, b: torch.nn.functional.silu(a) * b)
    run = interpreter.GridExecutor.__call__

    def launch(self, *args, **kwargs):  # noqa: ANN001, ANN202
        counter.launch(f"LoRA Triton {getattr(self.fn, '__name__', '?').strip('_').replace('_kernel', '')}")
        counter.depth += 1
        try:
            return run(self, *args, **kwargs)
        finally:
            counter.depth -= 1

    interpreter.GridExecutor.__call__ = launch


def batch(seed: int, rows: int, length: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # prompts unlabelled, as fine-tuning data is
    return ids, torch.ones_like(ids), labels


def measure(counter: Counter, adapters: int, layers: int, rows: int, length: int, group: bool) -> collections.Counter:
    model = tiny_llama(hidden=64, layers=layers, heads=2, kv_heads=2, intermediate=160, seed=0)  # ranks up to 64 fit
    model.config._attn_implementation = "sdpa"  # as on the GPU
    print(fuse_backbone(model, allow_cpu=True), flush=True)
    tr = MultiAdapterTrainer(model, capacity=max(2, adapters), impl="triton", cuda_graphs=False,
                             group_projections=group)
    tr.store.shrink_at = 0  # as under CUDA graphs
    for i in range(adapters):
        tr.admit(f"j{i}", rank=RANKS[i % len(RANKS)], lr=1e-4, seed=i)
    step = {f"j{i}": batch(i, rows, length) for i in range(adapters)}
    for _ in range(2):  # warm: gradients allocated, launch plans made
        tr.step(step)
    counter.by.clear()
    with counter:
        tr.step(step)
    return collections.Counter(counter.by)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for step_kernels.csv")
    ap.add_argument("--layers", type=count(1, 4096), default=30, help="decoder layers (SmolLM2-135M has 30)")
    ap.add_argument("--adapters", default="4", help="adapter counts, comma-separated")
    ap.add_argument("--rows", type=count(1, 1 << 20), default=2, help="sequences per adapter")
    ap.add_argument("--length", type=count(1, 1 << 20), default=64, help="tokens per sequence")
    ap.add_argument("--group", default=os.environ.get("ALTO_GROUP_PROJECTIONS", "0"),
                    help="q/k/v and gate/up grouped: 0, 1 or both (0,1); default: ALTO_GROUP_PROJECTIONS or 0")
    args = ap.parse_args(argv)
    groups = [g.strip() for g in args.group.split(",")]
    if not groups or any(g not in ("0", "1") for g in groups):
        ap.error(f"--group: expected 0, 1 or 0,1, got {args.group!r}")
    counts = ap.int_list("--adapters", args.adapters)
    counter = Counter()
    install(counter)
    rows = []
    for n, g in ((a, g) for a in counts for g in groups):
        by = measure(counter, n, args.layers, args.rows, args.length, g == "1")
        gpu = {k: v for k, v in by.items() if not k.startswith("interpreter-only")}
        total = sum(gpu.values())
        lora = sum(v for k, v in gpu.items() if k.startswith("LoRA Triton"))
        print(f"{n} adapters, group={g}: {total} kernels per step ({total / args.layers:.1f} per decoder layer), "
              f"{lora} LoRA Triton launches ({lora / args.layers:.1f} per layer)", flush=True)
        for source, k in sorted(by.items(), key=lambda kv: -kv[1]):
            rows.append({"adapters": n, "group": int(g), "layers": args.layers, "source": source, "kernels": k,
                         "per_layer": round(k / args.layers, 2), "share": round(k / total, 4) if source in gpu else None})
        rows.append({"adapters": n, "group": int(g), "layers": args.layers, "source": "LoRA Triton (all)",
                     "kernels": lora, "per_layer": round(lora / args.layers, 2), "share": round(lora / total, 4)})
        rows.append({"adapters": n, "group": int(g), "layers": args.layers, "source": "TOTAL (GPU path)", "kernels": total,
                     "per_layer": round(total / args.layers, 2), "share": 1.0})
    out = Path(args.out)
    write_csv(pd.DataFrame(rows), out / "step_kernels.csv")
    print(f"wrote {out / 'step_kernels.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
