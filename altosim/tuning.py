"""Self-tuning early exit: pick ALTO's thresholds by simulating them on the traces of *other* tasks.

The paper hand-tunes its warm-up ratio, select ratio and thresholds. Here a seeded grid of Alto
parameter sets is replayed in the simulator (one task at a time, one GPU, batching, the same
RunConfig otherwise) on every task except a held-out one (leave-one-task-out); the winner is then
applied to the held-out task, which the search never loads.

Objective (lexicographic, smaller is better; see `Objective`):
1. feasible first: a parameter set is feasible when its relative val-loss regret
   (chosen best val - full-sweep best val) / |full-sweep best val| is <= `max_rel_regret`
   (default 1%) on EVERY training task (the worst case, because the goal is to keep the best
   config on every task, not on average);
2. among feasible sets, the lowest mean share of the full sweep's samples trained;
3. then the lowest mean relative regret, then grid order (deterministic).
With no feasible set, the lowest worst-case regret wins (then samples).

Speed: one (task, params) simulation takes ~20 ms with `record_log=False`; `Evaluator` memoizes
scores per (task, params) so the 12 folds of a study share the simulations (each fold only reads
the scores of its own training tasks, and a task's inputs are loaded on first use only).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from altosim.schemas import LossTraceSet, PolicyRef, RunConfig, TaskRecord, WorkloadTrace
from altosim.simulate import Inputs, load_inputs, simulate

Params = dict[str, Any]
Loader = Callable[[str], Inputs]  # task name -> that task's simulator inputs

# a small grid: 4 * 4 * 4 * 2 * 2 = 256 sets (patience p sets div_patience = ovf_patience, in
# budget fractions); every set keeps Alto's other defaults
GRID: dict[str, tuple[Any, ...]] = {
    "warmup_ratio": (0.02, 0.03, 0.05, 0.1),
    "select_ratio": (0.1, 0.15, 0.25, 0.35),
    "tau_gap": (0.1, 0.3, 1.0, math.inf),
    "tau_slope": (0.1, 1.0),
    "patience": (0.02, 0.04),
}


def grid_params(grid: dict[str, Sequence[Any]] | None = None, sample: int | None = None,
                seed: int = 0) -> list[Params]:
    """Alto parameter sets of the product grid (`patience` -> div_patience = ovf_patience), in a fixed order;
    `sample` keeps a seeded random subset of that many (the paper defaults always included)."""
    grid = dict(GRID if grid is None else grid)
    if not grid:
        raise ValueError("grid must name at least one parameter")
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        p = dict(zip(keys, values))
        if "patience" in p:
            p["div_patience"] = p["ovf_patience"] = p.pop("patience")
        out.append(p)
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be >= 1, got {sample}")
        keep = sorted(random.Random(seed).sample(range(len(out)), min(sample, len(out))))
        out = [out[i] for i in keep]
    defaults: Params = {}
    if defaults not in out:
        out.insert(0, defaults)
    return out


def study_config(early_exit: PolicyRef | str = "alto", params: Params | None = None) -> RunConfig:
    """The study's equal conditions: one task alone on one GPU, batching on, FIFO, the rest default."""
    ref = early_exit if isinstance(early_exit, PolicyRef) else PolicyRef(name=early_exit, params=params or {})
    return RunConfig.model_validate({"cluster": {"gpus": 1}, "policy": {
        "early_exit": ref.model_dump(), "inter_task": "fifo", "batching": True}})


def task_inputs(record: TaskRecord, loss_set: LossTraceSet, synthetic: bool = True) -> Inputs:
    """Simulator inputs for one task run alone on one GPU (its GPU demand is set to 1)."""
    one = WorkloadTrace(name=record.id, synthetic=synthetic, tasks=[record.model_copy(update={"gpus": 1})])
    return load_inputs(study_config(), one, {record.loss_trace or "": loss_set})


@dataclass(frozen=True)
class Score:
    """One (task, params) simulation, reduced to what the objective reads."""

    samples_share: float  # samples trained / full sweep
    rel_regret: float  # (best val - full-sweep best val) / |full-sweep best val|; inf: no result
    found_true_best: bool


def score_run(inputs: Inputs, early_exit: PolicyRef) -> tuple[Score, Any]:
    """Simulate one policy on one task's inputs; (Score, the SimRun)."""
    run = simulate(study_config(early_exit), inputs, record_log=False)
    row = run.tasks_df.iloc[0]
    tb = float(row["true_best_val"])
    regret = float(row["regret"]) if row["best_val"] is not None else math.nan
    rel = regret / abs(tb) if math.isfinite(regret) and tb != 0 else math.inf
    share = float(row["samples_trained"]) / max(1.0, float(row["samples_full"]))
    return Score(share, rel, bool(row["found_true_best"])), run


def _key(params: Params) -> tuple:
    return tuple(sorted(params.items()))


@dataclass
class Evaluator:
    """Memoized score of Alto(params) on a task; inputs come from `load`, on first use only."""

    load: Loader
    _inputs: dict[str, Inputs] = field(default_factory=dict, repr=False)
    _scores: dict[tuple[str, tuple], Score] = field(default_factory=dict, repr=False)

    def __call__(self, task: str, params: Params) -> Score:
        k = (task, _key(params))
        if k not in self._scores:
            if task not in self._inputs:
                self._inputs[task] = self.load(task)
            self._scores[k] = score_run(self._inputs[task], PolicyRef(name="alto", params=params))[0]
        return self._scores[k]

    @property
    def loaded(self) -> list[str]:
        """Tasks whose inputs were loaded so far (tests check the held-out one is absent)."""
        return sorted(self._inputs)


@dataclass(frozen=True)
class Objective:
    """Lexicographic objective (module docstring): feasibility, mean samples, mean regret."""

    max_rel_regret: float = 0.01

    def __post_init__(self) -> None:
        if not (self.max_rel_regret >= 0 and math.isfinite(self.max_rel_regret)):
            raise ValueError(f"max_rel_regret must be a finite number >= 0, got {self.max_rel_regret!r}")

    def key(self, scores: Sequence[Score]) -> tuple[float, ...]:
        worst = max(s.rel_regret for s in scores)
        share = sum(s.samples_share for s in scores) / len(scores)
        mean_rel = sum(s.rel_regret for s in scores) / len(scores)
        if worst <= self.max_rel_regret:
            return (0.0, share, mean_rel)
        return (1.0, worst, share)


@dataclass(frozen=True)
class TuneResult:
    """The chosen parameters and how they did on the training tasks."""

    params: Params
    train_tasks: tuple[str, ...]
    feasible: bool
    mean_samples_share: float
    max_rel_regret: float
    candidates: int

    def provenance(self) -> dict[str, Any]:
        return {"train_tasks": list(self.train_tasks), "feasible": self.feasible,
                "train_mean_samples_share": self.mean_samples_share,
                "train_max_rel_regret": self.max_rel_regret, "candidates": self.candidates}


def tune(train_tasks: Iterable[str], evaluate: Callable[[str, Params], Score],
         candidates: Sequence[Params], objective: Objective = Objective()) -> TuneResult:
    """Best of `candidates` on `train_tasks` by `objective`; reads no other task."""
    tasks = tuple(train_tasks)
    if not tasks:
        raise ValueError("train_tasks must name at least one task")
    if not candidates:
        raise ValueError("candidates must hold at least one parameter set")
    best: tuple[tuple, int, list[Score]] | None = None
    for i, p in enumerate(candidates):
        scores = [evaluate(t, p) for t in tasks]
        k = objective.key(scores)
        if best is None or (k, i) < (best[0], best[1]):
            best = (k, i, scores)
    assert best is not None
    k, i, scores = best
    return TuneResult(dict(candidates[i]), tasks, k[0] == 0.0,
                      sum(s.samples_share for s in scores) / len(scores),
                      max(s.rel_regret for s in scores), len(candidates))


def leave_one_out(held_out: str, tasks: Sequence[str], evaluate: Callable[[str, Params], Score],
                  candidates: Sequence[Params], objective: Objective = Objective()) -> TuneResult:
    """Tune on every task but `held_out` (which is never evaluated, hence never loaded)."""
    if held_out not in tasks:
        raise ValueError(f"held_out {held_out!r} is not one of the tasks")
    return tune([t for t in tasks if t != held_out], evaluate, candidates, objective)
