"""`alto.tune` and `alto.simulate`: one call in, a result object out (tables as pandas DataFrames).

Both validate every argument with the same pydantic models the config files go through, so bad
input raises `altosim.errors.InputError` naming the field (the CLI prints it as one line).
Nothing is written outside `out`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from altosim.errors import CONFIG, InputError, from_validation_error


@dataclass
class TuneResult:
    """What `alto.tune` found: `table` is the task's configs.csv (ranked, best first), `best` the
    best config's hyperparameters (with its id and scores), `best_adapter` its PEFT folder."""

    out: Path
    table: pd.DataFrame
    best: dict[str, Any]
    best_adapter: Path | None
    summary: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # every task's table (a multi-task config)


@dataclass
class SimulateResult:
    """What `alto.simulate` wrote: the run's summary row, the per-task table, and the files."""

    out: Path
    summary: dict[str, Any]
    tasks: pd.DataFrame
    files: list[Path]
    warnings: list[str]


def _policy(early_exit: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if early_exit is None:
        return None
    return {"name": early_exit} if isinstance(early_exit, str) else dict(early_exit)


def tune(model: str, dataset: str, search_space: dict[str, Any], early_exit: str | dict[str, Any] = "alto",
         gpus: int = 1, out: str | Path = "runs/tune", *, objective: dict[str, Any] | None = None,
         samples_per_job: int = 256, epochs: float | None = None, task: dict[str, Any] | None = None,
         eval_every_samples: int | None = None, seq_len: int = 512,
         n_train: int = 2000, n_val: int = 200, n_eval: int = 0, save_adapters: str = "best",
         task_id: str = "task", seed: int = 0, progress: bool = False) -> TuneResult:
    """Train every config of `search_space` on `dataset` over `model`, exiting weak ones early.

    Args:
      model: backbone: "tiny" (random 2-layer Llama, for CPU tries), "smollm2", or a local model path.
      dataset: a JSONL / CSV / Parquet file of prompt / completion rows, or a built-in dataset name.
      search_space: grid lists and/or distributions, as in a workload's `search_space`
        (e.g. {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3}, "rank": [8, 16],
        "batch_size": [2], "sampler": "quasi-random", "n_configs": 16, "seed": 0}).
      early_exit: a registered early-exit policy name ("alto", "asha", "median", "none", ...) or
        {"name": ..., "params": {...}}.
      gpus: GPUs the task uses (CPU when none is present).
      out: output folder (configs.csv, losses.png, best_adapter, events.jsonl under it).
      objective: {"metric": "val_loss" | "exact_match" | "rouge_l" | "module:function",
        "direction": "minimize" | "maximize"}; default validation loss, minimized.
      samples_per_job: samples a config trains on if it runs to the end.
      epochs: instead of samples_per_job, passes over the train set (ceil(epochs x n_train)).
      task: further task fields, as a workload task takes them (e.g. lr_schedule, warmup_ratio,
        max_grad_norm, validation, validation_fraction, split_seed, prompt_column).
      n_train, n_val, n_eval: examples taken from `dataset` for training, validation and the
        generation metric (0: no generation).
      save_adapters: "best" or "survivors" (every config that ran to the end).

    Returns:
      TuneResult with `.table`, `.best`, `.best_adapter`.
    """
    from pydantic import ValidationError

    from altosim.schemas import WorkloadTrace, config_from_dict
    from altoruntime.run import run_config

    record = {"id": task_id, "arrival": 0.0, "model": model, "dataset": str(dataset), "gpus": gpus,
              "search_space": search_space, "eval_every_samples": eval_every_samples, "seq_len": seq_len,
              **({"epochs": epochs} if epochs is not None else {"samples_per_job": samples_per_job}), **(task or {})}
    if objective is not None:
        record["objective"] = objective
    try:
        workload = WorkloadTrace.model_validate({"name": "alto.tune", "synthetic": False, "tasks": [record]})
    except ValidationError as e:
        raise from_validation_error(e, "alto.tune") from None
    policy: dict[str, Any] = {"inter_task": {"name": "fifo"}}
    if early_exit is not None:
        policy["early_exit"] = _policy(early_exit)
    cfg = config_from_dict({"cluster": {"gpus": gpus}, "seed": seed, "policy": policy}, "alto.tune")
    on_step = on_samples = bar = None
    if progress:
        from altoruntime.cli import ProgressBar

        bar = ProgressBar()
        on_step, on_samples = bar.on_step, bar.on_samples
    try:
        log = run_config(cfg, Path(out), backbone=model, n_train=n_train, n_val=n_val, n_eval=n_eval,
                         progress=on_step, on_samples=on_samples, save_adapters=save_adapters, workload=workload,
                         data_base=Path.cwd())
    finally:
        if bar is not None:
            bar.close()
    return tune_result(Path(out), [task_id], log.summary)


def tune_result(out: Path, task_ids: list[str], summary: dict[str, str]) -> TuneResult:
    """The result object of a finished run, read back from what it wrote (configs.csv, tasks.csv)."""
    from altosim.ids import task_dir

    tables = {t: pd.read_csv(task_dir(out, t) / "configs.csv") for t in task_ids}
    first = task_ids[0]
    table = tables[first]
    ranked = table.dropna(subset=["rank_by_objective"])
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in ranked.iloc[0].items()} if len(ranked) else {}
    adapter = task_dir(out, first) / "best_adapter"
    return TuneResult(out, table, best, adapter if adapter.is_dir() else None, summary.get(first, ""), tables)


def simulate(config: str | Path | dict[str, Any] | None = None, out: str | Path = "runs/simulate", *,
             early_exit: str | dict[str, Any] | None = None) -> SimulateResult:
    """Simulate a workload on a cluster with the same policies `alto.tune` runs.

    Args:
      config: a run config file (YAML/JSON), the same as a mapping, or None for the embedded
        default workload (11 tuning tasks on 8 GPUs).
      out: output folder (summary.csv, tasks.csv, events.jsonl, gantt.png, losses_*.png).
      early_exit: replaces the config's early-exit policy (a name or {"name", "params"}).

    Returns:
      SimulateResult with `.summary` (one row: makespan, samples saved, regret, ...) and `.tasks`.
    """
    from altosim.schemas import RunConfig, config_from_dict, load_config
    from altosim.simulate import simulate_to_folder

    if isinstance(config, dict):
        cfg = config_from_dict(config, CONFIG, Path.cwd())
    elif isinstance(config, RunConfig):
        cfg = config
    else:
        cfg = load_config(config)
    if early_exit is not None:
        data = cfg.model_dump()
        data["policy"]["early_exit"] = _policy(early_exit)
        cfg = config_from_dict(data, cfg.file)
    run, files, warnings = simulate_to_folder(cfg, out)
    return SimulateResult(Path(out), dict(run.summary), run.tasks_df, files, warnings)


__all__ = ["InputError", "SimulateResult", "TuneResult", "simulate", "tune", "tune_result"]
