"""Prediction before measurement: the cost model's AP vs FSDP step times on P = 2, 4, 8 GPUs.

The same settings experiments/bench_parallel.py measures: 8 adapters (LoRA rank 16), 256-token
sequences, per-adapter batch 1/2/4/8, on SmolLM2-135M, the Llama-3.2-1B shape and the
Llama-3.1-70B shape (full depth, and 2 layers as the benchmark runs it). Per-rank compute comes
from a measured CostProfile where one covers (model, GPU) (every `traces/profiles/*.csv` unless
`--profile` names files), else from the analytic model; communication from bytes moved over a
link of `--link-gbytes` GB/s per GPU (or a run config's `cluster.link_gbps`); see
altosim/cost/parallel.py for the formulas. `single` rows: the 8 adapters fused on one GPU.

    python experiments/predict_parallel.py                      # results/parallel_predicted_{h100,h200}.{csv,png}
    python experiments/predict_parallel.py --gpu H100 --profile traces/profiles/h100.csv

Columns: gpu_type, gpus, per_adapter_batch, impl, model, layers, adapters, lora_rank, seq_len,
padded, compute_ms, allgather_ms, allreduce_ms, predicted_step_ms, predicted_speedup_vs_fsdp
(fsdp step / this step, same P and batch), source (profile|analytic), extrapolated, link_GBps,
overlap.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from altosim.argparser import OneLineParser, count, finite, share  # noqa: E402
from altosim.cost import CostModel, Link, ap_step, cost_model_for, fsdp_step, model_shape, read_cost_profile  # noqa: E402
from altosim.report import save_fig, write_csv  # noqa: E402
from altosim.schemas import CostProfile  # noqa: E402

BACKBONES = ("smollm2-135m", "llama-3.2-1b", "llama-3.1-70b", "llama-3.1-70b:layers=2")
COLUMNS = ["gpu_type", "gpus", "per_adapter_batch", "impl", "model", "layers", "adapters", "lora_rank", "seq_len",
           "padded", "compute_ms", "allgather_ms", "allreduce_ms", "predicted_step_ms", "predicted_speedup_vs_fsdp",
           "source", "extrapolated", "link_GBps", "overlap"]


def parse_backbone(spec: str) -> tuple[str, int]:
    """'llama-3.1-70b:layers=2' -> ('llama-3.1-70b', 2); a bare name -> its full depth."""
    name, _, rest = spec.partition(":")
    shape = model_shape(name)
    if not rest:
        return shape.name, shape.layers
    key, eq, val = rest.partition("=")
    if key != "layers" or not eq or not val.isdigit() or int(val) < 1:
        raise ValueError(f"backbone: bad option {rest!r} in {spec!r}, expected e.g. 'llama-3.1-70b:layers=2'")
    return shape.name, int(val)


def merge_profiles(paths: list[Path]) -> CostProfile | None:
    """One CostProfile holding the rows, depths and memory fits of every file (None: no files)."""
    profs = [read_cost_profile(p) for p in paths]
    if not profs:
        return None
    return CostProfile(
        rows=[r for p in profs for r in p.rows], device="; ".join(sorted({p.device for p in profs})),
        date=max(p.date for p in profs), source="; ".join(str(p) for p in paths),
        layers={k: v for p in profs for k, v in p.layers.items()},
        memory_fits={k: v for p in profs for k, v in p.memory_fits.items()},
    )


def predict(cost: CostModel, backbones: list[str], gpus: list[int], batches: list[int], adapters: int, rank: int,
            seq: int, link: Link, overlap: float) -> pd.DataFrame:
    rows = []
    for spec in backbones:
        model, layers = parse_backbone(spec)
        shape = model_shape(model).truncated(layers)

        def single(a: int, r: float, b: float, s: int, _m: str = model, _l: int = layers):
            return cost.single_step(_m, a, r, b, s, layers=_l)

        base = dict(gpu_type=cost.gpu.name, model=model, layers=layers, adapters=adapters, lora_rank=rank,
                    seq_len=seq, link_GBps=link.gbytes_per_s, overlap=overlap)
        for b in batches:
            one = single(adapters, rank, b, seq)
            rows.append(dict(base, gpus=1, per_adapter_batch=b, impl="single", padded=0, compute_ms=one.seconds * 1e3,
                             allgather_ms=0.0, allreduce_ms=0.0, predicted_step_ms=one.seconds * 1e3,
                             predicted_speedup_vs_fsdp=math.nan, source=one.source, extrapolated=one.extrapolated))
            for p in gpus:
                fsdp = fsdp_step(single, shape, p, adapters, rank, b, seq, link, overlap)
                ap = ap_step(single, shape, p, adapters, rank, b, seq, link, overlap)
                for s in (ap, fsdp):
                    rows.append(dict(base, gpus=p, per_adapter_batch=b, impl=s.impl, padded=s.padded,
                                     compute_ms=s.compute_s * 1e3, allgather_ms=s.allgather_s * 1e3,
                                     allreduce_ms=s.allreduce_s * 1e3, predicted_step_ms=s.step_s * 1e3,
                                     predicted_speedup_vs_fsdp=fsdp.step_s / s.step_s, source=s.source,
                                     extrapolated=s.extrapolated))
    df = pd.DataFrame(rows)[COLUMNS]
    return df.sort_values(["model", "layers", "gpus", "per_adapter_batch", "impl"], kind="stable").reset_index(drop=True)


def plot(df: pd.DataFrame):
    """Predicted AP speedup over FSDP vs per-adapter batch, one line per P, a panel per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = df[df.impl == "ap"]
    keys = list(dict.fromkeys(zip(ap.model, ap.layers)))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, (model, layers) in zip(axes[0], keys):
        sub = ap[(ap.model == model) & (ap.layers == layers)]
        for p, g in sub.groupby("gpus"):
            ax.plot(g.per_adapter_batch, g.predicted_speedup_vs_fsdp, marker="o", label=f"P={p}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{model} ({layers} layers)", fontsize=9)
        ax.set_xlabel("per-adapter batch")
    axes[0][0].set_ylabel("predicted AP speedup over FSDP")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{df.gpu_type.iloc[0]}: 8 adapters, 256 tokens, source {'/'.join(sorted(set(df.source)))}",
                 fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> list[Path]:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="append", help="GPU type(s) of the cost model (default: H100 and H200)")
    ap.add_argument("--profile", action="append", help="CostProfile CSV(s) (default: traces/profiles/*.csv)")
    ap.add_argument("--backbone", action="append", help=f"model[:layers=N] (default: {', '.join(BACKBONES)})")
    ap.add_argument("--gpus", default="2,4,8")
    ap.add_argument("--batches", default="1,2,4,8", help="per-adapter batch sizes")
    ap.add_argument("--adapters", type=count(1, 4096), default=8)
    ap.add_argument("--lora-rank", type=count(1, 4096), default=16)
    ap.add_argument("--seq", type=count(1, 1 << 20), default=256)
    ap.add_argument("--link-gbytes", type=finite(1e-3, 1e6), default=360.0,
                    help="GB/s per GPU for collectives (default 360: NCCL bus bandwidth of NVLink 4 nodes)")
    ap.add_argument("--config", help="a run config: take the link from its cluster.link_gbps (Gbit/s) instead")
    ap.add_argument("--overlap", type=share, default=0.7, help="share of the all-gather hidden behind compute")
    ap.add_argument("--profile-method", default="interp", choices=("interp", "hostgpu"),
                    help="how step times are read from the profiles (altosim.cost.profile.ProfileTable)")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args(argv)
    gpus, batches = ap.int_list("--gpus", args.gpus), ap.int_list("--batches", args.batches)
    link_gb = args.link_gbytes
    if args.config is not None:
        if not args.config.strip():
            ap.error("--config: empty; give a run config file, or leave the flag out")
        from altosim.schemas import load_config

        link_gb = load_config(args.config).cluster.link_gbps / 8
    link = Link(gbytes_per_s=link_gb)
    paths = [Path(p) for p in args.profile] if args.profile else sorted((ROOT / "traces/profiles").glob("*.csv"))
    profile = merge_profiles(paths)
    written = []
    for gpu in args.gpu or ["H100", "H200"]:
        cost = cost_model_for(gpu, link_gb, profile=profile, method=args.profile_method)
        df = predict(cost, args.backbone or list(BACKBONES), gpus, batches, args.adapters,
                     args.lora_rank, args.seq, link, args.overlap)
        path = Path(args.out) / f"parallel_predicted_{gpu.lower()}.csv"
        write_csv(df.round(4), path)
        save_fig(plot(df), path.with_suffix(".png"))
        print(f"wrote {path} ({len(df)} rows; sources: {', '.join(sorted(set(df.source)))}; "
              f"{int(df.extrapolated.sum())} extrapolated)")
        written.append(path)
    return written


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
