"""Fidelity results as rows (metric, value, goal, pass, note) and the timeline figure."""

from __future__ import annotations

import math
from typing import Any

from altosim.fidelity.replay import compare_decisions
from altosim.fidelity.runlog import completion_times


def replay_rows(mode: str, real: list[dict[str, Any]], sim: list[dict[str, Any]],
                makespan_goal: float = 0.10) -> list[dict[str, Any]]:
    """metric, value, goal, pass, note rows for one replay."""
    rc, sc = completion_times(real), completion_times(sim)
    mr, ms = max(rc.values(), default=0.0), max(sc.values(), default=0.0)
    err = abs(ms - mr) / mr if mr > 0 else math.nan
    rows = [row(f"{mode}.makespan_real_s", mr), row(f"{mode}.makespan_sim_s", ms),
            row(f"{mode}.makespan_rel_err", err, f"<= {makespan_goal:g}", err <= makespan_goal)]
    for tid in sorted(rc):
        s = sc.get(tid, math.nan)
        rows += [row(f"{mode}.completion_real_s[{tid}]", rc[tid]), row(f"{mode}.completion_sim_s[{tid}]", s),
                 row(f"{mode}.completion_rel_err[{tid}]", abs(s - rc[tid]) / rc[tid] if rc[tid] > 0 else math.nan)]
    d = compare_decisions(real, sim)
    note = "" if d.first is None else f"first difference at decision {d.first}: real {d.real_at} | simulated {d.sim_at}"
    rows += [row(f"{mode}.decisions_real", d.real), row(f"{mode}.decisions_sim", d.sim),
             row(f"{mode}.decisions_identical", d.identical, f"== {d.real} (all)", d.first is None, note),
             row(f"{mode}.first_divergence", -1 if d.first is None else d.first, "-1 (none)", d.first is None)]
    failed = sum(1 for x in real if x["kind"] == "job_failed")
    if failed:
        rows.append(row(f"{mode}.real_job_failures", failed, note="replayed at the failing step (estimated from "
                        "time when no report shares that step)"))
    return rows


# what a replay charges (RuntimeCosts.charged) -> the run's summary.csv phases it stands for
PHASE_OF = {"step": "step", "new_shape": "step", "validate": "validate", "snapshot": "snapshot",
            "start_task": "start_task", "admit": "admit", "suspend": "suspend", "stop": "stop",
            "finish_task": "finish_task", "job_finished": "job_finished"}


def phase_rows(mode: str, charged: dict[str, float], real: dict[str, float]) -> list[dict[str, Any]]:
    """Where the time went, simulated beside real: one row per run phase (summary.csv `<phase>_s`,
    host wall seconds) with the simulated seconds that stand for it; a real phase nothing charges
    (data loading, the policy's own bookkeeping) says it is not modelled."""
    sim: dict[str, float] = {}
    for what, s in charged.items():
        sim[PHASE_OF.get(what, what)] = sim.get(PHASE_OF.get(what, what), 0.0) + s
    rows = []
    for ph in sorted(set(sim) | set(real), key=lambda p: (-real.get(p, 0.0), p)):
        r, s = real.get(ph), sim.get(ph)
        parts = [f"real {r:.3g} s" if r is not None else "real: not logged"]
        if ph == "step" and "new_shape" in charged:
            parts.append(f"of which new step shapes {charged['new_shape']:.3g} s simulated")
        if s is None:
            parts.append("not modelled")
        rows.append(row(f"{mode}.phase_s[{ph}]", 0.0 if s is None else s, note="; ".join(parts)))
    return rows


def row(metric: str, value: Any, goal: str = "", ok: bool | str = "", note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "goal": goal, "pass": ok, "note": note}


def step_rows(errs: list[dict[str, Any]], goal: float | None = 0.05, prefix: str = "") -> list[dict[str, Any]]:
    """Rows of `step_time_errors`; `goal` None for a reference predictor (no pass/fail)."""
    rows = []
    for e in errs:
        m, med = e["model"], e["median_rel_err"]
        rows += [row(f"step_ms.{prefix}heldout_points[{m}]", e["points"],
                     note=f"{e.get('extrapolated', 0)} of them outside the fit rows' range (extrapolated)"),
                 row(f"step_ms.{prefix}median_rel_err[{m}]", med, *((f"<= {goal:g}", med <= goal) if goal else ())),
                 row(f"step_ms.{prefix}p90_rel_err[{m}]", e["p90_rel_err"])]
    return rows


def gpu_label(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3' (for file names)."""
    return "_".join("".join(c if c.isalnum() or c in ".-" else " " for c in device).split()) or "unknown"


def plot_timelines(frame: Any, title: str) -> Any:
    """One bar per job stretch: real (top) and simulated (below) on the same time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [s for s in ("real", "measured", "model", "profile", "linear") if s in set(frame["source"])]
    jobs = sorted(set(frame["job"]))
    row = {j: i for i, j in enumerate(jobs)}
    tasks = sorted(set(frame["task"]))
    cmap = plt.get_cmap("tab10")
    color = {t: cmap(i % 10) for i, t in enumerate(tasks)}
    h = min(12.0, 1.0 + 0.06 * len(jobs))
    fig, axes = plt.subplots(len(sources), 1, figsize=(10, h * len(sources)), sharex=True, squeeze=False)
    for ax, src in zip(axes[:, 0], sources):
        f = frame[frame["source"] == src]
        ax.barh([row[j] for j in f["job"]], f["end_s"] - f["start_s"], left=f["start_s"], height=0.8,
                color=[color[t] for t in f["task"]], edgecolor="black", linewidth=0.2)
        ax.set_ylim(len(jobs) - 0.5, -0.5)
        ax.set_yticks([])
        ax.set_ylabel("real run" if src == "real" else f"simulated\n({src} costs)", fontsize=8)
    from matplotlib.patches import Patch

    axes[0, 0].legend(handles=[Patch(color=color[t], label=t) for t in tasks], fontsize=7, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0))
    axes[0, 0].set_xlim(left=0)
    axes[0, 0].set_title(f"{title}: one row per job, a bar while it is in its task's group")
    axes[-1, 0].set_xlabel("time since the run started (s)")
    return fig
