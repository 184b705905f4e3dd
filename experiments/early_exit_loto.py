"""Early exit chosen for the worst case: leave-one-task-out over every real trace set (issue 25).

Tasks: every real loss-trace set under traces/real/ (found at run time: a new set joins without a
code change, whatever its grid size, evaluation count or budget), each replayed alone on one GPU
with batching through the simulator and the project's own Controller (`sim_row`).

1. A grid of ALTO cut schedules (`CANDIDATES`: first rung, rung spacing, share kept, noise band,
   ranking signal; jobs held at their rungs, the paper's diverging and overfitting rules on) is
   replayed on every task.
2. Acceptable on a task: the val the task's result reached ranks 1st or 2nd among the grid's
   full-run best vals, or its val-loss regret is <= 0.5%. Choice (`choose`): among the candidates acceptable on every
   task of a training set, the one with the highest MINIMUM samples saved (then mean, then grid
   order); if none, the most tasks acceptable, then the minimum saved.
3. Leave-one-task-out: for each task, choose on all the others and replay the choice on it. The
   shipped default is the choice on all tasks (`Alto()` must equal it; the study says so).
4. Baselines at equal samples, on every task: Optuna's SuccessiveHalving, Hyperband and Median
   pruners through Optuna's own API (`optuna_row`), and Ray Tune's ASHA rule (our `asha` policy,
   a line-by-line port of Ray's async_hyperband.py `_Bracket`; Ray itself is not installed).

Writes <out>/early_exit_loto.csv (every task x policy row), early_exit_loto_candidates.csv (the
grid's scores), early_exit_loto.md (tables) and early_exit_loto.png.

    python experiments/early_exit_loto.py [--out results] [--quick] [--jobs N]
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from altosim.argparser import OneLineParser, count
from altosim.policy.early_exit import Alto
from altosim.policy.early_exit.alto import PAPER_PARAMS, PREVIOUS_PARAMS
from altosim.report import save_fig, write_csv
from altosim.schemas import PolicyRef
from altosim.simulate import Inputs
from altosim.tuning import task_inputs
from experiments.early_exit_study import (ROOT, StudyTask, eval_steps, optuna_pruners, optuna_row, optuna_specs, real_tasks,
                                         sim_row)

RANK_OK, REGRET_OK, SAVED_GOAL = 2, 0.005, 0.75

GRID: dict[str, tuple[Any, ...]] = {
    "warmup_ratio": (0.02, 0.04),
    "cut_spacing": (2.5, 3.0),
    "select_ratio": (0.5, 0.6, 0.7),
    # (noise_z, noise_floor): rank alone, then ever wider bands
    "band": ((0.0, 0.01), (1.0, 0.01), (2.0, 0.01), (2.0, 0.03)),
    # (div_patience = ovf_patience, plateau_ratio): the per-job exits, the paper's and gentler
    "exits": ((0.02, 0.15), (0.05, 0.15), (0.05, 0.25)),
}
QUICK_GRID: dict[str, tuple[Any, ...]] = {
    "warmup_ratio": (0.02,), "cut_spacing": (2.5,), "select_ratio": (0.5,),
    "band": ((0.0, 0.01), (1.0, 0.02)), "exits": ((0.05, 0.15),),
}


def candidates(grid: dict[str, tuple[Any, ...]] = GRID) -> list[dict[str, Any]]:
    """Alto parameter sets of the grid, in a fixed order (every other parameter: Alto's default)."""
    out = []
    for values in itertools.product(*grid.values()):
        p = dict(zip(grid, values))
        p["noise_z"], p["noise_floor"] = p.pop("band")
        patience, p["plateau_ratio"] = p.pop("exits")
        p["div_patience"] = p["ovf_patience"] = patience
        out.append({**p, "cuts": 10, "hold_at_gate": True})
    return out


def baselines(n_evals: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, family, params) of the simulated rivals; Optuna's come from `optuna_pruners`."""
    return [
        ("none", "none", {}),
        ("alto_paper", "alto", dict(PAPER_PARAMS)),
        ("alto_previous", "alto", dict(PREVIOUS_PARAMS)),
        # Ray Tune ASHA's rule: Ray's defaults (grace 1 of max_t 100, eta 4), and eta 2/3 at 5%
        ("ray_asha", "asha", {"grace_period": 0.01, "reduction_factor": 4.0}),
        ("ray_asha_g5_r2", "asha", {"grace_period": 0.05, "reduction_factor": 2.0}),
        ("ray_asha_g5_r3", "asha", {"grace_period": 0.05, "reduction_factor": 3.0}),
    ]


def rank_of(inputs: Inputs, row: dict[str, Any]) -> int:
    """The rank the task's result earns among the grid's full-run best vals: 1 + the configs
    whose full-run best beats the val actually obtained (a config stopped before its best
    ranks by what it reached, not by what it could have); grid size + 1: no result."""
    task = inputs.tasks[0]
    got = row["best_val"]
    if row["best_job"] is None or not math.isfinite(got):
        return len(task.jobs) + 1
    return 1 + sum(inputs.curves[j.job_id].best_val() < got - 1e-12 for j in task.jobs)


def score(inputs: Inputs, name: str, params: dict[str, Any]) -> dict[str, Any]:
    row = sim_row(inputs, PolicyRef(name=name, params=params))
    row["rank"] = rank_of(inputs, row)
    row["acceptable"] = bool(row["rank"] <= RANK_OK or row["rel_regret"] <= REGRET_OK)
    return row


def choose(table: pd.DataFrame, tasks: list[str]) -> int:
    """Candidate index chosen on `tasks` (rows: cand, task, samples_saved, acceptable)."""
    t = table[table["task"].isin(tasks)].groupby("cand")
    agg = pd.DataFrame({"ok": t["acceptable"].sum(), "min": t["samples_saved"].min(),
                        "mean": t["samples_saved"].mean()}).reset_index()
    agg = agg.sort_values(["ok", "min", "mean", "cand"], ascending=[False, False, False, True], kind="stable")
    return int(agg.iloc[0]["cand"])


def _score_candidates(t: StudyTask, cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every candidate replayed on one task (a worker's share of the grid)."""
    t0 = time.perf_counter()
    inp = task_inputs(t.record, t.loss_set, t.synthetic)
    rows = [{"cand": i, "task": t.record.id, **score(inp, "alto", p)} for i, p in enumerate(cands)]
    print(f"{t.record.id}: {len(cands)} candidates in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return rows


def run(tasks: list[StudyTask], cands: list[dict[str, Any]], optuna: bool = True,
        jobs: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidate table, policy rows incl. LOTO, shipped default and baselines)."""
    inputs = {t.record.id: task_inputs(t.record, t.loss_set, t.synthetic) for t in tasks}
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            parts = list(pool.map(_score_candidates, tasks, [cands] * len(tasks)))
    else:
        parts = [_score_candidates(t, cands) for t in tasks]
    table = pd.DataFrame([r for part in parts for r in part])
    ids = list(inputs)
    rows = []
    shipped = choose(table, ids)
    for tid, inp in inputs.items():
        base = {"task": tid, "configs": len(inp.tasks[0].jobs),
                "evals": max(len(eval_steps(inp.tasks[0], j)) for j in inp.tasks[0].jobs)}
        others = [t for t in ids if t != tid] or ids
        k = choose(table, others)
        pick = table[(table["cand"] == k) & (table["task"] == tid)].iloc[0].to_dict()
        rows.append({**base, "policy": "alto_loto", "family": "alto", "params": repr(cands[k]), **_strip(pick)})
        pick = table[(table["cand"] == shipped) & (table["task"] == tid)].iloc[0].to_dict()
        rows.append({**base, "policy": "alto_shipped", "family": "alto", "params": repr(cands[shipped]), **_strip(pick)})
        rows.append({**base, "policy": "alto", "family": "alto", "params": "Alto()", **score(inp, "alto", {})})
        for label, name, params in baselines(base["evals"]):
            rows.append({**base, "policy": label, "family": name, "params": repr(params), **score(inp, name, params)})
        if optuna:
            # the pruner's class and arguments: its repr names a memory address, new each run
            specs = {label: f"{cls}({kw})" for label, cls, kw in optuna_specs(base["evals"])}
            for label, pruner in optuna_pruners(base["evals"]):
                r = optuna_row(inp, label, pruner)
                r["rank"] = rank_of(inp, r)
                r["acceptable"] = bool(r["rank"] <= RANK_OK or r["rel_regret"] <= REGRET_OK)
                rows.append({**base, "policy": label, "family": "optuna", "params": specs[label], **r})
    return table, pd.DataFrame(rows)


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("cand", "task")}


def _cell(r: pd.Series) -> str:
    return f"{r['samples_saved']:.1%} / {int(r['rank'])} / {r['rel_regret']:.2%}"


def report(table: pd.DataFrame, rows: pd.DataFrame, cands: list[dict[str, Any]]) -> str:
    """The markdown tables: per task, LOTO figures, the spread, the comparison with the rivals."""
    ids = list(dict.fromkeys(rows["task"]))
    shipped = choose(table, ids)
    default_ok = Alto(**cands[shipped]).params() == Alto().params()
    lo = rows[rows["policy"] == "alto_loto"]
    lines = ["# Early exit chosen for the worst case (leave-one-task-out, every real task)", "",
             f"Acceptable: the val the task's result reached ranks <= {RANK_OK} among the grid's full-run best "
             f"vals (rank: 1 + the configs whose full-run best is lower), or its val regret is <= {REGRET_OK:.1%}. Choice: acceptable on every training task, then the highest MINIMUM "
             f"samples saved. Candidates: {len(cands)} (`experiments/early_exit_loto.py` GRID); tasks: {len(ids)}.", "",
             f"Shipped default (chosen on all tasks): `{cands[shipped]}`; `Alto()` equals it: **{default_ok}**.", "",
             "## Leave-one-task-out (params chosen on the other tasks, replayed on the held-out one)", "",
             "| task | configs | evals | samples saved | rank kept | val regret | acceptable | >= 75% saved and "
             "acceptable | params chosen on the others |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in lo.iterrows():
        lines.append(f"| {r['task']} | {r['configs']} | {r['evals']} | {r['samples_saved']:.1%} | {int(r['rank'])} | "
                     f"{r['rel_regret']:.2%} | {r['acceptable']} | "
                     f"{bool(r['acceptable'] and r['samples_saved'] >= SAVED_GOAL)} | `{r['params']}` |")
    lines += ["", f"Spread over held-out tasks: samples saved min {lo['samples_saved'].min():.1%}, median "
              f"{lo['samples_saved'].median():.1%}, max {lo['samples_saved'].max():.1%}; acceptable on "
              f"{int(lo['acceptable'].sum())}/{len(lo)}; worst rank {int(lo['rank'].max())}; worst regret "
              f"{lo['rel_regret'].max():.2%}. Acceptance (rank 1-2 or regret <= 0.5% at >= 75% saved on every "
              f"task): **{bool((lo['acceptable'] & (lo['samples_saved'] >= SAVED_GOAL)).all())}**.", ""]
    pols = list(dict.fromkeys(p for p in rows["policy"] if p not in ("alto_loto",)))
    lines += ["## Per task: samples saved / rank of the chosen config / val regret", "",
              "| policy | " + " | ".join(ids) + " | min saved | all acceptable |", "|---" * (len(ids) + 3) + "|"]
    for p in pols:
        d = rows[rows["policy"] == p].set_index("task")
        lines.append(f"| {p} | " + " | ".join(_cell(d.loc[t]) for t in ids)
                     + f" | {d['samples_saved'].min():.1%} | {bool(d['acceptable'].all())} |")
    lines += ["", *compare(rows, ids), ""]
    best = table.groupby("cand").agg(ok=("acceptable", "sum"), min_saved=("samples_saved", "min"))
    best = best.sort_values(["ok", "min_saved"], ascending=False).head(8)
    lines += ["## The grid's best candidates on all tasks", "", "| params | tasks acceptable | min saved |",
              "|---|---|---|"]
    lines += [f"| `{cands[int(i)]}` | {int(r['ok'])}/{len(ids)} | {r['min_saved']:.1%} |" for i, r in best.iterrows()]
    return "\n".join(lines) + "\n"


def compare(rows: pd.DataFrame, ids: list[str], ours: str = "alto", tol: float = 0.02) -> list[str]:
    """Ours vs every rival (Optuna and Ray ASHA), per task: regret at equal samples (the best
    rival row training at most our samples + tol of the sweep), and samples saved."""
    rivals = rows[rows["family"].isin(["optuna", "asha"])]
    out = [f"## `{ours}` vs Optuna's pruners and Ray Tune's ASHA rule", "",
           "| task | ours: saved / regret | best rival regret at <= our samples + 2% (which) | rivals saving "
           "less than ours | best rival regret at any samples |", "|---|---|---|---|---|"]
    no_worse = more = 0
    for t in ids:
        o = rows[(rows["policy"] == ours) & (rows["task"] == t)].iloc[0]
        rv = rivals[rivals["task"] == t]
        eq = rv[rv["samples_share"] <= o["samples_share"] + tol]
        be = eq.loc[eq["rel_regret"].idxmin()] if not eq.empty else None
        less = int((rv["samples_saved"] < o["samples_saved"]).sum())
        no_worse += be is None or o["rel_regret"] <= be["rel_regret"] + 1e-12
        more += less > len(rv) / 2
        out.append(f"| {t} | {o['samples_saved']:.1%} / {o['rel_regret']:.2%} | "
                   + (f"{be['rel_regret']:.2%} ({be['policy']})" if be is not None else "none comparable")
                   + f" | {less}/{len(rv)} | {rv['rel_regret'].min():.2%} |")
    out += ["", f"Regret no worse than the best rival at equal samples on {no_worse}/{len(ids)} tasks; more samples "
            f"saved than most rivals on {more}/{len(ids)}."]
    return out


def plot(rows: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(dict.fromkeys(rows["task"]))
    cols = min(4, len(ids))
    fig, axes = plt.subplots(math.ceil(len(ids) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(ids) / cols)),
                             squeeze=False)
    style = {"alto": ("tab:red", "*"), "optuna": ("tab:orange", "s"), "asha": ("tab:blue", "o"), "none": ("black", "X")}
    for ax, t in zip(axes.flat, ids):
        d = rows[rows["task"] == t]
        for fam, (c, m) in style.items():
            s = d[d["family"] == fam]
            ax.scatter(s["samples_saved"], s["rel_regret"] * 100, c=c, marker=m, label=fam, s=30, alpha=0.8)
        o = d[d["policy"] == "alto"]
        ax.scatter(o["samples_saved"], o["rel_regret"] * 100, c="red", marker="*", s=160, label="alto (default)")
        ax.axvline(SAVED_GOAL, color="grey", lw=0.5, ls="--")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("samples saved")
        ax.set_ylabel("val regret, % (symlog)")
    for ax in axes.flat[len(ids):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--quick", action="store_true", help="a 2-candidate grid, no Optuna (for tests)")
    ap.add_argument("--jobs", type=count(1, 1024), default=1, help="worker processes for the candidate grid")
    args = ap.parse_args(argv)
    tasks = real_tasks()
    if not tasks:
        print("early_exit_loto: no real trace sets under traces/real/", file=sys.stderr)
        return 2
    cands = candidates(QUICK_GRID if args.quick else GRID)
    t0 = time.perf_counter()
    table, rows = run(tasks, cands, optuna=not args.quick, jobs=max(1, args.jobs))
    text = report(table, rows, cands)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table.assign(params=table["cand"].map(lambda i: repr(cands[i]))), out / "early_exit_loto_candidates.csv")
    write_csv(rows, out / "early_exit_loto.csv")
    (out / "early_exit_loto.md").write_text(text)
    save_fig(plot(rows), out / "early_exit_loto.png")
    print(text)
    print(f"done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
