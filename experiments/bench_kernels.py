"""Benchmark multi-adapter LoRA implementations on one Llama-3.2-1B decoder layer (fwd+bwd, frozen base).

The 7 projections (hidden 2048, MLP 8192, kv 512), 32 adapters with ranks 16/32/64 mixed equally,
per-adapter batch 1/2/4 of 512-token sequences, bf16 (`--model smollm2-135m`, `--adapters`, `--seq`: the
e2e runs' shapes instead). Implementations side by side in one run:
base_only (the frozen base GEMMs alone: the floor), loop, sequential, peft, torch_grouped, ours
(plus `ours_*` variants of the fused path). speedup = time(torch_grouped) / time(row). Where base_only
ran, two `floor_*` rows per batch bound the fused layer: the base plus the bytes the LoRA work must
move (`lora_bytes`) at this device's measured copy bandwidth, with cuBLAS for the base
(`floor_cublas_passes`) or with the LoRA terms in a cuBLAS-speed GEMM's epilogue (`floor_epilogue`).

Writes results/kernels_<gpu>.csv (one row per projection and a `layer` row summing the 7; `ms`
and `host_ms`, the host time to issue one call), results/kernels_breakdown_<gpu>.csv (each kernel
alone, with achieved GB/s), kernels_autotune_<gpu>.txt (the config chosen per autotune key) and a PNG.
Inputs are drawn on the device (drawing them on the host took most of the old 420 s run); the
slow baselines (loop, sequential, peft: 50-180 ms a layer) are timed over a few iterations only.
The estimated time is printed up front (~2-3 min on an H100 for batches 1,2,4; `--quick` ~1 min).

    PYTHONPATH=$PWD python experiments/bench_kernels.py --out $OUT        # on the GPU machine
    PYTHONPATH=$PWD python experiments/bench_kernels.py --quick --out $OUT  # base/grouped/ours variants only
    PYTHONPATH=$PWD python experiments/bench_kernels.py --gemm --out $OUT   # Triton GEMM vs cuBLAS A/B only
    PYTHONPATH=$PWD TRITON_INTERPRET=1 python experiments/bench_kernels.py --smoke --out /tmp/b  # CPU
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("ALTO_KERNELS_AUTOTUNE", "1")  # the kernels at their tuned configs (before altokernels loads)

import torch  # noqa: E402

from altosim.argparser import OneLineParser, count  # noqa: E402

PROJS = {  # name: (d_in, d_out) of Llama-3.2-1B
    "q": (2048, 2048), "k": (2048, 512), "v": (2048, 512), "o": (2048, 2048),
    "gate": (2048, 8192), "up": (2048, 8192), "down": (8192, 2048),
}
MODELS = {"llama-3.2-1b": PROJS,  # --model: the issue's shapes, or the e2e runs' backbone (SmolLM2-135M)
          "smollm2-135m": {"q": (576, 576), "k": (576, 192), "v": (576, 192), "o": (576, 576),
                           "gate": (576, 1536), "up": (576, 1536), "down": (1536, 576)}}
IMPLS = ["base_only", "loop", "sequential", "peft", "torch_grouped", "ours"]
SLOW_IMPLS = ("loop", "sequential", "peft")  # 50-180 ms a layer: a few timed iterations suffice
# variants of the fused path (fused_lora_linear keyword arguments); `ours` is the default
# (epilogue, segment-reduce weight grads, direct launches)
VARIANT_IMPLS = {
    "ours_bmm_wgrad": dict(wgrad="auto"),  # torch.bmm weight grads at equal token counts (the default before 2026-12-03)
    "ours_addmm": dict(variant="addmm"),
    "ours_auto_variant": dict(variant="auto"),  # addmm where the output has >= 4096 columns
    "ours_triton_launch": dict(fast_launch=False),  # Triton's own launch path every call (A/B)
    "ours_streams": dict(streams=True),
    "ours_pipelined2": dict(variant="pipelined", streams=True, chunks=2),
    "ours_pipelined4": dict(variant="pipelined", streams=True, chunks=4),
    "ours_addmm_streams": dict(variant="addmm", streams=True),  # dS, dA, dB beside the dX GEMM
    "ours_gemm": dict(variant="gemm"),  # our Triton base GEMM with the expand in its epilogue (issue 28's A/B)
    "ours_gemm_streams": dict(variant="gemm", streams=True),  # its dS/dA/dB on the side stream
}
# fp32 master weights (the runtime's stacks) under bf16 activations: read by the kernels as they are
# (`ours_fp32_master`), or cast to bf16 before each call and the gradients cast back (`ours_fp32_cast`,
# what the runtime did before 2026-12-03)
MASTER_IMPLS = ("ours_fp32_master", "ours_fp32_cast")
# the layer as the runtime's grouped path runs it (ALTO_GROUP_PROJECTIONS=1): q/k/v and gate/up, which
# read the same input, as one LoRA call each (altokernels/group_function.py), o and down alone
GROUP_IMPLS = {"ours_group": [("qkv", ("q", "k", "v")), ("o", ("o",)), ("gate_up", ("gate", "up")), ("down", ("down",))]}
QUICK_IMPLS = ["base_only", "torch_grouped", "ours", "ours_bmm_wgrad", "ours_addmm", "ours_triton_launch"]
# `--gemm`: the Triton-GEMM A/B only. `triton_base_only` is base_only (forward + dX, no LoRA) on our
# Triton GEMM (altokernels/gemm_epilogue.base_gemm): the floor `ours_gemm` can reach, beside cuBLAS's
GEMM_IMPLS = ["base_only", "triton_base_only", "torch_grouped", "ours", "ours_addmm", "ours_gemm", "ours_gemm_streams"]
# and its breakdown: each direction's base GEMM on cuBLAS and on ours, ours with the LoRA term, and
# the expand passes that term replaces
GEMM_BREAKDOWN = ("base_fwd_mm", "gemm_base_fwd", "gemm_lora_fwd", "expand_fwd_inplace", "base_bwd_mm", "gemm_base_bwd",
                  "gemm_lora_bwd_dx", "expand_bwd_dx")


def _timer(device: torch.device, slow: bool = False, quick: bool = False) -> Callable[[Callable[[], object]], float]:
    """ms per call: triton's do_bench (median) on CUDA; `slow`: 1 warm-up + 3 timed calls."""
    if device.type == "cuda" and slow:

        def few(fn: Callable[[], object]) -> float:
            fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / 3 * 1e3

        return few
    if device.type == "cuda":
        import triton.testing

        warm, rep = (10, 40) if quick else (25, 100)
        return lambda fn: float(triton.testing.do_bench(fn, warmup=warm, rep=rep, return_mode="median"))

    def cpu(fn: Callable[[], object]) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(2):
            fn()
        return (time.perf_counter() - t0) / 2 * 1e3

    return cpu


def _drawer(device, dtype) -> Callable[..., torch.Tensor]:  # noqa: ANN001
    """rnd(*shape, s=scale): seeded normal draws made on the device (host randn took minutes)."""
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape: int, s: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * s).to(dtype)

    return rnd


def _group_runner(members: list[tuple[int, int]], counts: list[int], ranks: list[int], device, dtype):  # noqa: ANN001
    """One fwd+bwd of projections that read the same input: `group_lora_linear` for 2-3 members
    (one LoRA call), `fused_lora_linear` for one."""
    from altokernels import build_meta
    from altokernels.function import fused_lora_linear
    from altokernels.group_function import group_lora_linear

    z, r_max, t = len(counts), max(ranks), sum(counts)
    rnd = _drawer(device, dtype)
    d_in = members[0][0]
    x = rnd(t, d_in).requires_grad_(True)
    ws = [rnd(d_out, d_in, s=d_in**-0.5) for _, d_out in members]
    As = [rnd(z, d_in, r_max, s=d_in**-0.5).requires_grad_(True) for _ in members]
    Bs = [rnd(z, r_max, d_out, s=0.01).requires_grad_(True) for _, d_out in members]
    dys = [rnd(t, d_out) for _, d_out in members]
    meta = build_meta(counts, list(range(z)), ranks, [2.0] * z, device)
    if len(members) == 1:
        return lambda: torch.autograd.grad(fused_lora_linear(x, ws[0], None, As[0], Bs[0], meta, True), [x, *As, *Bs],
                                           dys[0])
    return lambda: torch.autograd.grad(group_lora_linear(x, ws, As, Bs, meta, True), [x, *As, *Bs], dys)


def _graphed(fn: Callable[[], object], device) -> tuple[Callable[[], object], bool]:  # noqa: ANN001
    """`fn` captured in a CUDA graph (warmed up on a side stream first), as the runtime replays a
    step: its time is then the GPU's alone, with no host issue between kernels. (fn, False) where
    it cannot be captured, or off CUDA."""
    if device.type != "cuda":
        return fn, False
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # noqa: BLE001 - timed eagerly, and said so
        print(f"  capture failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}): eager",
              flush=True)
        torch.cuda.synchronize(device)
        return fn, False
    return graph.replay, True


def _runner(impl: str, d_in: int, d_out: int, counts: list[int], ranks: list[int], device, dtype):  # noqa: ANN001
    """A closure doing one fwd+bwd of this projection with `impl` (inputs built once)."""
    from altokernels import build_meta, grouped_lora_linear
    from altokernels.function import fused_lora_linear

    z, r_max, t = len(counts), max(ranks), sum(counts)
    scales = [2.0] * z  # alpha = 2 r
    rnd = _drawer(device, dtype)

    x = rnd(t, d_in).requires_grad_(True)
    w = rnd(d_out, d_in, s=d_in**-0.5)
    dy = rnd(t, d_out)
    lin = torch.nn.functional.linear
    if impl == "base_only":
        return lambda: torch.autograd.grad(lin(x, w), [x], dy)
    if impl == "triton_base_only":  # the same two products (Y = X W^T, dX = dY W) on our Triton GEMM
        from altokernels import gemm_epilogue as ge

        meta0 = build_meta(counts, list(range(z)), ranks, scales, device)
        xd = x.detach()

        def triton_base() -> None:
            ge.base_gemm(xd, w, (w.stride(1), w.stride(0)), d_out, meta0)
            ge.base_gemm(dy, w, (w.stride(0), w.stride(1)), d_in, meta0)

        return triton_base
    A = rnd(z, d_in, r_max, s=d_in**-0.5).requires_grad_(True)
    B = rnd(z, r_max, d_out, s=0.01).requires_grad_(True)
    meta = build_meta(counts, list(range(z)), ranks, scales, device)  # once per step, shared by layers
    if impl == "torch_grouped":
        return lambda: torch.autograd.grad(grouped_lora_linear(x, w, None, A, B, meta), [x, A, B], dy)
    if impl == "ours" or impl in VARIANT_IMPLS:
        kw = VARIANT_IMPLS.get(impl, {})
        return lambda: torch.autograd.grad(fused_lora_linear(x, w, None, A, B, meta, True, **kw), [x, A, B], dy)
    if impl in MASTER_IMPLS:
        a32, b32 = A.detach().float().requires_grad_(True), B.detach().float().requires_grad_(True)
        if impl == "ours_fp32_cast":
            return lambda: torch.autograd.grad(fused_lora_linear(x, w, None, a32.to(dtype), b32.to(dtype), meta, True),
                                               [x, a32, b32], dy)
        return lambda: torch.autograd.grad(fused_lora_linear(x, w, None, a32, b32, meta, True), [x, a32, b32], dy)
    offs = meta.offsets
    if impl == "loop":  # batched base GEMM, per-adapter LoRA matmuls on split rows, cat
        Al = [A[i, :, :ranks[i]].detach().clone().requires_grad_(True) for i in range(z)]
        Bl = [B[i, :ranks[i], :].detach().clone().requires_grad_(True) for i in range(z)]

        def loop() -> None:
            xs = x.split(counts)
            y = lin(x, w) + torch.cat([scales[i] * (xs[i] @ Al[i]) @ Bl[i] for i in range(z)])
            torch.autograd.grad(y, [x, *Al, *Bl], dy)

        return loop
    xs = [x[offs[i]:offs[i + 1]].detach().requires_grad_(True) for i in range(z)]
    dys = [dy[offs[i]:offs[i + 1]] for i in range(z)]
    if impl == "sequential":
        As = [A[i, :, :ranks[i]].detach().clone().requires_grad_(True) for i in range(z)]
        Bs = [B[i, :ranks[i], :].detach().clone().requires_grad_(True) for i in range(z)]

        def seq() -> None:
            for i in range(z):  # one adapter at a time: its own base GEMM and LoRA, fwd+bwd
                y = lin(xs[i], w) + scales[i] * (xs[i] @ As[i]) @ Bs[i]
                torch.autograd.grad(y, [xs[i], As[i], Bs[i]], dys[i])

        return seq
    if impl == "peft":
        from peft import LoraConfig
        from peft.tuners.lora.layer import Linear as LoraLinear

        base = torch.nn.Linear(d_in, d_out, bias=False, device=device, dtype=dtype)
        base.weight.data.copy_(w)
        base.weight.requires_grad_(False)
        layers = []
        for i in range(z):
            cfg = LoraConfig(r=ranks[i], lora_alpha=2 * ranks[i])
            layers.append(LoraLinear(base, "a", config=cfg, r=ranks[i], lora_alpha=2 * ranks[i]).to(device, dtype))

        def run_peft() -> None:
            for i in range(z):
                y = layers[i](xs[i])
                params = [p for p in layers[i].parameters() if p.requires_grad]
                torch.autograd.grad(y, [xs[i], *params], dys[i])

        return run_peft
    raise ValueError(f"impl: unknown {impl!r}")


def _breakdown(d_in: int, d_out: int, counts: list[int], ranks: list[int], device, dtype, bench,  # noqa: ANN001
               only: tuple[str, ...] | None = None) -> list[dict]:
    """Each fused-path kernel alone, with bytes moved, vs the base GEMMs and torch.bmm weight grads
    (`only`: these kernels, in this order)."""
    from altokernels import build_meta
    from altokernels import triton_kernels as tk

    z, r, t = len(counts), max(ranks), sum(counts)
    meta = build_meta(counts, list(range(z)), ranks, [2.0] * z, device)
    x = torch.randn(t, d_in, device=device, dtype=dtype)
    w = torch.randn(d_out, d_in, device=device, dtype=dtype)
    A = torch.randn(z, d_in, r, device=device, dtype=dtype)
    B = torch.randn(z, r, d_out, device=device, dtype=dtype)
    y = torch.randn(t, d_out, device=device, dtype=dtype)
    dy = torch.randn(t, d_out, device=device, dtype=dtype)
    s = tk.shrink(x, A, meta, r, False, A.stride())  # fp32, as in the fused path
    dxb = torch.randn(t, d_in, device=device, dtype=dtype)
    da, dbb = torch.empty_like(A), torch.empty_like(B)
    e = x.element_size()
    n = counts[0]
    cases = {
        "base_fwd_mm": (lambda: x @ w.t(), (t * d_in + t * d_out) * e),
        "base_bwd_mm": (lambda: dy @ w, (t * d_in + t * d_out) * e),
        "base_bwd_addmm_": (lambda: dxb.addmm_(dy, w), (2 * t * d_in + t * d_out) * e),
        "shrink_fwd": (lambda: tk.shrink(x, A, meta, r, False, A.stride(), out=s), t * d_in * e),
        "expand_fwd_inplace": (lambda: tk.expand(s, B, meta, d_out, True, B.stride(), base=y, out=y), 2 * t * d_out * e),
        "expand_fwd_delta": (lambda: tk.expand(s, B, meta, d_out, True, B.stride(), base=None), t * d_out * e),
        "shrink_bwd_ds": (lambda: tk.shrink(dy, B, meta, r, True, (B.stride(0), B.stride(2), B.stride(1))), t * d_out * e),
        "expand_bwd_dx": (lambda: tk.expand(s, A, meta, d_in, False, (A.stride(0), A.stride(2), A.stride(1)),
                                            base=dxb, out=dxb), 2 * t * d_in * e),
        "reduce_dA": (lambda: tk.seg_reduce(x, s, da, meta, False, False), t * d_in * e),
        "reduce_dB": (lambda: tk.seg_reduce(s, dy, dbb, meta, True, True), t * d_out * e),
    }
    from altokernels import gemm_epilogue as ge

    wt, at = (w.stride(1), w.stride(0)), (A.stride(0), A.stride(2), A.stride(1))
    cases.update({  # our Triton GEMM: alone (vs base_*_mm, cuBLAS) and with the LoRA term in its epilogue
        "gemm_base_fwd": (lambda: ge.base_gemm(x, w, wt, d_out, meta), (t * d_in + t * d_out) * e),
        "gemm_lora_fwd": (lambda: ge.gemm_expand(x, w, wt, d_out, s, B, B.stride(), meta, True),
                          (t * d_in + t * d_out) * e),
        "gemm_base_bwd": (lambda: ge.base_gemm(dy, w, w.stride(), d_in, meta), (t * d_in + t * d_out) * e),
        "gemm_lora_bwd_dx": (lambda: ge.gemm_expand(dy, w, w.stride(), d_in, s, A, at, meta, False),
                             (t * d_in + t * d_out) * e),
    })
    if meta.equal_counts:
        from altokernels.function import _bmm_wgrads

        cases["bmm_dA"] = (lambda: _bmm_wgrads(x, s, s, dy, meta, da, None), t * d_in * e)
        cases["bmm_dB"] = (lambda: _bmm_wgrads(x, s, s, dy, meta, None, dbb), t * d_out * e)
    if only is not None:
        cases = {k: cases[k] for k in only}
    rows = []
    for name, (fn, nbytes) in cases.items():
        ms = bench(fn)
        rows.append({"d_in": d_in, "d_out": d_out, "tokens_per_adapter": n, "kernel": name, "ms": round(ms, 4),
                     "gbps": round(nbytes / ms / 1e6, 1), "host_ms": round(_host_ms(fn, device), 4)})
    return rows


def _units(impl: str, projs: dict) -> list[tuple[str, tuple[str, ...]]]:
    """What one timed call covers, in order: a projection each, or GROUP_IMPLS's units (their
    members that `projs` has)."""
    if impl not in GROUP_IMPLS:
        return [(name, (name,)) for name in projs]
    units = [(name, tuple(m for m in members if m in projs)) for name, members in GROUP_IMPLS[impl]]
    return [(name if len(members) > 1 else members[0], members) for name, members in units if members]


def _check(projs: dict, counts: list[int], ranks: list[int], device, dtype, variants: list[str]) -> list[dict]:  # noqa: ANN001
    """Autotuned fused path (`ours` and the `variants` of VARIANT_IMPLS) vs the loop reference at
    benchmark shapes: max error / max |ref|."""
    from altokernels import build_meta, loop_lora_linear
    from altokernels.function import fused_lora_linear

    z, r = len(counts), max(ranks)
    meta = build_meta(counts, list(range(z)), ranks, [2.0] * z, device)
    rows = []
    for name, (d_in, d_out) in projs.items():
        t = sum(counts)
        x = torch.randn(t, d_in, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(d_out, d_in, device=device, dtype=dtype) * d_in**-0.5
        A = (torch.randn(z, d_in, r, device=device, dtype=dtype) * d_in**-0.5).requires_grad_(True)
        B = (torch.randn(z, r, d_out, device=device, dtype=dtype) * r**-0.5).requires_grad_(True)
        dy = torch.randn(t, d_out, device=device, dtype=dtype)
        y = loop_lora_linear(x, w, None, A, B, meta)
        want = [y, *torch.autograd.grad(y, [x, A, B], dy)]
        for impl, kw in [("ours", {}), *((v, VARIANT_IMPLS[v]) for v in variants)]:
            for _ in range(2):  # the second call takes the direct-launch path (plans cached on meta)
                y = fused_lora_linear(x, w, None, A, B, meta, True, **kw)
                got = [y, *torch.autograd.grad(y, [x, A, B], dy)]
            errs = {k: ((g.float() - wv.float()).abs().max() / wv.float().abs().max()).item()
                    for k, g, wv in zip(("y", "dx", "dA", "dB"), got, want)}
            rows.append({"proj": name, "impl": impl, **errs})
            print(f"check {name:>5} {impl:>18}: " + " ".join(f"{k}={v:.2e}" for k, v in errs.items()), flush=True)
    return rows


def _plot(df, path: Path) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = df[df["proj"] == "layer"]
    impls = [i for i in layer["impl"].unique()]
    batches = sorted(layer["batch"].unique())
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(impls)
    for j, impl in enumerate(impls):
        sub = layer[layer["impl"] == impl].set_index("batch")
        ax.bar([b + (j - len(impls) / 2) * width for b in range(len(batches))],
               [sub.loc[b, "ms"] for b in batches], width, label=impl)
    tokens = layer.groupby("batch")["tokens_per_adapter"].first()
    ax.set_xticks(range(len(batches)), [f"batch {b}\n({tokens[b]} tok/adapter)" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("ms per layer, fwd+bwd (log)")
    graphed = " (CUDA graph replays)" if bool(layer["graphed"].any()) else ""
    ax.set_title(f"{df['model'].iloc[0]} layer, {df['adapters'].iloc[0]} LoRA adapters r=16/32/64, "
                 f"{df['gpu'].iloc[0]}{graphed}")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _finish(rows: list[dict], projs: dict, z: int):  # noqa: ANN202
    """Rows -> DataFrame with speedup (vs torch_grouped), vs_base_only and base TFLOP/s."""
    import pandas as pd

    df = pd.DataFrame(rows)
    key = ["proj", "batch"]
    idx = df.set_index(key).index
    grouped = df[df["impl"] == "torch_grouped"].set_index(key)["ms"].reindex(idx).values
    base = df[df["impl"] == "base_only"].set_index(key)["ms"].reindex(idx).values
    df["speedup"] = (grouped / df["ms"].values).round(3)
    df["vs_base_only"] = (df["ms"].values / base).round(3)

    members = {name: ms for units in GROUP_IMPLS.values() for name, ms in units}

    def base_flops(row) -> float:  # noqa: ANN001  frozen base: forward GEMM + dX GEMM
        if row["proj"] == "layer":
            pairs = list(projs.values())
        else:
            pairs = [projs[m] for m in members.get(row["proj"], (row["proj"],)) if m in projs]
        return sum(4.0 * row["tokens_per_adapter"] * z * di * do for di, do in pairs)

    df["base_tflops"] = [round(base_flops(r) / (b * 1e9), 1) for (_, r), b in zip(df.iterrows(), base)]
    df["ms"] = df["ms"].round(4)
    df["host_ms"] = df["host_ms"].round(4)
    return df


def _print_gemm_floor(df) -> None:  # noqa: ANN001
    """Per projection and batch: our Triton base GEMM (forward + dX, no LoRA) against cuBLAS's, and,
    where timed, the gemm variant against the default fused path (`ours`): ms and ratios."""
    ms = df.pivot_table(index=["batch", "proj"], columns="impl", values="ms", sort=False)
    out = ms[["base_only", "triton_base_only"]].copy()
    out["triton/cublas"] = (ms["triton_base_only"] / ms["base_only"]).round(3)
    for impl in ("ours", "ours_gemm"):
        if impl in ms:
            out[f"{impl}/base"] = (ms[impl] / ms["base_only"]).round(3)
    if "ours" in ms and "ours_gemm" in ms:
        out["gemm/ours"] = (ms["ours_gemm"] / ms["ours"]).round(3)
    print("Triton GEMM vs cuBLAS (forward + dX of the frozen base; ms):")
    print(out.round(4).to_string())


def lora_bytes(projs: dict, tokens: int, elem: int, epilogue: bool) -> int:
    """Bytes the LoRA work of one layer must move outside the base GEMMs (fwd + bwd, frozen base):
    X and dY read twice each (shrink and dA; dS and dB), plus, where the base GEMM is cuBLAS (no
    epilogue), Y and dX read and written once each (adding sBS and dS A^T). S, dS and the adapter
    weights are left out (rank-wide: under 5% of these at the benchmark's shapes)."""
    per = 2 if epilogue else 4
    return sum(per * tokens * elem * (d_in + d_out) for d_in, d_out in projs.values())


def copy_bandwidth(device, bench) -> float:  # noqa: ANN001
    """Bytes per ms of a 1-GiB device copy (read + write), timed like the layers: the bandwidth a
    memory-bound pass can hope for on this device."""
    n = 1 << 29 if device.type == "cuda" else 1 << 22
    a = torch.empty(n, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    del a, b
    return 2 * n * 2 / ms


def floor_rows(rows: list[dict], projs: dict, elem: int, bandwidth: float) -> list[dict]:
    """Per batch with a base_only layer row: the layer's floor in the two forms (cuBLAS base +
    LoRA passes; the LoRA terms in the base GEMM's epilogue at cuBLAS's speed) as the base's time
    plus `lora_bytes` at the copy bandwidth. ms only: no kernel ran."""
    out = []
    for r in rows:
        if r["proj"] == "layer" and r["impl"] == "base_only":
            for impl, epi in (("floor_cublas_passes", False), ("floor_epilogue", True)):
                lora_ms = lora_bytes(projs, r["tokens_per_adapter"] * r["adapters"], elem, epi) / bandwidth
                out.append({**r, "impl": impl, "ms": r["ms"] + lora_ms, "host_ms": float("nan")})
    return out


def _write_csv(df, path: Path) -> None:  # noqa: ANN001
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _host_ms(fn: Callable[[], object], device: torch.device, calls: int = 10) -> float:
    """Host time to issue one call (no synchronisation inside the loop): when it is close to `ms`,
    the layer is bound by host work (Python, launches), not by the GPU."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e3
    if device.type == "cuda":
        torch.cuda.synchronize()
    return host


def _write_autotune_choices(path: Path) -> None:
    """Every (kernel, autotune key) -> chosen config of this process, for reading the breakdown."""
    from altokernels import gemm_epilogue as ge
    from altokernels import triton_kernels as tk

    lines = []
    for mod, name in [(tk, "_shrink_kernel"), (tk, "_expand_kernel"), (tk, "_seg_reduce_kernel"),
                      (ge, "_gemm_lora_kernel")]:
        fn = getattr(mod, name)
        for key, cfg in sorted(getattr(fn, "cache", {}).items(), key=str):
            lines.append(f"{name} {dict(zip(fn.keys, key))} extra={key[len(fn.keys):]} -> {cfg}")
    path.write_text("\n".join(lines) + "\n")


def _estimate_s(impls: list[str], batches: list[int], quick: bool, check: bool, breakdown: bool) -> float:
    """Rough wall time on an H100: per projection ~0.2 s of do_bench for fast impls (x batch for
    the input set-up), ~1 s for a slow baseline; autotuning/compiling ~60 s the first time."""
    per_fast = 0.12 if quick else 0.2
    t = 60.0 + (25.0 if check else 0.0) + (15.0 if breakdown else 0.0)
    for b in batches:
        for impl in impls:
            t += 7 * ((0.3 + 0.25 * b) if impl in SLOW_IMPLS else (per_fast + 0.1 * b))
    return t


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="folder for the CSVs and PNG")
    ap.add_argument("--batches", default="1,2,4", help="per-adapter batch sizes (sequences of 512)")
    ap.add_argument("--impls", default=None,
                    help="comma-separated impls (default: all; --quick, --gemm: a few); the check then covers "
                    "only the listed ours_* variants")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-kernel breakdown")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check at bench shapes")
    ap.add_argument("--quick", action="store_true",
                    help=f"impls {','.join(QUICK_IMPLS)} only, shorter do_bench, no breakdown")
    ap.add_argument("--gemm", action="store_true",
                    help=f"the Triton-GEMM A/B only: impls {','.join(GEMM_IMPLS)} (triton_base_only: our GEMM "
                    "without the LoRA term, the floor of ours_gemm, beside cuBLAS's base_only), their check, "
                    "shorter do_bench, and a breakdown of the GEMM kernels alone (per direction: cuBLAS, ours, "
                    "ours with the LoRA term, the expand pass it replaces)")
    ap.add_argument("--graphs", action="store_true",
                    help="time each fast impl's call as a CUDA graph replay (as the runtime replays captured steps): "
                    "the GPU's time alone, with no host issue between kernels (column `graphed`)")
    ap.add_argument("--model", default="llama-3.2-1b", choices=sorted(MODELS),
                    help="the layer's shapes (smollm2-135m: the e2e runs' backbone)")
    ap.add_argument("--adapters", type=count(1, 4096), default=32, help="adapters in the group (ranks 16/32/64 in turn)")
    ap.add_argument("--seq", type=count(1, 1 << 20), default=512, help="tokens per sequence (per-adapter batch x this = its rows)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU check of the script)")
    args = ap.parse_args()
    import pandas as pd

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    tag = re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_").lower()
    projs, z, seq = MODELS[args.model], args.adapters, args.seq
    if args.smoke:
        projs, z, seq = {"q": (40, 40), "k": (40, 24), "down": (72, 24)}, 4, 8
    ranks = ([16, 32, 64] * z)[:z]
    all_impls = IMPLS + ["triton_base_only"] + list(VARIANT_IMPLS) + list(MASTER_IMPLS) + list(GROUP_IMPLS)
    preset = GEMM_IMPLS if args.gemm else QUICK_IMPLS if args.quick else all_impls
    impls = ap.name_list("--impls", args.impls, all_impls) if args.impls else preset
    quick = args.quick or args.gemm
    batches = ap.int_list("--batches", args.batches)
    if device.type != "cuda" and not args.smoke:
        ap.error("needs a CUDA device (--smoke runs tiny shapes on the CPU)")
    breakdown = not args.no_breakdown and (args.gemm or not args.quick)
    triton_impls = [i for i in impls if i not in IMPLS[:-1]]  # all but the torch forms and base_only
    if device.type != "cuda" and (triton_impls or not args.no_check or breakdown) \
            and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("Triton on the CPU (the fused impls, the check, the breakdown) needs TRITON_INTERPRET=1 set")
    bench = _timer(device, quick=quick)
    bench_slow = _timer(device, slow=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{gpu}: batches {batches}, impls {impls}; estimated ~{_estimate_s(impls, batches, quick, not args.no_check, breakdown):.0f} s"
          " (H100)", flush=True)
    t_start = time.time()
    if not args.no_check:  # also compiles and autotunes every kernel the timings use
        # the timed variants; with no --impls or --gemm also every other one but the gemm variants (their
        # kernel's autotuning is paid only where they are timed)
        listed = args.gemm or args.impls
        checked = [v for v in VARIANT_IMPLS if v in impls or not (listed or v.startswith("ours_gemm"))]
        chk = _check(projs, [seq] * z, ranks, device, dtype, checked)
        pd.DataFrame(chk).to_csv(out / f"kernels_check_{tag}.csv", index=False)
        bad = [c for c in chk if max(c["y"], c["dx"], c["dA"], c["dB"]) > 0.05]
        if bad:
            raise SystemExit(f"fused path disagrees with the reference: {bad}")
        print(f"check done after {time.time() - t_start:.0f} s", flush=True)
    if breakdown:  # each kernel alone, first batch only (diagnostics arrive early)
        brk = []
        for d_in, d_out in sorted(set(projs.values())):
            brk += _breakdown(d_in, d_out, [batches[0] * seq] * z, ranks, device, dtype, bench,
                              GEMM_BREAKDOWN if args.gemm else None)
        _write_csv(pd.DataFrame(brk), out / f"kernels_breakdown_{tag}.csv")
        print(pd.DataFrame(brk).to_string(index=False), flush=True)
    rows: list[dict] = []
    csv = out / f"kernels_{tag}.csv"
    for batch in batches:
        n = batch * seq
        counts = [n] * z
        for impl in impls:
            total = host_total = 0.0
            slow = impl in SLOW_IMPLS
            timer = bench_slow if slow else bench
            for name, members in _units(impl, projs):
                shapes = [projs[m] for m in members]
                if impl in GROUP_IMPLS:
                    fn = _group_runner(shapes, counts, ranks, device, dtype)
                else:
                    fn = _runner(impl, *shapes[0], counts, ranks, device, dtype)
                graphed = False
                if args.graphs and not slow:
                    fn, graphed = _graphed(fn, device)
                ms = timer(fn)
                host = float("nan") if slow else _host_ms(fn, device)
                del fn
                total += ms
                host_total += host
                rows.append(dict(gpu=gpu, model=args.model, proj=name, d_in=shapes[0][0], d_out="+".join(str(d) for _, d in shapes),
                                 adapters=z, ranks="16/32/64", batch=batch, tokens_per_adapter=n, impl=impl, ms=ms,
                                 host_ms=host, graphed=graphed))
            rows.append(dict(gpu=gpu, model=args.model, proj="layer", d_in="7proj", d_out="7proj", adapters=z, ranks="16/32/64",
                             batch=batch, tokens_per_adapter=n, impl=impl, ms=total, host_ms=host_total,
                             graphed=bool(args.graphs) and not slow and device.type == "cuda"))
            print(f"batch {batch} {impl:>20}: {total:9.3f} ms/layer, host {host_total:7.3f} ms to issue"
                  f"  ({time.time() - t_start:.0f} s)", flush=True)
        if "base_only" in impls and "torch_grouped" in impls:
            _write_csv(_finish(rows, projs, z), csv)  # partial results survive a time limit
    if "base_only" in impls:  # what no kernel of these forms can beat, at this device's copy bandwidth
        bw = copy_bandwidth(device, bench)
        print(f"copy bandwidth {bw / 1e9:.2f} TB/s: floors = base + LoRA bytes / bandwidth", flush=True)
        rows += floor_rows(rows, projs, torch.empty((), dtype=dtype).element_size(), bw)
    df = _finish(rows, projs, z)
    _write_csv(df, csv)
    _write_autotune_choices(out / f"kernels_autotune_{tag}.txt")
    _plot(df, out / f"kernels_{tag}.png")
    print(df[df["proj"] == "layer"].to_string(index=False))
    if "triton_base_only" in impls and "base_only" in impls:
        _print_gemm_floor(df)
    print(f"wrote {csv} after {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
