"""The baseline an HPO user runs instead of alto: Ray Tune + ASHA, one PEFT LoRA trial per config.

The same grid, task, budget, validation set and evaluation interval as experiments/e2e_sweep.py
(its `workload()`: same job seeds, data order and evaluation steps). Each trial trains one config
with the standard PEFT + torch AdamW loop (concurrent_peft.make_peft), validates at every
evaluation step (token-weighted CE over the validation split, as alto's runtime does) and reports
`val_loss` with `samples` (samples trained) as ASHA's time attribute, so rungs compare trials at
equal samples. `--trials-at-once` trials share one GPU (resources {"gpu": 1/k}; on CPU, 1/k of the
CPUs), with Tune's actor reuse. Rung settings (issue 28): `default` = grace period one evaluation,
reduction factor 4 (Ray's defaults in evaluation units); `gentle` = grace period 10% of the budget,
reduction factor 3.

The backbone (a GGUF de-quantizes for ~30 s) is converted once per script run into a plain
checkpoint in a temp folder; every trial loads it from that folder. The tokenized splits go to the
trials through Ray's object store (`tune.with_parameters`). Wall time is Tune's start to its last
trial done (the conversion and Ray's start are timed apart, in the note).

Writes under --out: raytune_<gpu>.csv (the e2e CSV's columns, one row per rung setting; with
--reference-trace, `regret`: the chosen config's full-sweep val loss over the sweep's best, minus 1),
raytune_<gpu>_trials.csv (per trial: config, samples, last/best val loss, stopped by ASHA) and
raytune_<gpu>_reports.csv (every report). `best_metric` is the best config's generation metric
(--n-eval examples), scored after Tune from the best-validation adapter its trial saved at its
last step (NaN if ASHA stopped that trial). Ray's own files stay in a temp folder.

    python experiments/raytune_asha.py --backbone /root/model/SmolLM2-135M-Instruct.Q4_1.gguf \
        --dataset python_docs --n-train 128 --n-val 48 --evals 40 --rungs default,gentle \
        --reference-trace traces/real/SmolLM2-135M__python_docs.csv.gz --out $OUT
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator

from altosim.argparser import OneLineParser, count, finite
from altosim.errors import InputError, from_validation_error
from altosim.policy.types import JobSpec, TaskSpec
from altosim.report import write_csv
from altosim.traces_io import read_loss_traces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrent_peft import make_peft  # noqa: E402
from e2e_sweep import BATCHES, LRS, model_label, workload  # noqa: E402

VAL_BATCH = 16  # alto run's validation batch (run_config's val_batch_size)
OBJECT_STORE = 512 * 2**20  # bytes: the tokenized splits are a few MB (Ray's default takes 30% of RAM)


class Settings(BaseModel):
    """The command line, checked: a bad value is one line naming the flag."""

    model_config = ConfigDict(extra="forbid")

    backbone: str
    dataset: str
    n_train: int = Field(gt=0)
    n_val: int = Field(gt=0)
    n_eval: int = Field(ge=0)
    epochs: int = Field(gt=0)
    evals: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    ranks: list[int] = Field(min_length=1)
    lrs: list[float] = Field(min_length=1)
    batches: list[int] = Field(min_length=1)
    backbone_layers: int | None = Field(None, gt=0)
    rungs: list[Literal["default", "gentle"]] = Field(min_length=1)
    trials_at_once: int = Field(gt=0)
    cpus: int | None = Field(None, gt=0)
    sequential_s: float | None = Field(None, gt=0)
    reference_trace: FilePath | None = None
    out: str

    @field_validator("ranks", "batches", "lrs", "rungs", mode="before")
    @classmethod
    def comma_list(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else v

    @field_validator("ranks", "batches")
    @classmethod
    def positive_ints(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"every value must be > 0, got {v}")
        return v

    @field_validator("lrs")
    @classmethod
    def positive_lrs(cls, v: list[float]) -> list[float]:
        if any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError(f"every learning rate must be finite and > 0, got {v}")
        return v


def rung_params(name: str, task: TaskSpec) -> tuple[int, float]:
    """(grace period in samples, reduction factor) of a rung setting. `default`: the first
    evaluation (the fewest samples any config reports at first) and 4, as Ray's defaults are in
    evaluations; `gentle`: 10% of the budget and 3."""
    if name == "default":
        return min(task.eval_every_steps(j) * j.batch_size for j in task.jobs), 4
    return max(1, math.ceil(0.1 * task.samples_per_job)), 3


def plain_checkpoint(backbone: str, layers: int | None, dtype: torch.dtype, folder: Path) -> None:
    """The backbone as a plain save_pretrained folder (a GGUF-loaded model refuses to save: its
    weights go into a fresh model of the same class and config, without quantization_config)."""
    from altoruntime.backbone import keep_layers
    from altoruntime.run import open_backbone

    from transformers.utils import logging

    logging.disable_progress_bar()
    base = open_backbone(backbone, dtype)
    m = base.model
    if layers is not None:
        keep_layers(m, layers)
    cfg = copy.deepcopy(m.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = type(m)(cfg)
    plain.load_state_dict(m.state_dict())
    plain.to(dtype).save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)


def validate(model: Any, val: list[Any], dev: torch.device) -> tuple[float, float]:
    """Token-weighted mean CE and teacher-forced token accuracy over the validation batches."""
    loss, hits, count = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for b in val:
            logits = model(input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev)).logits[:, :-1]
            target = b.labels[:, 1:].to(dev)
            live = target != -100
            lg, tg = logits[live].float(), target[live]
            loss += float(torch.nn.functional.cross_entropy(lg, tg, reduction="sum"))
            hits += int((lg.argmax(-1) == tg).sum())
            count += int(live.sum())
    model.train()
    return loss / max(count, 1), hits / max(count, 1)


def train_trial(config: dict, model_dir: str = "", train: Any = None, val: Any = None, task: TaskSpec = None,
                adapter_dir: str = "") -> None:
    """One Tune trial: one config trained with PEFT + AdamW, reporting at every evaluation step.
    With `adapter_dir`, a trial that runs to the end saves its best-validation adapter there (a
    device copy at each improvement, saved at its last step): the best config's generation metric
    is scored from it."""
    from ray import tune
    from transformers import AutoModelForCausalLM

    job = JobSpec(**config["job"])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(dev)
    torch.manual_seed(job.seed)
    peft, opt = make_peft(model, job.rank)
    for g in opt.param_groups:
        g["lr"], g["weight_decay"] = job.lr, job.weight_decay
    stream = train.stream(job.batch_size, seed=job.seed)
    lora = {n: p for n, p in peft.named_parameters() if p.requires_grad}
    samples, loss_sum, loss_n, best, snapshot = 0, 0.0, 0, math.inf, None
    for step in range(1, task.total_steps(job) + 1):
        b = next(stream)
        out = peft(input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev), labels=b.labels.to(dev))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        samples += int(b.input_ids.shape[0])
        loss_sum, loss_n = loss_sum + float(out.loss), loss_n + 1
        if task.is_eval_step(job, step):
            v, acc = validate(peft, val, dev)
            if v < best and adapter_dir:
                snapshot = {n: p.detach().clone() for n, p in lora.items()}
            best = min(best, v)
            if step == task.total_steps(job) and snapshot is not None:
                save_adapter(peft, lora, snapshot, Path(adapter_dir) / job.job_id.replace("/", "_"))
            tune.report({"val_loss": v, "best_val_loss": best, "metric": acc, "samples": samples, "step": step,
                         "train_loss": loss_sum / loss_n})
            loss_sum, loss_n = 0.0, 0


def save_adapter(peft: Any, lora: dict[str, torch.Tensor], snapshot: dict[str, torch.Tensor], path: Path) -> None:
    """The trial's best-validation adapter in PEFT format, written before its last report (ASHA
    stops a trial at max_t on that report: code after it never runs)."""
    with torch.no_grad():
        for n, p in lora.items():
            p.copy_(snapshot[n])
    peft.save_pretrained(str(path))


def generation_metric(model_dir: Path, adapter: Path, ds: Any, seq_len: int) -> float:
    """The dataset's metric of greedy generations on its eval split (as alto scores its best
    adapter: merged into the backbone, 64 prompts per generate call)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from altoruntime.data.evaluate import greedy_predictions

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(dev)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    return float(ds.metric(greedy_predictions(model, tok, ds, "eval", batch_size=64, seq_len=seq_len), "eval"))


def make_collector(label: str, n_trials: int, t0: list[float]) -> Any:
    """A Tune callback keeping every report and printing a line per finished trial."""
    from ray.tune import Callback

    class Collector(Callback):
        def __init__(self) -> None:
            self.reports: list[dict] = []
            self.done = 0
            self.last_done = 0.0

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            self.reports.append({"job_id": trial.config["job"]["job_id"], **{
                k: result.get(k) for k in ("samples", "step", "train_loss", "val_loss", "metric")},
                "t_s": time.perf_counter() - t0[0]})

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            self.tick(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            self.tick(trial, "ERROR")

        def tick(self, trial: Any, how: str) -> None:
            self.done += 1
            self.last_done = time.perf_counter() - t0[0]
            j, r = trial.config["job"], trial.last_result or {}
            print(f"[{label}] {self.done}/{n_trials} trials done at {self.last_done:.0f} s: lr={j['lr']:g} "
                  f"r={j['rank']} b={j['batch_size']} {how} at {r.get('samples', 0)} samples, best val "
                  f"{r.get('best_val_loss', math.nan):.4f}", file=sys.stderr, flush=True)

    return Collector()


def run_asha(s: Settings, task: TaskSpec, rungs: str, model_dir: Path, data: tuple[Any, Any], resources: dict,
             storage: Path, adapter_dir: Path | None) -> tuple[float, pd.DataFrame, pd.DataFrame, dict]:
    """One Tune run of the whole grid under one rung setting: (wall s, per-trial table, reports, settings)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    grace, rf = rung_params(rungs, task)
    sched = ASHAScheduler(time_attr="samples", metric="val_loss", mode="min", max_t=task.samples_per_job,
                          grace_period=grace, reduction_factor=rf)
    train, val = data
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, model_dir=str(model_dir), train=train, val=list(val.batches(VAL_BATCH)),
                             task=task, adapter_dir=str(adapter_dir or "")), resources)
    t0 = [time.perf_counter()]
    collect = make_collector(f"asha {rungs}", len(task.jobs), t0)
    name = lambda trial: trial.config["job"]["job_id"].replace("/", "_")  # noqa: E731
    tuner = tune.Tuner(
        trainable, param_space={"job": tune.grid_search([asdict(j) for j in task.jobs])},
        tune_config=tune.TuneConfig(scheduler=sched, num_samples=1, max_concurrent_trials=s.trials_at_once,
                                    reuse_actors=True, trial_name_creator=name, trial_dirname_creator=name),
        run_config=tune.RunConfig(name=f"asha_{rungs}", storage_path=str(storage), verbose=0,
                                   callbacks=[collect, JsonLoggerCallback()]))
    print(f"[asha {rungs}] Tune starts: {len(task.jobs)} trials, {s.trials_at_once} at once, resources {resources}, "
          f"grace {grace} samples, reduction factor {rf}, max_t {task.samples_per_job}", file=sys.stderr, flush=True)
    t0[0] = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0[0]
    rows = []
    for res in grid:
        j, m = res.config["job"], res.metrics or {}
        done = int(m.get("samples", 0) or 0)
        rows.append({"rungs": rungs, "job_id": j["job_id"], "lr": j["lr"], "rank": j["rank"], "batch_size": j["batch_size"],
                     "samples_trained": done, "last_val_loss": m.get("val_loss", math.nan),
                     "best_val_loss": m.get("best_val_loss", math.nan),
                     "stopped_by_asha": res.error is None and done < task.samples_per_job,
                     "error": "" if res.error is None else str(res.error).splitlines()[0][:200]})
        if res.error is not None:
            print(f"[asha {rungs}] trial {j['job_id']} failed: {res.error}", file=sys.stderr)
    trials = pd.DataFrame(rows).sort_values("job_id", ignore_index=True)
    reports = pd.DataFrame(collect.reports)
    reports.insert(0, "rungs", rungs)
    return wall, trials, reports, {"grace": grace, "rf": rf, "last_trial_done_s": collect.last_done,
                                   "resources": resources, "trials_done": collect.done}


def reference_best(path: Path | None) -> tuple[float, dict[tuple[float, int, int], float]]:
    """The full sweep's best val loss and each config's best, from its LossTrace set."""
    if path is None:
        return math.nan, {}
    curves = read_loss_traces(path).curves
    per = {(float(c.lr), int(c.rank), int(c.batch_size)): float(np.nanmin(c.val)) for c in curves}
    return min(per.values()), per


def summary_row(s: Settings, task: TaskSpec, rungs: str, wall: float, trials: pd.DataFrame, info: dict,
                device: str, ref: tuple[float, dict], extra_note: str) -> dict:
    """One row in the e2e CSV's columns."""
    import ray

    ok = trials.dropna(subset=["best_val_loss"])
    best = ok.loc[ok["best_val_loss"].idxmin()] if len(ok) else None
    budget = task.samples_per_job * len(task.jobs)
    trained = int(trials["samples_trained"].sum())
    ref_best, per = ref
    row = {"gpu": device, "dataset": task.task_id, "method": f"raytune_asha_{rungs}", "configs": len(task.jobs),
           "wall_s": wall, "samples_trained": trained,
           "best_config": f"lr={best['lr']:g} r={int(best['rank'])} b={int(best['batch_size'])}" if best is not None else "",
           "best_val_loss": float(best["best_val_loss"]) if best is not None else math.nan,
           "best_metric": math.nan, "extrapolated": False,
           "speedup_vs_sequential": s.sequential_s / wall if s.sequential_s else math.nan,
           "samples_saved": 1 - trained / budget, "stopped_by_asha": int(trials["stopped_by_asha"].sum()),
           "failed_trials": int((trials["error"] != "").sum()), "trials_done": info["trials_done"]}
    if s.reference_trace is not None and best is not None:
        key = (float(best["lr"]), int(best["rank"]), int(best["batch_size"]))
        row["val_loss_vs_full_sweep"] = row["best_val_loss"] / ref_best - 1
        row["regret"] = per.get(key, math.nan) / ref_best - 1
        row["full_sweep_from"] = str(s.reference_trace)
    cut = "" if info["trials_done"] == len(task.jobs) else f"INCOMPLETE: {info['trials_done']} of {len(task.jobs)} trials finished; "
    row["note"] = (f"{cut}Ray Tune {ray.__version__} + ASHAScheduler (time_attr=samples, metric=val_loss, grace="
                   f"{info['grace']} samples, reduction_factor={info['rf']}, max_t={task.samples_per_job}), rungs="
                   f"{rungs}, {s.trials_at_once} trials at once on {device} (resources per trial {info['resources']}), "
                   f"reuse_actors, one PEFT LoRA + AdamW "
                   f"trial per config; wall = Tune start to last trial done ({info['last_trial_done_s']:.1f} s at "
                   f"the last trial's end); {extra_note}")
    return row


def score_best(row: dict, trials: pd.DataFrame, adapters: Path | None, model_dir: Path, ds: Any,
               seq_len: int) -> None:
    """The best config's generation metric into `row` (after Tune: outside wall_s), or why not."""
    if adapters is None:
        row["note"] += "; best_metric not computed (--n-eval 0)"
        return
    ok = trials.dropna(subset=["best_val_loss"])
    if not len(ok):
        return
    best = ok.loc[ok["best_val_loss"].idxmin()]
    path = adapters / best["job_id"].replace("/", "_")
    if not path.is_dir():
        row["note"] += "; best_metric NaN: the best config did not run to the end (ASHA stopped it)"
        return
    t = time.perf_counter()
    try:
        row["best_metric"] = generation_metric(model_dir, path, ds, seq_len)
    except Exception as e:  # noqa: BLE001  # the measurement above is written already
        row["note"] += f"; best_metric failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        return
    row["note"] += (f"; best_metric: the best config's best-validation adapter (kept on the device at each "
                    f"improvement, saved at its last step) scored after Tune in {time.perf_counter() - t:.1f} s "
                    "(outside wall_s), merged, greedy, on the eval split")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str] | None = None) -> Settings:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--n-train", type=count(1, 10**9), default=256)
    ap.add_argument("--n-val", type=count(1, 10**9), default=64)
    ap.add_argument("--n-eval", type=count(0, 10**9), default=64, help="eval examples of the best config's generation metric (0: none)")
    ap.add_argument("--epochs", type=count(1, 10_000), default=3)
    ap.add_argument("--evals", type=count(1, 100_000), default=40, help="evaluations per config")
    ap.add_argument("--seq-len", type=count(1, 1 << 20), default=256)
    ap.add_argument("--ranks", default="16,32,64")
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in LRS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--backbone-layers", type=count(1, 4096), default=None)
    ap.add_argument("--rungs", default="default", help="default, gentle or both (comma-separated, run in order)")
    ap.add_argument("--trials-at-once", type=count(1, 1024), default=15, help="trials sharing the GPU (or the CPUs)")
    ap.add_argument("--cpus", type=count(1, 4096), default=None, help="CPUs the local Ray instance gets (default: all)")
    ap.add_argument("--sequential-s", type=finite(1e-6, 1e9), default=None, help="sequential PEFT wall seconds (speedup column)")
    ap.add_argument("--reference-trace", default=None, help="LossTrace set of the full sweep (regret)")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    try:
        return Settings(**vars(a))
    except ValidationError as e:
        err = from_validation_error(e, "<args>")
        raise InputError("<args>", "--" + err.field.split(".")[0].split("[")[0].replace("_", "-"), err.problem) from None


def main(argv: list[str] | None = None) -> None:
    try:
        s = parse(argv)
        prepared = prepare(s)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    run(s, *prepared)


def prepare(s: Settings) -> tuple[TaskSpec, Any]:
    """The task and its data, checked before Ray starts (bad input: one line, nothing written)."""
    from altoruntime.data import get_dataset

    samples = s.epochs * s.n_train
    try:
        wl = workload(s.dataset, samples, s.evals, s.seq_len, s.ranks, s.lrs, s.batches, model_label(s.backbone_layers))
        rec = wl.tasks[0]
        ds = get_dataset(rec.dataset, n_train=s.n_train, n_val=s.n_val, n_eval=max(s.n_eval, 1), seed=0,
                         columns=(rec.prompt_column, rec.completion_column), messages=rec.messages_column)
    except InputError:
        raise
    except ValueError as e:
        raise InputError("<args>", "--dataset", str(e)) from None
    if s.reference_trace is not None:
        reference_best(s.reference_trace)  # unreadable: said now (read_loss_traces raises InputError)
    return wl.to_task_specs()[0], (ds, rec.loss_on)


def run(s: Settings, task: TaskSpec, data: tuple[Any, str]) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic, readable console output
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # only the JSON logger (the result grid reads it)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout`: stop like Ctrl-C, keep the settings already done
    out = Path(s.out)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    tmp = Path(tempfile.mkdtemp(prefix="rtasha_"))
    try:
        t = time.perf_counter()
        try:
            plain_checkpoint(s.backbone, s.backbone_layers, dtype, tmp / "backbone")
        except Exception as e:  # noqa: BLE001  # transformers' many load errors -> one line
            print(f"error: <args>: --backbone: cannot load {s.backbone}: {type(e).__name__}: "
                  f"{' '.join(str(e).split())[:300]}", file=sys.stderr)
            sys.exit(2)
        convert_s = time.perf_counter() - t
        print(f"backbone converted to a plain checkpoint in {convert_s:.1f} s", file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        from transformers import AutoTokenizer

        ds, loss_on = data
        tok = AutoTokenizer.from_pretrained(str(tmp / "backbone"))
        try:
            train, val = (ds.tokenize(tok, split, seq_len=task.seq_len, loss_on=loss_on) for split in ("train", "val"))
        except ValueError as e:
            print(f"error: <args>: --seq-len: {e}", file=sys.stderr)
            sys.exit(2)
        import ray

        t = time.perf_counter()
        cpus = s.cpus or os.cpu_count() or 1
        ray.init(address="local", num_cpus=cpus, num_gpus=torch.cuda.device_count(), include_dashboard=False,
                 log_to_driver=False,
                 object_store_memory=OBJECT_STORE, _temp_dir=str(tmp / "ray"), logging_level="warning")
        ray_s = time.perf_counter() - t
        print(f"Ray {ray.__version__} started in {ray_s:.1f} s", file=sys.stderr, flush=True)
        k = s.trials_at_once
        # 15 placement groups of {"GPU": 1/15} all fit one GPU (tried on Ray 2.60 with a fake GPU)
        resources = {"cpu": min(1.0, cpus / k), "gpu": 1 / k} if cuda else {"cpu": cpus / k}
        ref = reference_best(s.reference_trace)
        rows, trials, reports = [], [], []
        stem = f"raytune_{device.replace(' ', '_')}"
        for rungs in s.rungs:
            adapters = tmp / f"adapters_{rungs}" if s.n_eval else None
            wall, tr, rep, info = run_asha(s, task, rungs, tmp / "backbone", (train, val), resources, tmp / "tune",
                                           adapters)
            note = f"backbone converted to a plain checkpoint in {convert_s:.1f} s, Ray started in {ray_s:.1f} s (both outside wall_s)"
            rows.append(summary_row(s, task, rungs, wall, tr, info, device, ref, note))
            trials.append(tr)
            reports.append(rep)
            write_csv(pd.DataFrame(rows), out / f"{stem}.csv")  # after each setting: a time limit keeps the rest
            write_csv(pd.concat(trials, ignore_index=True), out / f"{stem}_trials.csv")
            write_csv(pd.concat(reports, ignore_index=True), out / f"{stem}_reports.csv")
            score_best(rows[-1], tr, adapters, tmp / "backbone", ds, task.seq_len)
            write_csv(pd.DataFrame(rows), out / f"{stem}.csv")
            with pd.option_context("display.width", 250, "display.max_columns", 30):
                print(pd.DataFrame(rows).drop(columns=["note"]).to_string(index=False), flush=True)
    finally:
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
