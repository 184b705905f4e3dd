"""Tables and figures of one simulated (or real) run: summary.csv, tasks.csv, events.jsonl, PNGs.

Every figure is drawn from a table the same run writes (ARCHITECTURE rule 5), and every file is
written to a temporary name first and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from altosim.outdir import file_mode
from altosim.sim.engine import Curve, SimResult
from altosim.policy.types import TaskSpec


def true_best(task: TaskSpec, curve: Callable[[Any], Curve],
              memo: dict[tuple[int, int, int], tuple[Curve, float]] | None = None) -> tuple[str, float]:
    """The config a full sweep would pick: lowest val loss at any of its evaluation points.
    `memo` (shared across tasks) keeps each (curve, total steps, eval interval)'s best: tasks of
    a workload share few curves and budgets; it holds the curve, so no id is reused."""
    memo = {} if memo is None else memo
    best_id, best = "", math.inf
    for job in task.jobs:
        c = curve(job)
        total, every = task.total_steps(job), task.eval_every_steps(job)
        hit = memo.get((id(c), total, every))
        if hit is None:
            steps = [*range(every, total, every), total]
            v = min((c.val_at(s / total) for s in steps), default=math.inf)
            hit = memo[id(c), total, every] = (c, v if math.isfinite(v) else math.inf)
        v = hit[1]
        if v < best:
            best_id, best = job.job_id, v
    return best_id, best


def task_table(res: SimResult, tasks: Iterable[TaskSpec], curve: Callable[[Any], Curve],
               regret: bool = True, sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per task; `regret=False` skips the full-sweep comparison (huge replays). `sources`:
    where each task's step costs came from (a `cost_source` column). A rigid task has no configs,
    samples or result: its row says `kind` rigid and only its times count."""
    rows = []
    memo: dict[tuple[int, int, int], tuple[Curve, float]] = {}
    for t in tasks:
        o = res.tasks[t.task_id]
        if t.rigid:
            rows.append(_rigid_row(t, o, sources))
            continue
        tb_id, tb = true_best(t, curve, memo) if regret else ("", math.nan)
        jobs = [res.jobs[j.job_id] for j in t.jobs if j.job_id in res.jobs]
        trained = sum(j.samples for j in jobs)
        reasons: dict[str, int] = {}
        for j in jobs:
            reasons[j.status] = reasons.get(j.status, 0) + 1
        rows.append({
            "task": t.task_id, "model": t.model, "dataset": t.dataset, "gpus": t.gpus,
            "gpu_ids": " ".join(map(str, o.gpu_ids)), "configs": len(t.jobs),
            "arrival_s": o.arrival, "start_s": o.start, "finish_s": o.finish,
            "queue_s": (o.start or 0.0) - o.arrival, "jct_s": (o.finish or 0.0) - o.arrival,
            "samples_trained": trained, "samples_full": t.samples_per_job * len(t.jobs),
            "samples_saved": 1.0 - trained / max(1, t.samples_per_job * len(t.jobs)),
            "best_job": o.best_job, "best_val": o.best_val, "true_best_job": tb_id, "true_best_val": tb,
            "regret": (o.best_val - tb) if o.best_val is not None and math.isfinite(tb) else math.nan,
            "found_true_best": o.best_job == tb_id,
            **_kind_cols(t, sources),
            **{f"exit_{k}": v for k, v in sorted(reasons.items())},
        })
    return pd.DataFrame(rows)


def _kind_cols(t: TaskSpec, sources: Mapping[str, str] | None) -> dict[str, Any]:
    return {"kind": "rigid" if t.rigid else "tuning",
            **({"cost_source": sources.get(t.task_id, "")} if sources is not None else {})}


def _rigid_row(t: TaskSpec, o: Any, sources: Mapping[str, str] | None) -> dict[str, Any]:
    return {
        "task": t.task_id, "model": t.model, "dataset": t.dataset, "gpus": t.gpus,
        "gpu_ids": " ".join(map(str, o.gpu_ids)), "configs": 0,
        "arrival_s": o.arrival, "start_s": o.start, "finish_s": o.finish,
        "queue_s": (o.start or 0.0) - o.arrival, "jct_s": (o.finish or 0.0) - o.arrival,
        "samples_trained": 0, "samples_full": 0, "samples_saved": math.nan,
        "best_job": None, "best_val": None, "true_best_job": "", "true_best_val": math.nan,
        "regret": math.nan, "found_true_best": False, **_kind_cols(t, sources),
    }


def summary_row(res: SimResult, tasks_df: pd.DataFrame, label: str, wall_s: float) -> dict[str, Any]:
    span = max(res.makespan, 1e-9)
    return {
        "policy": label,
        "tasks": len(tasks_df),
        "gpus": res.num_gpus,
        "makespan_h": res.makespan / 3600,
        "mean_jct_h": tasks_df["jct_s"].mean() / 3600 if len(tasks_df) else math.nan,
        "p99_jct_h": tasks_df["jct_s"].quantile(0.99) / 3600 if len(tasks_df) else math.nan,
        "mean_queue_h": tasks_df["queue_s"].mean() / 3600 if len(tasks_df) else math.nan,
        "gpu_busy_share": res.busy_gpu_s / (res.num_gpus * span),
        "samples_trained": res.samples_trained,
        "samples_full": res.samples_full,
        "samples_saved": 1.0 - res.samples_trained / max(1, res.samples_full),
        "mean_regret": tasks_df["regret"].mean() if len(tasks_df) else math.nan,
        "found_true_best": int(tasks_df["found_true_best"].sum()) if len(tasks_df) else 0,
        "sim_events": res.sim_events,
        "wall_s": wall_s,
        "events_per_s": res.sim_events / max(wall_s, 1e-9),
        **_rigid_summary(tasks_df),
    }


def _rigid_summary(tasks_df: pd.DataFrame) -> dict[str, Any]:
    """With rigid tasks in the workload: how many, and mean completion time of each kind."""
    if "kind" not in tasks_df or not (tasks_df["kind"] == "rigid").any():
        return {}
    jct = tasks_df.groupby("kind")["jct_s"].mean() / 3600
    return {"rigid_tasks": int((tasks_df["kind"] == "rigid").sum()),
            "mean_jct_tuning_h": float(jct.get("tuning", math.nan)), "mean_jct_rigid_h": float(jct["rigid"])}


# ---------------------------------------------------------------------------------------------
# atomic writers
# ---------------------------------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic(Path(path), lambda p: df.to_csv(p, index=False))


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    def w(p: Path) -> None:
        with open(p, "w") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")

    _atomic(Path(path), w)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_fig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        _atomic(Path(path), lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def try_plot(make_fig: Callable[[], Any], path: Path) -> str | None:
    """Draw and save one figure; on failure return one line naming the plot and why (the tables
    it is drawn from are written anyway), instead of losing the run's other outputs."""
    from altosim.errors import one_line

    try:
        save_fig(make_fig(), path)
    except (ValueError, OverflowError, MemoryError, RuntimeError) as e:
        return f"could not draw {Path(path).name}: {one_line(e, 200)}"
    return None


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


GANTT_MAX_INCHES = 60.0  # a 10^5-GPU timeline stays a drawable figure (rows merge, no labels)


def gantt_frame(res: SimResult) -> pd.DataFrame:
    return pd.DataFrame(res.gantt, columns=["task", "gpu", "start_s", "end_s"])


def plot_gantt(gantt: pd.DataFrame, num_gpus: int, title: str, rigid: Iterable[str] = ()) -> Any:
    """GPU timeline, one colour per task; `rigid` tasks' bars are grey and hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, min(0.35 * num_gpus + 1.5, GANTT_MAX_INCHES)))
    tasks = sorted(gantt["task"].unique())
    cmap = plt.get_cmap("tab20")
    color = {t: cmap(i % 20) for i, t in enumerate(tasks)}
    fixed = set(rigid)
    color.update((t, "lightgrey") for t in fixed)
    if len(gantt):  # one call for all bars: a timeline of 10^5 GPUs draws in seconds
        ax.barh(gantt["gpu"], (gantt["end_s"] - gantt["start_s"]) / 3600, left=gantt["start_s"] / 3600,
                color=[color[t] for t in gantt["task"]], edgecolor="black", linewidth=0.3 if num_gpus <= 256 else 0,
                hatch=None if not fixed else [("//" if t in fixed else "") for t in gantt["task"]])
        if fixed:
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(facecolor="lightgrey", hatch="//", edgecolor="black", label="rigid job")],
                      loc="upper right", fontsize=7)
    for row in gantt.itertuples() if num_gpus <= 32 else ():
        if (row.end_s - row.start_s) > 0.03 * max(gantt["end_s"].max(), 1):
            ax.text((row.start_s + row.end_s) / 7200, row.gpu, row.task, ha="center", va="center", fontsize=6)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("GPU")
    ax.invert_yaxis()
    ax.set_title(title)
    return fig


def report_frame(log: list[dict[str, Any]]) -> pd.DataFrame:
    """All StepReports of an event log, plus the stop reason of each job at its last report."""
    rows, stops = [], {}
    for rec in log:
        ev = rec["event"]
        if ev["kind"] == "step_report":
            rows.append({k: ev[k] for k in ("now", "task_id", "job_id", "step", "samples", "train_loss", "val_loss")})
        for a in rec["actions"]:
            if a["kind"] == "stop":
                stops[a["job_id"]] = a["reason"]
    df = pd.DataFrame(rows, columns=["now", "task_id", "job_id", "step", "samples", "train_loss", "val_loss"])
    df["exit"] = [stops.get(j, "") for j in df["job_id"]]
    return df


MAX_LABELLED = 24  # configs named in a loss plot's legend; more draw unlabelled


def plot_losses(reports: pd.DataFrame, task_id: str, labels: dict[str, str] | None = None) -> Any:
    """Val loss vs samples for every job of one task, with a marker where each job exited;
    `labels` (job id -> its hyperparameters) names each curve in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    marks = {"diverging": ("x", "red"), "overfitting": ("^", "orange"), "underperforming": ("v", "grey"),
             "pruned": ("v", "purple"), "": ("o", "green")}
    df = reports[reports["task_id"] == task_id]
    named = labels is not None and df["job_id"].nunique() <= MAX_LABELLED
    for job_id, g in df.groupby("job_id", sort=True):
        g = g.dropna(subset=["val_loss"])
        if g.empty:
            continue
        ax.plot(g["samples"], g["val_loss"], lw=0.7, alpha=0.6,
                label=(labels or {}).get(job_id, job_id) if named else None)
        m, c = marks.get(g["exit"].iloc[-1], ("s", "black"))
        ax.scatter(g["samples"].iloc[-1], g["val_loss"].iloc[-1], marker=m, color=c, s=18, zorder=3)
    for reason, (m, c) in marks.items():
        ax.scatter([], [], marker=m, color=c, label=reason or "ran to the end")
    ax.set_xlabel("samples trained")
    ax.set_ylabel("val loss")
    if (df["val_loss"].dropna() > 0).all():  # a loss <= 0 cannot be drawn on a log axis
        ax.set_yscale("log")
    ax.set_title(f"{task_id}: val loss per config, with exit points")
    ax.legend(fontsize=7)
    return fig
