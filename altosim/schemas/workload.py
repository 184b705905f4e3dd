"""Workload traces: tasks with arrival times and search spaces (pydantic, validated at the boundary).

`WorkloadTrace.to_task_specs()` turns the records into the policy core's frozen `TaskSpec`s.
Extra keys are rejected everywhere so that a typo in a trace is an error, not a silent default.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from altosim.ids import ID_RULE, id_problem
from altosim.schemas.limits import (MAX_EPOCHS, MAX_SECONDS, MAX_EVALS, MAX_GPUS, MAX_SAMPLES, MAX_SEED, MAX_SEQ_LEN, MAX_TASKS,
                                   Float, Int)
from altosim.schemas.model_shape import ShapeSpec
from altosim.schemas.objective import Objective
from altosim.schemas.search_space import SearchSpace, job_seed  # noqa: F401 (re-exported)
from altosim.policy.types import JobSpec, TaskSpec


# a shape, or a config.json path; tagged so that an error names only the branch the value took
ShapeOrPath = Annotated[Union[Annotated[ShapeSpec, Tag("<shape>")], Annotated[str, Tag("<path>")]],
                        Discriminator(lambda v: "<path>" if isinstance(v, str) else "<shape>")]


class TaskRecord(BaseModel):
    """One task as stored in a trace file: a tuning task (a search space whose jobs the simulator
    trains and early exit may cut), or with `rigid: true` a fixed-duration job from a cluster trace
    (no search space, no loss traces: it holds its GPUs for `duration_s`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description=f"unique task id: {ID_RULE} (altosim/ids.py)")
    arrival: Float = Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="arrival time, seconds")
    model: str = Field(min_length=1, description="backbone name, e.g. Llama-3.2-1B (`alto run`: the --backbone "
                       "trains it); for `alto run` also a local model folder or .gguf file (relative to the workload "
                       "file) or a Hugging Face hub id (org/name) already in the local cache")
    dataset: str = Field(min_length=1, description="dataset name (e.g. gsm8k); for `alto run` also a JSONL/CSV/Parquet file "
                         "or folder, relative to the workload file")
    gpus: Int = Field(ge=1, le=MAX_GPUS, description="GPUs the task's executor needs")
    search_space: SearchSpace | None = Field(None, description="the configs to tune; required unless rigid")
    samples_per_job: Int | None = Field(None, gt=0, le=MAX_SAMPLES,
                                        description="samples a job sees if it runs to the end (or give epochs); "
                                        "none for a rigid task")
    eval_every_samples: Int | None = Field(None, gt=0, description="None -> 1% of samples_per_job")
    seq_len: Int = Field(512, gt=0, le=MAX_SEQ_LEN, description="training sequence length, tokens")
    loss_trace: str | None = Field(None, description="loss-trace set name; None -> model__dataset")
    objective: Objective = Field(default_factory=Objective, description="what picks and ranks the best config")
    duration_s: Float | None = Field(
        None, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="worst-case (no early exit) wall time; when set the simulator scales step "
        "times so that the task's no-exit duration equals it (used by real-trace imports); a rigid "
        "task's fixed run time (required then)",
    )
    rigid: bool = Field(False, description="a fixed-duration job (e.g. from a cluster trace): holds its GPUs for "
                        "duration_s, planned like any task, never touched by early exit; no search space, "
                        "samples or loss traces. `alto run` refuses it (nothing to train)")
    model_shape: ShapeOrPath | None = Field(
        None, description="the backbone's shape when the cost model knows no such model: a mapping (layers, "
        "hidden, intermediate, heads, kv_heads, vocab, ...) or the path of a local Hugging Face config.json "
        "(relative to the workload file); the simulator prices steps from it (tasks.csv cost_source)")

    # `alto run` only (the simulator ignores them): the task's own model, LoRA targets, data format and
    # training knobs (lr schedule, gradient clipping)
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="backbone dtype; None -> bfloat16 on a GPU, float32 on the CPU")
    target_modules: str | list[str] | None = Field(
        None, description="LoRA targets as PEFT takes them: 'all-linear' (every linear layer but the output head), "
        "module-name suffixes, or a regex matched against the full module name; None -> all-linear")
    prompt_column: str = Field("prompt", min_length=1, description="dataset column of the prompts")
    completion_column: str = Field("completion", min_length=1, description="dataset column of the completions")
    messages_column: str = Field("messages", min_length=1, description="dataset column of chat messages "
                                 "([{role, content}], the last from the assistant), read when there is no prompt column")
    loss_on: Literal["completion", "all"] = Field("completion", description="tokens trained on: the completion "
                                                  "(last assistant turn) only, or the whole sequence")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="lr over each job's steps after the warm-up (transformers' schedules)")
    warmup_ratio: Float = Field(0.0, ge=0, lt=1, allow_inf_nan=False,
                                description="linear lr warm-up, as a fraction of each job's total steps")
    max_grad_norm: Float | None = Field(None, gt=0, allow_inf_nan=False,
                                        description="clip each adapter's gradient 2-norm to this; None -> no clipping")
    validation: str | None = Field(None, min_length=1, description="validation rows: a file or folder (relative to the "
                                   "workload file); `dataset` then holds the train rows")
    validation_fraction: Float | None = Field(None, gt=0, lt=1, allow_inf_nan=False,
                                              description="hold out this seeded share of the dataset's rows "
                                              "for validation")
    split_seed: Int = Field(0, ge=0, le=MAX_SEED, description="seed of the validation_fraction split")
    group_by_length: bool = Field(False, description="batches of similar-length rows (runs of 50 batches sorted by "
                                  "length, as transformers' group_by_length): less padding, same rows per epoch")
    epochs: Float | None = Field(None, gt=0, le=MAX_EPOCHS, allow_inf_nan=False,
                                 description="passes over the train set instead of samples_per_job: `alto run` "
                                 "resolves it to ceil(epochs x train examples) once the data is read")

    RUN_FIELDS: ClassVar[tuple[str, ...]] = ("dtype", "target_modules", "prompt_column", "completion_column", "messages_column", "loss_on",
                                              "lr_schedule", "warmup_ratio", "max_grad_norm", "epochs", "validation",
                                              "validation_fraction", "split_seed", "group_by_length")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if not v or any(not x for x in v):
                raise ValueError("must list at least one module name, none empty")
        elif isinstance(v, str):
            if not v:
                raise ValueError("must not be empty; e.g. 'all-linear', ['q_proj', 'v_proj'] or a regex")
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regex: {e}") from None
        return v

    def run_fields_set(self) -> set[str]:
        """The `alto run`-only fields that differ from their defaults (the rest need not be written)."""
        return {k for k in self.RUN_FIELDS if getattr(self, k) != type(self).model_fields[k].default}

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> str:
        problem = id_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _kind(self) -> "TaskRecord":
        if self.rigid:
            if self.duration_s is None:
                raise ValueError("duration_s: required for a rigid task (its fixed run time, seconds)")
            for k in ("search_space", "samples_per_job", "epochs", "eval_every_samples", "loss_trace"):
                if getattr(self, k) is not None:
                    raise ValueError(f"{k}: a rigid task has none (it trains nothing); leave it out")
        else:
            for k in ("search_space",):  # samples_per_job or epochs: _evals
                if getattr(self, k) is None:
                    raise ValueError(f"{k}: required for a tuning task (or set rigid: true for a fixed-duration job)")
            if self.loss_trace is None:
                object.__setattr__(self, "loss_trace", f"{self.model}__{self.dataset}")  # the default set name
        return self

    @model_validator(mode="after")
    def _evals(self) -> "TaskRecord":
        if self.rigid:
            return self
        if self.validation is not None and self.validation_fraction is not None:
            raise ValueError("validation_fraction: give a validation file or a fraction, not both")
        if (self.samples_per_job is None) == (self.epochs is None):
            raise ValueError("samples_per_job: give samples_per_job or epochs (one of them, not both)")
        if self.samples_per_job is None:
            return self  # checked again once epochs resolve (resolve_epochs)
        every = self.eval_every_samples or max(1, self.samples_per_job // 100)
        if self.samples_per_job / every > MAX_EVALS:
            raise ValueError(f"eval_every_samples: {self.samples_per_job} samples at one evaluation every {every} "
                             f"is more than {MAX_EVALS} evaluations per job")
        return self

    def resolve_epochs(self, train_examples: int) -> "TaskRecord":
        """This task with `epochs` turned into samples_per_job = ceil(epochs x train_examples)
        (itself when it gives samples_per_job); validated again (ValueError on a bad result)."""
        if self.epochs is None:
            return self
        if train_examples < 1:
            raise ValueError(f"epochs: the train set is empty ({train_examples} examples)")
        samples = math.ceil(self.epochs * train_examples - 1e-9)  # 1.0 x 64 is 64, not 65
        return type(self).model_validate({**self.model_dump(), "samples_per_job": samples, "epochs": None})

    def to_task_spec(self, cache: dict | None = None) -> TaskSpec:
        if self.rigid:  # one placeholder job of one step: the backend holds the GPUs for duration_s
            run = JobSpec(job_id=f"{self.id}/run", task_id=self.id, lr=0.0, rank=1, batch_size=1)
            return TaskSpec(task_id=self.id, arrival=self.arrival, model=self.model, dataset=self.dataset,
                            gpus=self.gpus, jobs=(run,), samples_per_job=1, seq_len=self.seq_len, rigid=True)
        if self.samples_per_job is None:
            raise ValueError(f"task {self.id!r}: epochs must be resolved against the train set first (resolve_epochs)")
        space = self.search_space
        assert space is not None and self.samples_per_job is not None  # _kind
        jobs = tuple(
            JobSpec(
                job_id=f"{self.id}/j{i:03d}", task_id=self.id, lr=c["lr"], rank=c["rank"],
                batch_size=c["batch_size"] * c["grad_accum_steps"], alpha=c["alpha"], dropout=c["dropout"],
                weight_decay=c["weight_decay"],
                seed=c["seed"] if space.searched_seed else job_seed(space.seed, self.id, i),
                grad_accum_steps=c["grad_accum_steps"], lr_schedule=c["lr_schedule"], warmup_ratio=c["warmup_ratio"],
                max_grad_norm=c["max_grad_norm"],
            )
            for i, c in space.configs(cache)
        )
        return TaskSpec(
            task_id=self.id, arrival=self.arrival, model=self.model, dataset=self.dataset,
            gpus=self.gpus, jobs=jobs, samples_per_job=self.samples_per_job,
            eval_every_samples=self.eval_every_samples, seq_len=self.seq_len,
            lr_schedule=self.lr_schedule, warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm,
        )


class WorkloadTrace(BaseModel):
    """Tasks with arrival times; `meta` holds how it was made (importer knobs, generator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    synthetic: bool = Field(description="True when any part was generated, not measured")
    source: str = Field("", description="where it came from (file, generator, paper)")
    meta: dict[str, Any] = Field(default_factory=dict)
    tasks: list[TaskRecord] = Field(max_length=MAX_TASKS)

    @model_validator(mode="after")
    def _unique_ids(self) -> "WorkloadTrace":
        seen: dict[str, str] = {}
        for i, t in enumerate(self.tasks):
            key = t.id.casefold()  # task folders must differ on case-insensitive file systems too
            if key in seen:
                same = "" if seen[key] == t.id else f" (same as {seen[key]!r} ignoring case)"
                raise ValueError(f"tasks[{i}].id: duplicate task id {t.id!r}{same}")
            seen[key] = t.id
        return self

    def to_task_specs(self) -> list[TaskSpec]:
        cache: dict = {}
        return [t.to_task_spec(cache) for t in self.tasks]

    def task(self, task_id: str) -> TaskRecord:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)
