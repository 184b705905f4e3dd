"""End-to-end: the paper's 60-config single-GPU grid on a real backbone, three ways.

(a) sequential PEFT: one adapter at a time with the standard PEFT + torch AdamW loop. Its total is
    extrapolated from measured per-step times at each per-adapter batch size (and rank 16/64),
    times each config's step count; the CSV says so.
(b) ours, fused multi-adapter training, no early exit (`alto run`, policy `none`): also the
    source of the real LossTraces the simulator replays (written with --traces-out).
(c) ours with ALTO early exit (`alto run`, policy `alto`).
(d) `concurrent`: PEFT worker processes sharing the GPU, as Ray Tune with fractional GPUs runs a
    sweep; extrapolated from contended step times measured with all workers at once.

Writes e2e_<gpu>.csv (method, configs, wall_s, samples_trained, best_config, best_val_loss,
best_metric, speedup_vs_sequential, note) under --out, and the LossTrace set of (b).

    python experiments/e2e_sweep.py --backbone /root/model/SmolLM2-135M-Instruct.Q4_1.gguf \
        --dataset arithmetic --out $OUT --traces-out $OUT/traces
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import signal
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from altosim.argparser import OneLineParser
from altosim.errors import InputError, from_validation_error, one_line
from altosim.outdir import check_out
from altosim.policy.types import StepReport
from altosim.report import write_csv
from altosim.schemas import LossCurve, LossTraceSet, SearchSpace, TaskRecord, WorkloadTrace, config_from_dict
from altosim.traces_io import read_loss_traces, write_loss_traces, write_workload
import altoruntime.run
from altoruntime.backbone import keep_layers
from altoruntime.data.files import is_data_path
from altoruntime.data.registry import DATASETS
from altoruntime.run import RunInterrupted, run_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrent_peft import extrapolate, make_peft, measure, timed_step  # noqa: E402
from plot_e2e import plot_e2e  # noqa: E402

_open_full = altoruntime.run.open_backbone


def use_backbone_layers(layers: int | None) -> None:
    """One backbone load per process (a GGUF de-quantizes for ~30 s; run_config copies it per
    task), cut to its first `layers` decoder layers when given (--backbone-layers)."""
    global open_backbone

    def opener(name: str, dtype: torch.dtype = torch.float32):
        base = _open_full(name, dtype)
        if layers is not None:
            keep_layers(base.model, layers)
        return base

    altoruntime.run.open_backbone = open_backbone = functools.lru_cache(maxsize=None)(opener)


use_backbone_layers(None)

LRS = [1e-5, 5e-5, 2e-4, 3e-4, 5e-4]
BATCHES = [1, 2, 4, 8]
MODEL = "SmolLM2-135M"


def task_name(dataset: str) -> str:
    """A built-in dataset's name, or a data file's stem (the task id and the trace's suffix)."""
    return dataset if dataset in DATASETS or not is_data_path(dataset) else Path(dataset).stem


def model_label(layers: int | None) -> str:
    return MODEL if layers is None else f"{MODEL}-L{layers}"


def workload(dataset: str, samples: int, evals: int, seq_len: int, ranks: list[int], lrs: list[float] = LRS,
             batches: list[int] = BATCHES, model: str = MODEL) -> WorkloadTrace:
    """One task; a data file is named by its absolute path (the workload lands under --out)."""
    name = task_name(dataset)
    data = dataset if name == dataset else str(Path(dataset).resolve())
    space = SearchSpace(lr=lrs, rank=ranks, batch_size=batches)
    task = TaskRecord(id=name, arrival=0.0, model=model, dataset=data, gpus=1, search_space=space,
                      samples_per_job=samples, eval_every_samples=max(1, samples // evals), seq_len=seq_len,
                      loss_trace=f"{model}__{name}")
    return WorkloadTrace(name=f"e2e-{name}", synthetic=False, source="experiments/e2e_sweep.py", tasks=[task])


def run_ours(args, wl_file: Path, early_exit: str, out: Path) -> tuple[float, object]:
    params = {"warmup_ratio": args.warmup} if early_exit == "alto" and args.warmup is not None else {}
    cfg = config_from_dict({"cluster": {"gpus": 1, "gpu_type": "H100"}, "workload": str(wl_file),
                            "policy": {"early_exit": {"name": early_exit, "params": params},
                                       "inter_task": "fifo"}}, "<e2e>")
    t0 = time.perf_counter()
    log = run_config(cfg, out, backbone=args.backbone, n_train=args.n_train, n_val=args.n_val,
                     n_eval=args.n_eval, checkpoint_every=10**9, progress=StepLog(early_exit, args.log_every))
    return time.perf_counter() - t0, log


class StepLog:
    """A line every `every` fused steps (elapsed, steps/s, adapters in the step): a run cut short
    by a time limit still shows how far it got and how fast it went."""

    def __init__(self, label: str, every: int) -> None:
        self.label, self.every, self.steps, self.t0 = label, every, 0, None

    def __call__(self, task_id: str, losses: dict[str, float]) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        self.steps += 1
        if self.every and self.steps % self.every == 0:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            print(f"[{self.label}] {task_id}: step {self.steps}, {len(losses)} adapters, {dt:.0f} s since the "
                  f"first step, {self.steps / dt:.2f} steps/s", file=sys.stderr, flush=True)


def peft_step_times(args, seq_len: int) -> dict[tuple[int, int], float]:
    """Seconds per step of one PEFT adapter (r, batch) with AdamW: the standard loop."""
    from altoruntime.data import get_dataset

    base = open_backbone(args.backbone, torch.bfloat16)
    ds = get_dataset(args.dataset, n_train=args.n_train, n_val=8, n_eval=1, seed=0)
    split = ds.tokenize(base.tokenizer, "train", seq_len=seq_len)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for r in sorted({min(args.ranks), max(args.ranks)}):
        for b in args.batches:
            model, opt = make_peft(base.model.to(dev), r)
            batches = list(split.batches(b, epoch=0, seed=0))
            times = [timed_step(model, opt, batches[i % len(batches)], dev) for i in range(args.peft_steps + 3)][3:]
            out[(r, b)] = float(np.median(times))
            base.model = model.unload()  # back to the plain backbone for the next config
            print(f"peft r={r} b={b}: {1e3 * out[(r, b)]:.1f} ms/step", file=sys.stderr)
    return out


def traces_from(log, task, samples: int, device: str, model: str = MODEL) -> LossTraceSet:
    """The (b) run's StepReports as a LossTrace set: one curve per config."""
    task_id = task.task_id
    wl_jobs = {}
    for e in log.events:
        if isinstance(e, StepReport) and e.task_id == task_id:
            wl_jobs.setdefault(e.job_id, []).append(e)
    curves = []
    for job_id, reps in sorted(wl_jobs.items()):
        j = task.job(job_id)
        lr, rank, batch = j.lr, j.rank, j.batch_size
        curves.append(LossCurve(
            lr=lr, rank=rank, batch_size=batch, alpha=2.0 * rank,
            samples=np.array([r.samples for r in reps], float), train=np.array([r.train_loss for r in reps]),
            val=np.array([math.nan if r.val_loss is None else r.val_loss for r in reps]),
            metric=np.array([math.nan if r.metric is None else r.metric for r in reps]),
            steps=np.array([r.step for r in reps])))
    return LossTraceSet(
        name=f"{model}__{task_id}", model=model, dataset=task_id, synthetic=False,
        source=f"experiments/e2e_sweep.py, fused training without early exit on {device}",
        curves=curves,
        meta={"device": device, "date": date.today().isoformat(), "samples_per_job": samples,
              "train_loss": "mean over the steps since the previous evaluation",
              "metric": "answer-token accuracy on the validation split"})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def comma_list(text: str, flag: str, kind: type, lo: float, hi: float) -> list:
    """'16,32' -> [16, 32]: each a `kind` in [lo, hi], given once; an InputError naming `flag` otherwise."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise InputError("<args>", flag, f"expected comma-separated {kind.__name__}s, "
                         f"got {one_line(text, 60)!r}") from None
    bad = [v for v in values if not lo <= v <= hi]  # NaN is in no range
    if bad:
        raise InputError("<args>", flag, f"every value must be in [{lo:g}, {hi:g}], got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise InputError("<args>", flag, f"a value listed twice: {one_line(text, 60)!r}")
    return values


METHODS = ("batched", "early_exit", "sequential", "concurrent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before anything is built or written: a bad value is one line."""
    from altosim.argparser import count, finite
    from altosim.schemas.limits import MAX_ROWS

    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--n-train", type=count(1, MAX_ROWS), default=256)
    ap.add_argument("--n-val", type=count(1, MAX_ROWS), default=64)
    ap.add_argument("--n-eval", type=count(0, MAX_ROWS), default=64)
    ap.add_argument("--epochs", type=count(1, 10_000), default=3)
    ap.add_argument("--evals", type=count(1, 100_000), default=40, help="evaluations per job")
    ap.add_argument("--warmup", type=finite(0, 1), default=None, help="ALTO warm-up ratio (default: the policy's)")
    ap.add_argument("--seq-len", type=count(2, 1 << 20), default=256)
    ap.add_argument("--peft-steps", type=count(1, 100_000), default=20)
    ap.add_argument("--ranks", default="16,32,64", help="LoRA ranks of the grid")
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in LRS), help="learning rates of the grid")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="per-adapter batch sizes of the grid")
    ap.add_argument("--backbone-layers", type=count(1, 10_000), default=None,
                    help="keep only the first N decoder layers of the backbone (traces labelled <model>-L<N>)")
    ap.add_argument("--methods", default="sequential,batched,early_exit")
    ap.add_argument("--concurrent-workers", type=count(1, 1024), default=15,
                    help="PEFT worker processes of method 'concurrent'")
    ap.add_argument("--concurrent-seconds", type=finite(1e-3, 86_400), default=60.0,
                    help="how long the workers are timed together")
    ap.add_argument("--concurrent-factor", type=finite(0, 1e6), default=7.7,
                    help="estimated speedup of concurrent PEFT workers over one-at-a-time (0: no such row)")
    ap.add_argument("--reference-trace", help="LossTrace set of an earlier full sweep (when 'batched' is not run)")
    ap.add_argument("--log-every", type=count(0, 10**9), default=25, help="progress line every N fused steps (0: none)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--traces-out", help="write the batched run's LossTrace set here")
    args = ap.parse_args(argv)
    args.ranks = comma_list(args.ranks, "--ranks", int, 1, 65_536)
    args.lrs = comma_list(args.lrs, "--lrs", float, 1e-12, 10.0)
    args.batches = comma_list(args.batches, "--batches", int, 1, 65_536)
    for flag, value in (("--backbone", args.backbone), ("--reference-trace", args.reference_trace),
                        ("--traces-out", args.traces_out), ("--out", args.out)):
        if value is not None and not str(value).strip():
            raise InputError("<args>", flag, "empty")
    args.methods = args.methods.split(",")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or len(set(args.methods)) != len(args.methods):
        raise InputError("<args>", "--methods", f"unknown {unknown}; known: {', '.join(METHODS)}" if unknown else
                         "a method listed twice")
    return args


def check_data_and_backbone(dataset: str, backbone: str, ranks: list[int], n_train: int, n_val: int,
                            n_eval: int = 1) -> None:
    """What a run of `--dataset`, `--backbone` and `--ranks` would fail on later, said before a
    script writes anything: an unknown or broken data set, a backbone path that is not there, a
    rank wider than the backbone's narrowest targeted layer (else refused only once the run's
    workload file is written, and named by that file)."""
    from altoruntime.data import get_dataset
    from altoruntime.run import rank_limit

    try:
        get_dataset(dataset, n_train=n_train, n_val=n_val, n_eval=max(n_eval, 1), seed=0)
    except InputError:  # a data file's own problem: it names the file
        raise
    except ValueError as e:  # an unknown name
        raise InputError("<args>", "--dataset", str(e)) from None
    if backbone not in ("tiny", "smollm2") and not (backbone.strip() and Path(backbone).expanduser().exists()):
        raise InputError(backbone if backbone.strip() else "<args>", "--backbone",
                         "no such model folder or .gguf file (or tiny, smollm2)")
    limit = rank_limit(backbone)
    if limit is not None and max(ranks) > limit[0]:
        raise InputError("<args>", "--ranks", f"{max(ranks)} exceeds min(d_in, d_out) = {limit[0]} of {backbone}'s "
                         f"targeted layer {limit[1]!r}; give ranks <= {limit[0]}")


def check_inputs(args: argparse.Namespace) -> Path:
    """Everything a run would fail on later, said now (nothing written yet): --out, the data set,
    the backbone path, the ranks, the reference trace. Returns the checked --out."""
    out = check_out(args.out)
    if args.traces_out is not None:
        check_out(args.traces_out, "--traces-out")
    check_data_and_backbone(args.dataset, args.backbone, args.ranks, args.n_train, args.n_val, args.n_eval)
    if args.reference_trace is not None:
        read_loss_traces(args.reference_trace)  # unreadable: an InputError naming it
    return out


def main(argv: list[str] | None = None) -> None:
    """Bad input is one line on stderr and exit code 2, before anything is written; Ctrl-C or
    SIGTERM (a time limit) keeps what was measured and exits 130 with one line."""
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` sends SIGTERM: stop like Ctrl-C, keep partial outputs
    try:
        args = parse_args(argv)
        out = check_inputs(args)
        sweep(args, out)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted; the methods measured so far are under {getattr(args, 'out', '?')}/", file=sys.stderr)
        sys.exit(130)


def sweep(args: argparse.Namespace, out: Path) -> None:
    args.model = model_label(args.backbone_layers)
    args.task = task_name(args.dataset)
    use_backbone_layers(args.backbone_layers)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    samples = args.epochs * args.n_train
    try:
        wl = workload(args.dataset, samples, args.evals, args.seq_len, args.ranks, args.lrs, args.batches, args.model)
    except ValidationError as e:  # e.g. more evaluations than samples allow
        raise from_validation_error(e, "<args>") from None
    out.mkdir(parents=True, exist_ok=True)
    wl_file = out / f"e2e_{args.task}_workload.json"
    write_workload(wl, wl_file)
    task = wl.to_task_specs()[0]
    rows: list[dict] = []
    for method in args.methods:  # in the order given: partial results survive a time limit
        if method == "sequential":
            rows += sequential_rows(args, task, samples)
        elif method == "concurrent":
            rows.append(concurrent_row(args, task, samples))
        else:
            rows.append(ours_row(args, wl_file, method, task, samples, device, out))
        report(rows, args, device, samples, len(task.jobs), out)


def ours_row(args, wl_file: Path, method: str, task, samples: int, device: str, out: Path) -> dict:
    """(b) or (c): one `alto run` of the grid; the batched run also writes the LossTrace set."""
    ee = {"batched": "none", "early_exit": "alto"}[method]
    try:
        wall, log = run_ours(args, wl_file, ee, out / f"run_{method}")
    except RunInterrupted as e:  # a time limit: keep the curves measured so far, marked partial
        if method == "batched" and args.traces_out:
            ts = traces_from(e.log, task, samples, device, args.model)
            ts.meta["partial"] = f"interrupted after {e.wall_s:.0f} s: curves end where the run stopped"
            write_loss_traces(ts, Path(args.traces_out) / f"{args.model}__{args.task}.partial.csv.gz")
            print(f"partial traces written ({e.wall_s:.0f} s)", file=sys.stderr)
        raise
    fin = log.results[task.task_id]
    per_job: dict[str, int] = {}
    for e in log.events:
        if isinstance(e, StepReport):
            per_job[e.job_id] = e.samples
    j = task.job(fin.best_job) if fin.best_job else None
    if method == "batched" and args.traces_out:
        write_loss_traces(traces_from(log, task, samples, device, args.model),
                          Path(args.traces_out) / f"{args.model}__{args.task}.csv.gz")
    return {"method": method, "configs": len(task.jobs), "wall_s": wall,
            "samples_trained": sum(per_job.values()),
            "best_config": f"lr={j.lr:g} r={j.rank} b={j.batch_size}" if j else "",
            "best_val_loss": fin.best_val_loss, "best_metric": log.metrics.get(task.task_id, math.nan),
            "extrapolated": False, "note": f"alto run, early_exit={ee}, wall includes evaluation"}


def concurrent_row(args, task, samples: int) -> dict:
    """PEFT workers sharing the GPU (Ray Tune with fractional GPUs), extrapolated from contended
    step times measured with all workers running at once (experiments/concurrent_peft.py)."""
    t0 = time.perf_counter()
    ranks = sorted({min(args.ranks), max(args.ranks)})
    step_s = measure(args.backbone, args.dataset, args.n_train, args.seq_len, ranks, args.batches,
                     args.concurrent_workers, args.concurrent_seconds)
    measured = time.perf_counter() - t0
    wall = extrapolate([(j.rank, j.batch_size, task.total_steps(j)) for j in task.jobs], step_s,
                       args.concurrent_workers)
    return {"method": "concurrent_peft", "configs": len(task.jobs), "wall_s": wall,
            "samples_trained": samples * len(task.jobs), "best_config": "", "best_val_loss": math.nan,
            "best_metric": math.nan, "extrapolated": True,
            "note": f"extrapolated: {args.concurrent_workers} PEFT worker processes sharing the GPU, contended "
                    f"ms/step per (rank, batch) measured with all running at once for {args.concurrent_seconds:g} s "
                    f"({measured:.0f} s with loading), configs assigned longest-first; training steps only"}


def sequential_rows(args, task, samples: int) -> list[dict]:
    """(a) extrapolated from measured PEFT step times, and the concurrent-workers estimate."""
    t0 = time.perf_counter()
    st = peft_step_times(args, args.seq_len)
    measured = time.perf_counter() - t0
    lo, hi = min(args.ranks), max(args.ranks)
    total = sum(task.total_steps(j) * st[(lo if j.rank - lo < hi - j.rank else hi, j.batch_size)]
                for j in task.jobs)
    rows = [{"method": "sequential_peft", "configs": len(task.jobs), "wall_s": total,
             "samples_trained": samples * len(task.jobs), "best_config": "", "best_val_loss": math.nan,
             "best_metric": math.nan, "extrapolated": True,
             "note": f"extrapolated: sum over configs of steps x measured PEFT ms/step at its batch "
                     f"(nearest of the smallest/largest rank; {args.peft_steps} steps each, measured in "
                     f"{measured:.0f} s); training steps only, no evaluation"}]
    if args.concurrent_factor > 0:
        rows.append({"method": "concurrent_peft_est", "configs": len(task.jobs), "wall_s": total / args.concurrent_factor,
                     "samples_trained": samples * len(task.jobs), "best_config": "", "best_val_loss": math.nan,
                     "best_metric": math.nan, "extrapolated": True,
                     "note": f"estimated, not measured here: sequential_peft / {args.concurrent_factor:g}, the "
                             "speedup 14-16 PEFT worker processes sharing one H100 reached over one-at-a-time on "
                             "a similar 60-config SmolLM2 grid (../shared/device/README.md): what a Ray Tune "
                             "user with fractional GPUs gets"})
    return rows


def report(rows: list[dict], args, device: str, samples: int, configs: int, out: Path) -> None:
    """Write (and print) the CSV of the methods measured so far: partial results survive a timeout."""
    df = pd.DataFrame(rows)
    df.insert(0, "gpu", device)
    df.insert(1, "dataset", args.task)
    if "sequential_peft" in set(df["method"]):
        seq = df.loc[df["method"] == "sequential_peft", "wall_s"].iloc[0]
        df["speedup_vs_sequential"] = seq / df["wall_s"]
    if "concurrent_peft" in set(df["method"]):
        conc = df.loc[df["method"] == "concurrent_peft", "wall_s"].iloc[0]
        df["speedup_vs_concurrent_peft"] = conc / df["wall_s"]
    if "concurrent_peft_est" in set(df["method"]):
        conc = df.loc[df["method"] == "concurrent_peft_est", "wall_s"].iloc[0]
        df["speedup_vs_concurrent_peft_est"] = conc / df["wall_s"]
    full = df.loc[df["method"] == "batched", "best_val_loss"]
    if len(full):
        df["val_loss_vs_full_sweep"] = df["best_val_loss"] / full.iloc[0] - 1
    elif args.reference_trace:  # the full sweep ran earlier: its best val loss from its LossTrace set
        ref = min(float(np.nanmin(c.val)) for c in read_loss_traces(args.reference_trace).curves)
        df["val_loss_vs_full_sweep"] = df["best_val_loss"] / ref - 1
        df["full_sweep_from"] = str(args.reference_trace)
    df["samples_saved"] = 1 - df["samples_trained"] / (samples * configs)
    csv = out / f"e2e_{device.replace(' ', '_')}_{args.task}.csv"
    write_csv(df, csv)
    try:  # the CSV is written first: a plotting problem must not lose the measurements
        plot_e2e(csv)
    except Exception as e:  # noqa: BLE001
        print(f"warning: no plot for {csv}: {e}", file=sys.stderr)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(df.drop(columns=["note"]).to_string(index=False), flush=True)



if __name__ == "__main__":
    main()
