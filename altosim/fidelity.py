"""`alto check-fidelity`: does the simulator predict what the real runtime did?

Two checks (issue 12):

1. step time: a predictor fitted on part of a CostProfile, scored on the held-out rows
   (every k-th row, deterministic): median and p90 relative error per model;
2. run replay: a run folder written by `alto run` (events.jsonl: each event followed by the
   actions it caused) is replayed in the SimPy backend with the same config, driven by the run's
   own StepReports (exact losses at each report, so early exit sees the same numbers) and with
   step costs either `measured` from the run (per-step wall time between consecutive reports of a
   task, per group composition) or `model` (a step-time predictor). Compared: each task's
   completion time, the makespan, and the decisions (actions) one by one in order.

The replay mirrors the runtime's event protocol where it differs from the simulator's (arrivals
one at a time, reports of one fused step in admission order, reports sent even for a job stopped
earlier in the same step), so that a difference in decisions is a difference in policy inputs,
not in bookkeeping. A log written by `alto simulate` is replayed with the simulator's protocol.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from altosim.errors import InputError
from altosim.policy.controller import Controller
from altosim.policy.types import (
    Admit, JobFinished, JobSpec, TaskArrived, TaskSpec, action_from_dict, event_from_dict, to_dict,
)
from altosim.schemas import CostProfile, CostRecord, LossCurve, LossTraceSet, RunConfig
from altosim.sim.engine import Simulator

EVENT_KINDS = ("task_arrived", "step_report", "job_finished", "job_failed", "tick")
ACTION_KINDS = ("start_task", "admit", "suspend", "stop", "finish_task")
StepPredictor = Callable[[CostRecord], float]  # one step's wall time, ms
PredictorFactory = Callable[[CostProfile], StepPredictor]  # fitted on the non-held-out rows


# ------------------------------------------------------------------------------ (1) step time
def analytic_predictor(fit: CostProfile | None = None) -> StepPredictor:
    """The analytic CostModel as a predictor (it ignores the fit rows: nothing to fit)."""
    from altosim.costmodel import cost_model_for

    def predict(r: CostRecord) -> float:
        cost = cost_model_for(r.gpu_type)
        # LoRA FLOPs are linear in rank: every adapter at the mean rank gives the group's sum
        jobs = tuple(JobSpec(f"q/j{i}", "q", 1e-4, r.mean_rank, r.per_adapter_batch)  # type: ignore[arg-type]
                     for i in range(r.adapters))
        task = TaskSpec("q", 0.0, r.model, "q", r.parallel_degree, jobs, 1, seq_len=r.seq_len)
        return 1e3 * cost.step_time(task, jobs)

    return predict


def split_profile(profile: CostProfile, every: int = 5) -> tuple[CostProfile, list[CostRecord]]:
    """Row i is held out when i % every == every - 1 (stable for a given file)."""
    if every < 2:
        raise ValueError(f"every: must be >= 2 (one row in `every` is held out), got {every}")
    fit = [r for i, r in enumerate(profile.rows) if i % every != every - 1]
    held = [r for i, r in enumerate(profile.rows) if i % every == every - 1]
    return profile.model_copy(update={"rows": fit}), held


def step_time_errors(profile: CostProfile, factory: PredictorFactory = analytic_predictor,
                     every: int = 5) -> list[dict[str, Any]]:
    """Per model: held-out points, median and p90 of |predicted - measured| / measured."""
    fit, held = split_profile(profile, every)
    if not held:
        raise ValueError(f"profile: {len(profile.rows)} rows leave none held out at every={every}")
    predict = factory(fit)
    errs: dict[str, list[float]] = defaultdict(list)
    for r in held:
        errs[r.model].append(abs(predict(r) - r.step_ms) / r.step_ms)
    return [{"model": m, "points": len(e), "median_rel_err": float(np.median(e)),
             "p90_rel_err": float(np.percentile(e, 90))} for m, e in sorted(errs.items())]


def query_record(task: TaskSpec, jobs: Sequence[JobSpec], gpu_type: str) -> CostRecord:
    """A fused group as a CostRecord to ask a predictor about (step_ms is a placeholder)."""
    n = len(jobs)
    return CostRecord(model=task.model, gpu_type=gpu_type, adapters=n, mean_rank=sum(j.rank for j in jobs) / n,
                      per_adapter_batch=max(1, round(sum(j.batch_size for j in jobs) / n)), seq_len=task.seq_len,
                      parallel_degree=task.gpus, step_ms=1.0, peak_mem_bytes=0, note="query")


# ------------------------------------------------------------------------------ reading a run
@dataclass
class RunFolder:
    """A run's event log, flat: each event (it has `now`) followed by the actions it caused."""

    folder: Path
    meta: dict[str, Any]
    trace: list[dict[str, Any]]
    protocol: str  # "runtime" (alto run) or "sim" (alto simulate)

    @property
    def tasks(self) -> list[TaskSpec]:
        return [event_from_dict(r).task for r in self.trace if r["kind"] == "task_arrived"]  # type: ignore[union-attr]

    @property
    def device(self) -> str:
        return str(self.meta.get("device") or "sim")


def read_run(folder: str | Path) -> RunFolder:
    """Read and check `<folder>/events.jsonl`; bad input is one InputError naming the line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(str(folder), "--run", "no such run folder")
    path = folder / "events.jsonl"
    if not path.is_file():
        raise InputError(str(folder), "events.jsonl", "missing: not a folder written by `alto run`")
    lines = [(i, s) for i, s in enumerate(path.read_text().splitlines(), start=1) if s.strip()]
    recs = []
    for i, s in lines:
        try:
            recs.append((i, json.loads(s)))
        except json.JSONDecodeError as e:
            raise InputError(str(path), "<json>", str(e), i) from None
    if not recs or not isinstance(recs[0][1], dict) or "meta" not in recs[0][1]:
        raise InputError(str(path), "meta", "line 1 must be a {\"meta\": ...} header", 1)
    meta, trace, protocol = recs[0][1]["meta"], [], "runtime"
    for i, rec in recs[1:]:
        if isinstance(rec, dict) and "event" in rec:  # alto simulate: {"event": ..., "actions": [...]}
            protocol = "sim"
            items = [rec["event"], *rec.get("actions", [])]
        else:
            items = [rec]
        for d in items:
            try:
                kind = d.get("kind") if isinstance(d, dict) else None
                if kind in EVENT_KINDS:
                    event_from_dict(d)
                elif kind in ACTION_KINDS:
                    action_from_dict(d)
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(str(path), "kind" if "kind" in str(e) else "<record>", str(e), i) from None
            trace.append(d)
    if not any(d["kind"] == "task_arrived" for d in trace):
        raise InputError(str(path), "task_arrived", "the log has no task arrivals")
    return RunFolder(folder, meta, trace, protocol)


def timed(trace: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(time, item) pairs: an action takes the time of the event that caused it."""
    out, now = [], 0.0
    for d in trace:
        now = float(d.get("now", now))
        out.append((now, d))
    return out


def decisions(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in trace if d["kind"] in ACTION_KINDS]


def completion_times(trace: list[dict[str, Any]]) -> dict[str, float]:
    """Task -> time of the event whose actions finished it."""
    return {d["task_id"]: t for t, d in timed(trace) if d["kind"] == "finish_task"}


# ------------------------------------------------------------------------------ inputs from the run
def job_curves(run: RunFolder) -> dict[str, LossCurve]:
    """Job -> its logged StepReports as a LossCurve (as experiments/e2e_sweep.py builds traces)."""
    reps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in run.trace:
        if d["kind"] == "step_report":
            reps[d["job_id"]].append(d)
    nan = lambda x: math.nan if x is None else float(x)  # noqa: E731
    out = {}
    for task in run.tasks:
        for j in task.jobs:
            rs = reps.get(j.job_id)
            if rs:
                out[j.job_id] = LossCurve(
                    lr=j.lr, rank=j.rank, batch_size=j.batch_size, alpha=j.alpha, samples=[r["samples"] for r in rs],
                    train=[r["train_loss"] for r in rs], val=[nan(r.get("val_loss")) for r in rs],
                    metric=[nan(r.get("metric")) for r in rs], steps=[r["step"] for r in rs])
    return out


def loss_traces(run: RunFolder) -> dict[str, LossTraceSet]:
    """One LossTraceSet per task from the run's StepReports (real loss trajectories to keep)."""
    curves = job_curves(run)
    return {t.task_id: LossTraceSet(
        name=f"{t.model}__{t.task_id}", model=t.model, dataset=t.dataset, synthetic=False,
        source=f"StepReports of {run.folder}", curves=[curves[j.job_id] for j in t.jobs if j.job_id in curves],
        meta={"device": run.device}) for t in run.tasks if any(j.job_id in curves for j in t.jobs)}


@dataclass
class ReportedCurve:
    """A job's logged reports, replayed exactly: at a logged step the simulator gets the logged
    train loss, val loss and metric; elsewhere (a job the replay runs longer) the LossCurve's
    interpolation, constant past its last point."""

    curve: LossCurve
    total: int
    _at: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self._at = {int(s): i for i, s in enumerate(self.curve.steps)}

    def _i(self, f: float) -> int | None:
        return self._at.get(round(f * self.total))

    def train_mean(self, f0: float, f1: float) -> float:
        i = self._i(f1)
        return float(self.curve.train[i]) if i is not None else self.curve.train_mean(f0, f1)

    def val_at(self, f: float) -> float | None:
        i = self._i(f)
        v = float(self.curve.val[i]) if i is not None else self.curve.val_at(f)
        return None if math.isnan(v) else v

    def metric_at(self, f: float) -> float | None:
        if self.curve.metric is None:
            return None
        i = self._i(f)
        return float(self.curve.metric[i]) if i is not None else self.curve.metric_at(f)


def _flat_curve(job: JobSpec) -> LossCurve:
    """For a job the run never reported (admitted in the replay only): a flat, unremarkable curve."""
    return LossCurve(lr=job.lr, rank=job.rank, batch_size=job.batch_size, alpha=job.alpha,
                     samples=[1.0], train=[math.inf], val=[math.inf])


def measured_step_times(run: RunFolder) -> dict[tuple[str, frozenset[str]], tuple[float, int]]:
    """(task, running jobs) -> (seconds, fused steps) spent in that group composition.

    A task's fused-step index is known at each StepReport (the job's step plus the index at which
    it joined); between two consecutive indices the group was constant, so the wall time between
    them over the steps taken is that composition's step time (evaluation time included)."""
    spent: dict[tuple[str, frozenset[str]], list[float]] = defaultdict(lambda: [0.0, 0])
    active: dict[str, set[str]] = defaultdict(set)
    idx: dict[str, int] = {}
    joined: dict[str, int] = {}  # job -> task index minus job step while running
    last_step: dict[str, int] = defaultdict(int)
    anchor: dict[str, tuple[float, int, frozenset[str]]] = {}
    for now, d in timed(run.trace):
        k, tid = d["kind"], d.get("task_id")
        if k == "step_report" and d["job_id"] in joined:
            i = joined[d["job_id"]] + d["step"]
            last_step[d["job_id"]] = d["step"]
            t0, i0, comp = anchor[tid]
            if i > i0:
                s = spent[(tid, comp)]
                s[0] += now - t0
                s[1] += i - i0
                anchor[tid] = (now, i, comp)
            idx[tid] = max(idx.get(tid, 0), i)
        elif k == "start_task":
            idx[tid] = 0
            anchor[tid] = (now, 0, frozenset())
        elif k == "admit":
            joined[d["job_id"]] = idx.get(tid, 0) - (last_step[d["job_id"]] if d.get("resume") else 0)
            active[tid].add(d["job_id"])
        elif k in ("suspend", "stop") or k in ("job_finished", "job_failed"):
            active[tid].discard(d["job_id"])
        if tid in anchor and k in ACTION_KINDS + ("job_finished", "job_failed"):
            t0, i0, _ = anchor[tid]
            anchor[tid] = (t0, i0, frozenset(active[tid]))
    return {key: (v[0], int(v[1])) for key, v in spent.items()}


class MeasuredCost:
    """Step time of a group as the run measured it; a group the run never ran gets the task's
    mean per-sample time times its samples."""

    def __init__(self, spans: dict[tuple[str, frozenset[str]], tuple[float, int]]) -> None:
        self.spans = spans

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        hit = self.spans.get((task.task_id, frozenset(j.job_id for j in jobs)))
        if hit is not None and hit[1] > 0:
            return hit[0] / hit[1]
        sec = samples = 0.0
        for (tid, comp), (s, n) in self.spans.items():
            if tid == task.task_id and comp:
                sec += s
                samples += n * sum(task.job(j).batch_size for j in comp)
        per = sec / samples if samples else 1.0
        return per * sum(j.batch_size for j in jobs)


class PredictedCost:
    """Step time of a group from a step-time predictor (ms per CostRecord)."""

    def __init__(self, predict: StepPredictor, gpu_type: str) -> None:
        self.predict, self.gpu_type = predict, gpu_type

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        return self.predict(query_record(task, jobs, self.gpu_type)) / 1e3


# ------------------------------------------------------------------------------ (2) the replay
class RuntimeOrderSimulator(Simulator):
    """The SimPy backend speaking the runtime's protocol (runtime/backend.py): tasks arrive one
    event each, a fused step's reports go out in first-admission order (the trainer's slot order),
    and every report of the step is sent even when an earlier one stopped that job."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._order: dict[str, int] = {}

    def _arrivals(self):
        for task in self.tasks:
            if task.arrival > self.env.now:
                yield self.env.timeout(task.arrival - self.env.now)
            self._deliver(TaskArrived(self.env.now, task))

    def _apply(self, a: Any) -> None:
        if isinstance(a, Admit) and not a.resume:
            self._order.setdefault(a.job_id, len(self._order))
        super()._apply(a)

    def _execute(self, ex):  # the engine's loop with the runtime's report order
        task = ex.task
        scale = self.time_scale(task)
        while not ex.done:
            if not ex.group:
                ex.wake = self.env.event()
                yield ex.wake
                continue
            runs = list(ex.group.values())
            k = min(min(r.every - r.step % r.every, r.total - r.step) for r in runs)
            dt = k * self.cost.step_time(task, [r.job for r in runs]) * scale
            yield self.env.timeout(dt)
            self.busy_gpu_s += dt * len(ex.gpus)
            cap = task.samples_per_job
            due = []
            for r in runs:
                before = min(r.step * r.job.batch_size, cap)
                r.step += k
                self.samples += min(r.step * r.job.batch_size, cap) - before
                if r.step % r.every == 0 or r.step >= r.total:
                    due.append(r)
            for r in sorted(due, key=lambda r: self._order[r.job.job_id]):
                self._report(task, r)
                if r.step >= r.total and ex.group.get(r.job.job_id) is r:
                    ex.group.pop(r.job.job_id)
                    self._job_end(ex, r.job.job_id, r, "finished", False)
                    self._deliver(JobFinished(self.env.now, task.task_id, r.job.job_id))


def runtime_controller(cfg: RunConfig) -> Controller:
    """The Controller exactly as runtime/run.py builds it for `cfg`."""
    from altosim.simulate import check_policy, controller_config, make_cost

    check_policy(cfg)
    cost, ccfg, margin = make_cost(cfg), controller_config(cfg), cfg.policy.memory_margin

    def duration(t: TaskSpec) -> float:
        try:
            return cost.worst_case_duration(t, ccfg.batching, ccfg.max_jobs_per_group, margin)
        except ValueError:  # a backbone the cost model does not know: steps as time units
            return float(sum(t.total_steps(j) for j in t.jobs))

    def memory(t: TaskSpec):
        try:
            return cost.memory_model(t, margin)
        except ValueError:
            return None

    return Controller(ccfg, duration_for=duration, memory_for=memory)


def replay_run(run: RunFolder, cfg: RunConfig | None, cost: Any) -> list[dict[str, Any]]:
    """The run replayed in the simulator with step costs `cost`; returns the flat trace."""
    if run.protocol == "sim":
        from altosim.replay import controller_from_meta

        if "controller" not in run.meta:
            raise InputError(str(run.folder / "events.jsonl"), "meta.controller", "missing (needed to rebuild the policy)", 1)
        ctl, sim_cls = controller_from_meta(run.meta), Simulator
    else:
        if cfg is None:
            raise InputError(str(run.folder), "--config", "needed to replay an `alto run` log (or put config.json in the run folder)")
        ctl, sim_cls = runtime_controller(cfg), RuntimeOrderSimulator
    tasks = run.tasks
    curves = job_curves(run)
    total = {j.job_id: t.total_steps(j) for t in tasks for j in t.jobs}
    cache: dict[str, Any] = {}

    def curve(job: JobSpec) -> Any:
        if job.job_id not in cache:
            c = curves.get(job.job_id)
            cache[job.job_id] = ReportedCurve(c, total[job.job_id]) if c is not None else _flat_curve(job)
        return cache[job.job_id]

    res = sim_cls(tasks, ctl, cost, curve).run()
    return [x for rec in res.log for x in (rec["event"], *rec["actions"])]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@dataclass
class DecisionDiff:
    real: int
    sim: int
    identical: int  # positions where both took the same decision
    first: int | None  # index of the first difference (None: identical sequences)
    real_at: dict[str, Any] | None
    sim_at: dict[str, Any] | None


def compare_decisions(real: list[dict[str, Any]], sim: list[dict[str, Any]]) -> DecisionDiff:
    """The two runs' actions, one by one in order."""
    a, b = decisions(real), decisions(json.loads(json.dumps(sim)))
    same = [_same(x, y) for x, y in zip(a, b)]
    first = next((i for i, s in enumerate(same) if not s), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    pick = lambda xs: xs[first] if first is not None and first < len(xs) else None  # noqa: E731
    return DecisionDiff(len(a), len(b), sum(same), first, pick(a), pick(b))


def job_intervals(trace: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(task, job, start, end): each stretch a job spent in its task's running group."""
    open_: dict[str, tuple[str, float]] = {}
    out = []
    for now, d in timed(trace):
        k, job = d["kind"], d.get("job_id")
        if k == "admit":
            open_.setdefault(job, (d["task_id"], now))
        elif k in ("suspend", "stop", "job_finished", "job_failed") and job in open_:
            tid, t0 = open_.pop(job)
            out.append((tid, job, t0, now))
        elif k == "finish_task":
            for j in [j for j, (tid, _) in open_.items() if tid == d["task_id"]]:
                out.append((d["task_id"], j, open_.pop(j)[1], now))
    return out


def replay_rows(mode: str, real: list[dict[str, Any]], sim: list[dict[str, Any]],
                makespan_goal: float = 0.10) -> list[dict[str, Any]]:
    """metric, value, goal, pass, note rows for one replay."""
    rc, sc = completion_times(real), completion_times(sim)
    mr, ms = max(rc.values(), default=0.0), max(sc.values(), default=0.0)
    err = abs(ms - mr) / mr if mr > 0 else math.nan
    rows = [_row(f"{mode}.makespan_real_s", mr), _row(f"{mode}.makespan_sim_s", ms),
            _row(f"{mode}.makespan_rel_err", err, f"<= {makespan_goal:g}", err <= makespan_goal)]
    for tid in sorted(rc):
        s = sc.get(tid, math.nan)
        rows += [_row(f"{mode}.completion_real_s[{tid}]", rc[tid]), _row(f"{mode}.completion_sim_s[{tid}]", s),
                 _row(f"{mode}.completion_rel_err[{tid}]", abs(s - rc[tid]) / rc[tid] if rc[tid] > 0 else math.nan)]
    d = compare_decisions(real, sim)
    note = "" if d.first is None else f"first difference at decision {d.first}: real {d.real_at} | simulated {d.sim_at}"
    rows += [_row(f"{mode}.decisions_real", d.real), _row(f"{mode}.decisions_sim", d.sim),
             _row(f"{mode}.decisions_identical", d.identical, f"== {d.real} (all)", d.first is None, note),
             _row(f"{mode}.first_divergence", -1 if d.first is None else d.first, "-1 (none)", d.first is None)]
    failed = sum(1 for x in real if x["kind"] == "job_failed")
    if failed:
        rows.append(_row(f"{mode}.real_job_failures", failed, note="failures are not replayed"))
    return rows


def _row(metric: str, value: Any, goal: str = "", ok: bool | str = "", note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "goal": goal, "pass": ok, "note": note}


def step_rows(errs: list[dict[str, Any]], goal: float = 0.05) -> list[dict[str, Any]]:
    rows = []
    for e in errs:
        m = e["model"]
        rows += [_row(f"step_ms.heldout_points[{m}]", e["points"]),
                 _row(f"step_ms.median_rel_err[{m}]", e["median_rel_err"], f"<= {goal:g}", e["median_rel_err"] <= goal),
                 _row(f"step_ms.p90_rel_err[{m}]", e["p90_rel_err"])]
    return rows


def plot_timelines(frame: Any, title: str) -> Any:
    """One bar per job stretch: real (top) and simulated (below) on the same time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [s for s in ("real", "measured", "model") if s in set(frame["source"])]
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
        ax.set_ylabel(f"{'real' if src == 'real' else 'simulated, ' + src + ' costs'}\n(one row per job)")
    from matplotlib.patches import Patch

    axes[0, 0].legend(handles=[Patch(color=color[t], label=t) for t in tasks], fontsize=7, loc="upper right")
    axes[0, 0].set_xlim(left=0)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time since the run started (s)")
    return fig


# ------------------------------------------------------------------------------ the whole check
@dataclass
class FidelityReport:
    rows: list[dict[str, Any]]
    files: list[Path]
    gpu: str

    @property
    def passed(self) -> bool:
        return all(r["pass"] is not False for r in self.rows)


def gpu_label(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3' (for file names)."""
    return "_".join("".join(c if c.isalnum() or c in ".-" else " " for c in device).split()) or "unknown"


def run_config_for(folder: Path) -> RunConfig | None:
    """The config a run folder carries (config.json / config.yaml, as experiments/fidelity.py writes)."""
    from altosim.schemas import load_config

    for name in ("config.json", "config.yaml", "config.yml"):
        if (folder / name).is_file():
            return load_config(folder / name)
    return None


def check_fidelity(out: str | Path, run_dir: str | Path | None = None, cfg: RunConfig | None = None,
                   profile: CostProfile | None = None, factory: PredictorFactory = analytic_predictor,
                   modes: Sequence[str] = ("measured", "model"), every: int = 5) -> FidelityReport:
    """Both checks (whichever inputs are given); writes fidelity_<gpu>.csv (+ timeline CSV/PNG)."""
    import pandas as pd

    from altosim.report import save_fig, write_csv

    if run_dir is None and profile is None:
        raise InputError("<args>", "--run", "give a run folder (--run) and/or a cost profile (--profile)")
    for m in modes:
        if m not in ("measured", "model"):
            raise InputError("<args>", "--costs", f"unknown cost source {m!r}; known: measured, model")
    rows: list[dict[str, Any]] = []
    gpu = profile.device if profile is not None else "unknown"
    if profile is not None:
        rows += step_rows(step_time_errors(profile, factory, every))
    frames = []
    if run_dir is not None:
        run = read_run(run_dir)
        cfg = cfg if cfg is not None else run_config_for(run.folder)
        gpu = run.device
        frames.append(("real", run.trace))
        for mode in modes:
            if mode == "measured":
                cost: Any = MeasuredCost(measured_step_times(run))
            else:
                predict = factory(profile) if profile is not None else analytic_predictor()
                cost = PredictedCost(predict, cfg.cluster.gpu_type if cfg is not None else "H100")
            try:
                sim = replay_run(run, cfg, cost)
            except InputError:
                raise
            except ValueError as e:  # e.g. the predictor has no cost for this backbone
                if mode == "measured":
                    raise
                rows.append(_row("model.skipped", math.nan, note=f"no model-cost replay: {e}"))
                continue
            rows += replay_rows(mode, run.trace, sim)
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
