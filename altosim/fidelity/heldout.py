"""Held-out fidelity: costs calibrated on one real run predict another run.

`heldout_fidelity(fit_run, test_run, cfg)` fits a RuntimeCalibration on `fit_run`'s report
intervals, builds the CostProfile of its training steps (`profile_from_run`), and replays
`test_run` in the simulator with step costs from either predictor:

* `profile`: the simulator's profile-backed CostModel on that profile (multilinear interpolation);
* `linear`: the calibration's host-bound line, step = a + b * adapters + c * samples;

both with the calibrated startup, validation and autotune overheads. Scored: makespan (also from
the first report on, which leaves out the startup), task completions, decisions one by one, and
the time of each report interval of `test_run` predicted vs measured (per interval, and per group
composition: wall time per fused step with everything inside, as `measured_step_times` counts it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from altosim.build import runtime_controller
from altosim.cost import (
    FEATURES, CalibratedOverheads, CostPredictor, EvalShape, LinearStepCost, StepCost, describe, fit_calibration,
    model_cost,
)
from altosim.fidelity.calibrate import profile_from_run, run_intervals
from altosim.fidelity.replay import replay_run
from altosim.fidelity.report import gpu_label, plot_timelines, replay_rows, row
from altosim.fidelity.runlog import RunFolder, flat_curve, job_intervals, timed
from altosim.policy.event_order import EVENT_ORDER
from altosim.report import save_fig, write_csv
from altosim.schemas import CostProfile, RunConfig
from altosim.sim.engine import Simulator
from altosim.sim.runtime_costs import RuntimeCosts

PREDICTORS = ("profile", "linear")


def _batch(r: Any) -> float:
    """The exact mean per-adapter batch a profile_from_run record notes (its key holds it rounded)."""
    try:
        return float(r.note.split("mean per-adapter batch ")[1].split(";")[0])
    except (IndexError, ValueError):
        return float(r.per_adapter_batch)


def first_report(trace: list[dict[str, Any]]) -> float:
    return next((t for t, d in timed(trace) if d["kind"] == "step_report"), 0.0)


def _err_rows(prefix: str, pred: np.ndarray, real: np.ndarray, goal: float | None = None,
              note: str = "") -> list[dict[str, Any]]:
    e = np.abs(pred - real) / real
    med = float(np.median(e))
    return [row(f"{prefix}.points", len(e), note=note),
            row(f"{prefix}.median_rel_err", med, *((f"<= {goal:g}", med <= goal) if goal else ())),
            row(f"{prefix}.p90_rel_err", float(np.percentile(e, 90)))]


def heldout_fidelity(fit_run: RunFolder, test_run: RunFolder, cfg: RunConfig, fit_shape: EvalShape,
                     test_shape: EvalShape, predictors: Sequence[str] = PREDICTORS,
                     fixed: dict[str, float] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[tuple[str, list[dict[str, Any]]]], CostProfile]:
    """(rows, [(source, trace)] for the timeline, the profile built from `fit_run`); `fixed`
    holds calibration terms at a value (e.g. {"jobs_left": 0.0} leaves that term out)."""
    for p in predictors:
        if p not in PREDICTORS:
            raise ValueError(f"predictors: unknown {p!r}; known: {', '.join(PREDICTORS)}")
    cal = fit_calibration(run_intervals(fit_run, fit_shape), f"report intervals of {fit_run.folder}", fixed)
    profile = profile_from_run(fit_run, cfg.cluster.gpu_type, cal, fit_shape)
    rows = [row("calibration.fit_run", str(fit_run.folder)), row("calibration.test_run", str(test_run.folder)),
            row("calibration.profile_rows", len(profile.rows), note=profile.source)]
    rows += [row(f"calibration.{k}", v, note="seconds per unit" if k.startswith("coef.") else "")
             for k, v in describe(cal).items() if k != "source"]
    ivs = run_intervals(test_run, test_shape)
    real_iv = np.array([iv.seconds for iv in ivs])
    pred_iv = cal.predict(ivs)
    rows += _err_rows("interval_s.heldout", pred_iv, real_iv, note="report intervals of the test run "
                      "(steps + validation + autotune + startup), predicted by the calibration")
    comp_real: dict[Any, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for iv, p in zip(ivs, pred_iv):
        c = comp_real[(iv.task_id, frozenset(j.job_id for j in iv.jobs))]
        c[0] += iv.seconds
        c[1] += p
        c[2] += iv.steps
    per = np.array([[r / n, p / n] for r, p, n in comp_real.values()])
    rows += _err_rows("step_s_incl_overheads.heldout", per[:, 1], per[:, 0], 0.05,
                      "per group composition of the test run: wall time per fused step with validation, "
                      "autotune and startup inside (what measured_step_times gives)")
    own = profile_from_run(test_run, cfg.cluster.gpu_type, None, test_shape)  # the test run's own steps
    measured = np.array([r.step_ms for r in own.rows])
    by = {"profile": CostPredictor(profile), "linear": lambda r: 1e3 * cal.step_s(r.adapters, r.adapters * _batch(r))}
    for name in predictors:
        pred = np.array([by[name](r) for r in own.rows])
        rows += _err_rows(f"step_ms.heldout.{name}", pred, measured, 0.05,
                          "training step alone: the test run's own profile (its intervals less its own fitted "
                          "overheads, median per key) vs the fit run's predictor")
    frames = [("real", test_run.trace)]
    t0_real = first_report(test_run.trace)
    for name in predictors:
        cost: StepCost = model_cost(cfg, profile) if name == "profile" else LinearStepCost(cal)
        over = CalibratedOverheads(cal, test_shape)
        sim = replay_run(test_run, cfg, cost, over, over.before_steps)
        rows += replay_rows(name, test_run.trace, sim)
        mr = max((t for t, d in timed(test_run.trace) if d["kind"] == "finish_task"), default=0.0) - t0_real
        ms = max((t for t, d in timed(sim) if d["kind"] == "finish_task"), default=0.0) - first_report(sim)
        err = abs(ms - mr) / mr if mr > 0 else math.nan
        ends_r = {j: e for _, j, _, e in job_intervals(test_run.trace)}
        ends_s = {j: e for _, j, _, e in job_intervals(sim)}
        d = [abs(ends_s[j] - e) / e for j, e in ends_r.items() if j in ends_s and e > 0]
        if d:
            rows.append(row(f"{name}.job_end_median_rel_err", float(np.median(d)),
                            note=f"when each of {len(d)} jobs left its group (stop/finish), simulated vs real"))
        rows += [row(f"{name}.first_report_real_s", t0_real, note="startup: trainer creation (+ backbone load "
                     "when not cached) and the first step"),
                 row(f"{name}.first_report_sim_s", first_report(sim)),
                 row(f"{name}.makespan_after_first_report_rel_err", err, "<= 0.1", err <= 0.1,
                     f"real {mr:.4g} s, simulated {ms:.4g} s: the makespan without the startup")]
        if name == "profile":
            rows.append(row("profile.extrapolations", getattr(cost, "extrapolations", 0),
                            note="profile queries outside the fit run's measured range"))
        frames.append((name, sim))
    return rows, frames, profile


def write_heldout(out: str | Path, rows: list[dict[str, Any]], frames: list[tuple[str, list[dict[str, Any]]]],
                  gpu: str, name: str | None = None) -> list[Path]:
    """fidelity_<gpu>.csv, its timeline CSV and PNG (real vs each predictor's replay)."""
    out = Path(out)
    stem = name or f"fidelity_{gpu_label(gpu)}"
    files = [out / f"{stem}.csv", out / f"{stem}_timeline.csv", out / f"{stem}.png"]
    write_csv(pd.DataFrame(rows, columns=["metric", "value", "goal", "pass", "note"], dtype=object), files[0])
    tl = pd.DataFrame([(src, *iv) for src, tr in frames for iv in job_intervals(tr)],
                      columns=["source", "task", "job", "start_s", "end_s"])
    write_csv(tl, files[1])
    save_fig(plot_timelines(tl, f"real vs simulated, costs calibrated on another run ({gpu})"), files[2])
    return files


def term_sensitivity(fit_run: RunFolder, test_run: RunFolder, cfg: RunConfig, fit_shape: EvalShape,
                     test_shape: EvalShape) -> list[dict[str, Any]]:
    """The held-out result with each calibration term left out in turn (held at 0): how much the
    answer rests on one term (the runs are small, and some terms move together in them)."""
    out = []
    for drop in [None, *[f for f in FEATURES if f != "steps"]]:
        rows, _, _ = heldout_fidelity(fit_run, test_run, cfg, fit_shape, test_shape, fixed={drop: 0.0} if drop else None)
        v = {r["metric"]: r["value"] for r in rows}
        for p in PREDICTORS:
            out.append({"fit_run": str(fit_run.folder), "test_run": str(test_run.folder), "left_out": drop or "-",
                        "predictor": p, "makespan_rel_err": v[f"{p}.makespan_rel_err"],
                        "after_first_report_rel_err": v[f"{p}.makespan_after_first_report_rel_err"],
                        "decisions_identical": v[f"{p}.first_divergence"] == -1})
    return out


def predict_makespan(tasks: Sequence[Any], cfg: RunConfig, fit_run: RunFolder, fit_shape: EvalShape,
                     shape: EvalShape, predictor: str = "profile", event_order: int = EVENT_ORDER) -> float:
    """Seconds a run of `tasks` would take under `cfg` with costs calibrated on `fit_run`, for a
    run whose event log was not kept (exact only where the policy's decisions do not depend on
    the losses, e.g. policy `none`: every job runs flat curves to its end); `event_order`: the
    order that run fed its events in (altosim/policy/event_order.py)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor: unknown {predictor!r}; known: {', '.join(PREDICTORS)}")
    cal = fit_calibration(run_intervals(fit_run, fit_shape), str(fit_run.folder))
    cost: StepCost = model_cost(cfg, profile_from_run(fit_run, cfg.cluster.gpu_type, cal, fit_shape)) \
        if predictor == "profile" else LinearStepCost(cal)
    over = CalibratedOverheads(cal, shape)
    res = Simulator(list(tasks), runtime_controller(cfg), cost, flat_curve, event_order=event_order,
                    costs=RuntimeCosts(eval_time=over, before_steps=over.before_steps)).run()
    return max(t for t, d in timed([x for r in res.log for x in (r["event"], *r["actions"])])
               if d["kind"] == "finish_task")
