"""The paper's component study in simulation: batching (B), scheduler (S), early exit (EE).

Runs the six combinations on two workloads and reports makespan normalized to batching only,
next to the paper's figures (1.00, 1.46, 1.80, 1.50, 3.48, 5.22):
- "default": the embedded 11-task, 8-GPU workload (or a given config's), all arriving at once;
- "spread": the same tasks three times over (33), each sample budget scaled by a factor drawn
  log-uniformly in [1/3, 3] and arrivals a Poisson process (mean gap `--gap` s), seeded, so task
  sizes and arrivals spread as on a shared cluster and queues form.
Writes OUT/sim_ablation.csv (one row per workload and policy) and .png.

    python experiments/sim_ablation.py [CONFIG] --out results [--workloads default,spread]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from altosim.argparser import OneLineParser, finite
from altosim.outdir import check_out
from altosim.presets import ABLATION, PAPER_ABLATION, preset_policy
from altosim.report import save_fig, write_csv
from altosim.schemas import WorkloadTrace, config_from_dict, load_config
from altosim.simulate import load_inputs, simulate


def spread_workload(wl: WorkloadTrace, copies: int = 3, gap: float = 400.0, seed: int = 0) -> WorkloadTrace:
    """`copies` rounds of the workload's tasks, budgets scaled log-uniformly in [1/3, 3], Poisson
    arrivals with mean gap `gap` seconds (module docstring)."""
    rng = np.random.default_rng(seed)
    tasks, t = [], 0.0
    for c in range(copies):
        for rec in wl.tasks:
            scale = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
            tasks.append(rec.model_copy(update={
                "id": f"{rec.id}-{c}", "arrival": round(t, 3),
                "samples_per_job": max(1, round(rec.samples_per_job * scale))}))
            t += float(rng.exponential(gap))
    return wl.model_copy(update={"tasks": tasks, "name": f"{wl.name} (spread)"})


def run(config: str | None, workload: str = "default", gap: float = 400.0) -> pd.DataFrame:
    base = load_config(config)
    inputs = load_inputs(base)
    if workload == "spread":
        inputs = load_inputs(base, workload=spread_workload(inputs.workload, gap=gap))
    rows = []
    for name in ["sequential", *ABLATION]:  # sequential: one job at a time, FIFO (for reference)
        data = base.model_dump()
        data["policy"].update(preset_policy(name))
        r = simulate(config_from_dict(data, base.file), inputs, label=name, record_log=False)
        rows.append(r.summary)
        print(f"{workload:8s} {name:22s} makespan {r.summary['makespan_h']:.2f} h  samples saved "
              f"{r.summary['samples_saved']:.1%}  regret {r.summary['mean_regret']:.4f}", file=sys.stderr)
    df = pd.DataFrame(rows)
    df.insert(0, "workload", workload)
    ref = df.loc[df["policy"] == "batching_only", "makespan_h"].iloc[0]
    df.insert(1, "speedup_vs_batching", ref / df["makespan_h"])
    df.insert(2, "paper_speedup", df["policy"].map(PAPER_ABLATION))
    df.insert(3, "speedup_vs_sequential", df.loc[df["policy"] == "sequential", "makespan_h"].iloc[0] / df["makespan_h"])
    return df


def plot(df: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df[df["policy"] != "sequential"]
    names = list(dict.fromkeys(df["workload"]))
    fig, axes = plt.subplots(1, len(names), figsize=(8 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        d = df[df["workload"] == name].reset_index(drop=True)
        x = range(len(d))
        ax.bar([i - 0.2 for i in x], d["speedup_vs_batching"], 0.4, label="ours (simulated)")
        ax.bar([i + 0.2 for i in x], d["paper_speedup"], 0.4, label="ALTO paper (8xH100)")
        ax.set_xticks(list(x), d["policy"], rotation=20)
        ax.set_ylabel("makespan speedup vs batching only")
        ax.legend()
        ax.set_title(f"Component study, {name} workload: {int(d['tasks'].iloc[0])} tasks on {int(d['gpus'].iloc[0])} GPUs")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?")
    ap.add_argument("--out", default="results")
    ap.add_argument("--workloads", default="default,spread", help="comma-separated: default, spread")
    ap.add_argument("--gap", type=finite(0, 1e9), default=400.0, help="mean arrival gap of the spread workload, s")
    args = ap.parse_args()
    names = args.workloads.split(",")
    if not names or any(n not in ("default", "spread") for n in names) or not args.gap > 0:
        print(f"error: --workloads takes default and/or spread and --gap > 0, got {args.workloads!r}, {args.gap!r}",
              file=sys.stderr)
        sys.exit(2)
    out = check_out(args.out)  # a file or an unwritable place: said before the simulations, not after
    df = pd.concat([run(args.config, n, args.gap) for n in names], ignore_index=True)
    write_csv(df, out / "sim_ablation.csv")
    save_fig(plot(df), out / "sim_ablation.png")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(df[["workload", "policy", "speedup_vs_batching", "paper_speedup", "speedup_vs_sequential", "makespan_h", "samples_saved",
                  "mean_regret", "gpu_busy_share"]].to_string(index=False))


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
