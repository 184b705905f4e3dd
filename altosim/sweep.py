"""Figures for `alto sweep` and the ablation: makespan and samples saved per policy."""

from __future__ import annotations

from typing import Any

import pandas as pd


def plot_sweep(df: pd.DataFrame) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, col, label in zip(axes, ["makespan_h", "samples_saved", "mean_regret"],
                              ["makespan (h)", "samples saved (share of full sweep)", "mean regret (val loss)"]):
        piv = df.pivot_table(index="policy", columns="workload", values=col, sort=False)
        piv.plot.bar(ax=ax, legend=len(piv.columns) > 1, rot=30)
        ax.set_ylabel(label)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig
