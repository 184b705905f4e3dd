"""The paper's component study in simulation: batching (B), scheduler (S), early exit (EE).

Runs the six combinations on the embedded 11-task, 8-GPU workload (or a given config) and
reports makespan normalized to batching only, next to the paper's figures
(1.00, 1.46, 1.80, 1.50, 3.48, 5.22). Writes results/sim_ablation.csv and .png.

    python experiments/sim_ablation.py [CONFIG] [--out results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from altosim.presets import ABLATION, PAPER_ABLATION, preset_policy
from altosim.report import save_fig, write_csv
from altosim.schemas import config_from_dict, load_config
from altosim.simulate import load_inputs, simulate


def run(config: str | None) -> pd.DataFrame:
    base = load_config(config)
    inputs = load_inputs(base)
    rows = []
    for name in ["sequential", *ABLATION]:  # sequential: one job at a time, FIFO (for reference)
        data = base.model_dump()
        data["policy"].update(preset_policy(name))
        r = simulate(config_from_dict(data, base.file), inputs, label=name, record_log=False)
        rows.append(r.summary)
        print(f"{name:22s} makespan {r.summary['makespan_h']:.2f} h  samples saved "
              f"{r.summary['samples_saved']:.1%}  regret {r.summary['mean_regret']:.4f}", file=sys.stderr)
    df = pd.DataFrame(rows)
    ref = df.loc[df["policy"] == "batching_only", "makespan_h"].iloc[0]
    df.insert(1, "speedup_vs_batching", ref / df["makespan_h"])
    df.insert(2, "paper_speedup", df["policy"].map(PAPER_ABLATION))
    df.insert(3, "speedup_vs_sequential", df.loc[df["policy"] == "sequential", "makespan_h"].iloc[0] / df["makespan_h"])
    return df


def plot(df: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df[df["policy"] != "sequential"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(df))
    ax.bar([i - 0.2 for i in x], df["speedup_vs_batching"], 0.4, label="ours (simulated)")
    ax.bar([i + 0.2 for i in x], df["paper_speedup"], 0.4, label="ALTO paper (8xH100)")
    ax.set_xticks(list(x), df["policy"], rotation=20)
    ax.set_ylabel("makespan speedup vs batching only")
    ax.legend()
    ax.set_title("Component study: 11 tasks on 8 GPUs")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?")
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    df = run(args.config)
    out = Path(args.out)
    write_csv(df, out / "sim_ablation.csv")
    save_fig(plot(df), out / "sim_ablation.png")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(df[["policy", "speedup_vs_batching", "paper_speedup", "speedup_vs_sequential", "makespan_h", "samples_saved",
                  "mean_regret", "gpu_busy_share"]].to_string(index=False))


if __name__ == "__main__":
    main()
