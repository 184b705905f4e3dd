"""`alto check-fidelity`: both checks on a run folder and/or a cost profile, written as one CSV.

1. step time: predictors fitted on part of a CostProfile, scored on the held-out rows
   (`altosim.cost.steptime`);
2. run replay: a run folder written by `alto run` replayed in the SimPy backend with the same
   config (`altosim.fidelity.replay`), with step costs `measured` from the run or from the `model`
   (the simulator's cost model, profile-backed when given a profile, with the profile's
   validation, new-shape and action costs: `model_costs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from altosim.cost import (
    HostOverheads, MeasuredCost, NewShapeCost, PredictorFactory, StepCost, ValidationCost, analytic_predictor,
    best_method, cost_predictor, eval_profile, host_overheads, hostgpu_predictor, interior, model_cost,
    new_shape_cost, step_time_errors,
)
from altosim.errors import InputError
from altosim.fidelity.replay import replay_run
from altosim.fidelity.report import gpu_label, phase_rows, plot_timelines, replay_rows, row, step_rows
from altosim.fidelity.runlog import (
    job_intervals, measured_step_times, read_run, run_config_for, run_phases, run_val_rows,
)
from altosim.report import save_fig, write_csv
from altosim.schemas import CostProfile, RunConfig


@dataclass
class FidelityReport:
    rows: list[dict[str, Any]]
    files: list[Path]
    gpu: str

    @property
    def passed(self) -> bool:
        return all(r["pass"] is not False for r in self.rows)


@dataclass
class ModelCosts:
    """What a `model` replay charges, all from the config and the profile (nothing from the run's
    timings), and the report rows that say how."""

    cost: StepCost
    eval_time: ValidationCost | None
    shapes: NewShapeCost | None
    overheads: HostOverheads | None
    notes: list[dict[str, Any]]


def model_costs(cfg: RunConfig | None, profile: CostProfile | None, method: str,
                held: dict[str, list[dict[str, Any]]], models: set[str], val_rows: int) -> ModelCosts:
    """Steps read by `method` ("auto": whichever of interpolation and the host/GPU fit predicts the
    profile's held-out rows of `models` better); validation from the profile's measured evaluations
    read by the fit (validation batches lie past the profile's batch axis, where interpolation
    continues the last segment's slope; the fit works in tokens, inside the measured range), else a
    third of a step; new step and evaluation shapes from the first steps/calls; actions from the
    profile's overheads."""
    how, why = (method, "as asked") if method != "auto" else best_method(held, models)
    cost = model_cost(cfg, profile, how)
    evals = eval_profile(profile)
    eval_time, ev, ev_note = None, "not modelled", "0 validation rows"
    if val_rows > 0 and evals is not None:
        ev_how = "hostgpu" if method == "auto" else method
        eval_time = ValidationCost(model_cost(cfg, evals, ev_how), val_rows, forward_fraction=1.0,
                                   shapes=new_shape_cost(evals))
        ev, ev_note = f"measured ({ev_how})", f"from the profile's {evals.source.split(' ')[0]}"
    elif val_rows > 0:
        eval_time = ValidationCost(cost, val_rows)
        ev, ev_note = "a third of a step", "the profile timed no evaluation: 2NT of a step's 6NT FLOPs"
    over = host_overheads(profile)
    notes = [row("model.profile_method", how if profile is not None else "analytic",
                 note=f"how the replay reads the profile's steps: {why}" if profile is not None else ""),
             row("model.eval_cost", ev, note=ev_note),
             row("model.action_costs", ", ".join(over.models) if over is not None else "none",
                 note="models whose actions (start, admit, stop, snapshot, finish) are charged from the profile")]
    return ModelCosts(cost, eval_time, new_shape_cost(profile) if profile is not None else None, over, notes)


def check_fidelity(out: str | Path, run_dir: str | Path | None = None, cfg: RunConfig | None = None,
                   profile: CostProfile | None = None, factory: PredictorFactory = cost_predictor,
                   modes: Sequence[str] = ("measured", "model"), every: int = 5,
                   val_rows: int | None = None, method: str = "auto") -> FidelityReport:
    """Both checks (whichever inputs are given); writes fidelity_<gpu>.csv (+ timeline CSV/PNG).

    `val_rows`: validation examples per evaluation, so the model replay charges the runtime's
    validation time (None: from <run>/run_args.json, else 0 = validation not modelled).
    `method`: how the model replay reads the profile, "interp", "hostgpu" or "auto" (see
    `model_costs`)."""
    if run_dir is None and profile is None:
        raise InputError("<args>", "--run", "give a run folder (--run) and/or a cost profile (--profile)")
    if len(set(modes)) != len(modes):
        raise InputError("<args>", "--costs", f"a cost source listed twice: {','.join(modes)!r}")
    for m in modes:
        if m not in ("measured", "model"):
            raise InputError("<args>", "--costs", f"unknown cost source {m!r}; known: measured, model")
    if method not in ("auto", "interp", "hostgpu"):
        raise InputError("<args>", "--profile-method", f"unknown method {method!r}; known: auto, interp, hostgpu")
    rows: list[dict[str, Any]] = []
    gpu = profile.device if profile is not None else "unknown"
    held: dict[str, list[dict[str, Any]]] = {}
    if profile is not None:
        held["interp"] = step_time_errors(profile, factory, every)
        rows += step_rows(held["interp"])
        inner = interior(profile)
        if len(inner) >= 2:  # interpolation only: every 2nd row strictly inside the grid
            rows += step_rows(step_time_errors(profile, factory, 2, inner), None, "interior_")
        rows += step_rows(step_time_errors(profile, analytic_predictor, every), None, "analytic_")  # reference
        # the host-floor / GPU-line fit (altosim.cost.fit) on the same split: how much of the error is
        # the interpolation's (holes in the grid) rather than the measurements' jitter
        held["hostgpu"] = step_time_errors(profile, hostgpu_predictor, every)
        rows += step_rows(held["hostgpu"], None, "hostgpu_")
    frames = []
    if run_dir is not None:
        run = read_run(run_dir)
        cfg = cfg if cfg is not None else run_config_for(run.folder)
        val_rows = run_val_rows(run.folder) if val_rows is None else val_rows
        gpu = run.device
        frames.append(("real", run.trace))
        for mode in modes:
            if mode == "measured":  # evaluation time is inside the measured step times
                mc = ModelCosts(MeasuredCost(measured_step_times(run)), None, None, None, [])
            else:
                mc = model_costs(cfg, profile, method, held, {t.model.lower() for t in run.tasks}, val_rows)
            charged: dict[str, float] = {}
            try:
                sim = replay_run(run, cfg, mc.cost, mc.eval_time,
                                 mc.shapes.before_steps if mc.shapes is not None else None, mc.overheads, charged)
            except InputError:
                raise
            except ValueError as e:  # e.g. the predictor has no cost for this backbone
                if mode == "measured":
                    raise
                rows.append(row("model.skipped", math.nan, note=f"no model-cost replay: {e}"))
                continue
            except RuntimeError as e:  # the replay's decisions left a task that never ends
                rows.append(row(f"{mode}.replay_failed", math.nan, "a finished replay", False, str(e)))
                continue
            rows += replay_rows(mode, run.trace, sim)
            if mode == "model":
                rows.append(row("model.val_rows_modelled", val_rows, note="validation examples charged per "
                                "evaluation (0: validation time not modelled)"))
                rows += mc.notes
                rows += phase_rows("model", charged, run_phases(run.folder))
                per = mc.shapes.per_model if mc.shapes is not None else {}
                rows.append(row("model.new_shape_s", "; ".join(f"{m}={v:.3g}" for m, v in sorted(per.items())) or 0,
                                note="seconds charged per new step shape, from the profile's first steps "
                                     "(0: the profile kept none)"))
            frames.append((mode, sim))
    out = Path(out)
    label = gpu_label(gpu)
    files = [out / f"fidelity_{label}.csv"]
    write_csv(pd.DataFrame(rows, columns=["metric", "value", "goal", "pass", "note"], dtype=object), files[0])
    if frames:
        tl = pd.DataFrame([(src, *iv) for src, tr in frames for iv in job_intervals(tr)],
                          columns=["source", "task", "job", "start_s", "end_s"])
        files.append(out / f"fidelity_{label}_timeline.csv")
        write_csv(tl, files[-1])
        files.append(out / f"fidelity_{label}.png")
        save_fig(plot_timelines(tl, f"real vs simulated timeline ({gpu})"), files[-1])
    return FidelityReport(rows, files, gpu)
