"""Plain data the policy core reads and writes: job/task specs, events in, actions out.

Everything here is a frozen dataclass so that an event log can be serialized, replayed and
compared action by action (ARCHITECTURE rule 1). Time always arrives with an event (`now`,
seconds); the policy core never reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Union

# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One LoRA config of a task. `job_id` is unique across the whole workload."""

    job_id: str
    task_id: str
    lr: float
    rank: int
    batch_size: int
    alpha: float | None = None  # None -> 2 * rank (the paper's default)
    dropout: float = 0.0
    weight_decay: float = 0.01
    seed: int = 0
    # gradient accumulation: `batch_size` samples per optimizer step, fed in this many micro-batches
    # of `micro_batch` rows (what must fit in memory); steps and samples count optimizer steps
    grad_accum_steps: int = 1
    # training knobs searched per config; None -> the task's (TaskSpec.knobs)
    lr_schedule: str | None = None
    warmup_ratio: float | None = None
    max_grad_norm: float | None = None

    @property
    def micro_batch(self) -> int:
        """Rows of one forward/backward pass: batch_size / grad_accum_steps."""
        return self.batch_size // self.grad_accum_steps

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else 2.0 * self.rank) / self.rank


@dataclass(frozen=True)
class TaskSpec:
    """One tuning request: a backbone, a dataset, a grid of jobs, a GPU demand.

    `samples_per_job` is the number of training samples each job sees if it runs to the end
    (epochs x train-set size); a job of batch size b runs ceil(samples_per_job / b) steps.
    Evaluation happens at equal *sample* counts across jobs (every `eval_every_samples`, default
    1% of `samples_per_job`, so the 5% warm-up holds five evaluations), which keeps jobs of
    different batch sizes comparable at each evaluation (median stopping, ASHA rungs).
    """

    task_id: str
    arrival: float
    model: str
    dataset: str
    gpus: int
    jobs: tuple[JobSpec, ...]
    samples_per_job: int
    eval_every_samples: int | None = None
    seq_len: int = 512
    # training knobs every job of the task shares (the runtime applies them; the simulator's
    # loss traces were measured with whatever they were)
    lr_schedule: str = "constant"  # constant | linear | cosine, after a linear warm-up
    warmup_ratio: float = 0.0  # warm-up as a fraction of each job's total steps
    max_grad_norm: float | None = None  # clip each adapter's gradient norm (None: off)
    # a fixed-duration job (TaskRecord.rigid): one placeholder job of one step, never cut by early
    # exit; the backend's step takes the task's given duration
    rigid: bool = False

    def total_steps(self, job: JobSpec) -> int:
        return math.ceil(self.samples_per_job / job.batch_size)

    def knobs(self, job: JobSpec) -> tuple[str, float, float | None]:
        """(lr schedule, warm-up ratio, max grad norm) of `job`: its own where searched, else the task's."""
        return (job.lr_schedule if job.lr_schedule is not None else self.lr_schedule,
                job.warmup_ratio if job.warmup_ratio is not None else self.warmup_ratio,
                job.max_grad_norm if job.max_grad_norm is not None else self.max_grad_norm)

    def warmup_steps(self, job: JobSpec) -> int:
        """The job's lr warm-up steps (rounded up, as the HF Trainer does)."""
        return math.ceil(self.knobs(job)[1] * self.total_steps(job))

    def eval_every_steps(self, job: JobSpec) -> int:
        """A job evaluates every this many of its steps (and at its last step)."""
        every = self.eval_every_samples or max(1, self.samples_per_job // 100)
        return max(1, round(every / job.batch_size))

    def is_eval_step(self, job: JobSpec, step: int) -> bool:
        return step % self.eval_every_steps(job) == 0 or step >= self.total_steps(job)

    def job(self, job_id: str) -> JobSpec:
        for j in self.jobs:
            if j.job_id == job_id:
                return j
        raise KeyError(job_id)


# ---------------------------------------------------------------------------------------------
# Events (backend -> policy)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskArrived:
    """A task joins the queue. `more_coming`: other tasks arrive at this same instant, so the
    Controller plans once, after the last of them (a batch of tasks is planned as a whole)."""

    now: float
    task: TaskSpec
    more_coming: bool = False
    kind: Literal["task_arrived"] = "task_arrived"


@dataclass(frozen=True)
class StepReport:
    """A job's progress at one of its evaluation points (the only signal early exit reads).

    `train_loss` is the mean training loss over the steps since the previous report; `val_loss`
    the validation loss at this step (None when the backend did not evaluate); `metric` an
    optional task metric (higher is better, e.g. exact-match accuracy).
    """

    now: float
    task_id: str
    job_id: str
    step: int
    samples: int
    train_loss: float
    val_loss: float | None = None
    metric: float | None = None
    kind: Literal["step_report"] = "step_report"


@dataclass(frozen=True)
class JobFinished:
    """A job ran all its steps (the backend sends its final StepReport first)."""

    now: float
    task_id: str
    job_id: str
    kind: Literal["job_finished"] = "job_finished"


@dataclass(frozen=True)
class JobFailed:
    """A job could not go on (NaN loss, out of memory alone, ...): the task continues."""

    now: float
    task_id: str
    job_id: str
    reason: str
    kind: Literal["job_failed"] = "job_failed"


@dataclass(frozen=True)
class Tick:
    """Nothing happened but time passed (lets a planner start tasks it delayed)."""

    now: float
    kind: Literal["tick"] = "tick"


@dataclass(frozen=True)
class TasksAnnounced:
    """Tasks that will arrive (each at its `arrival`), told ahead for offline planning studies
    (`policy.planner_sees_arrivals`): a scheduler that plans releases (cpsat) plans them too."""

    now: float
    tasks: tuple[TaskSpec, ...]
    kind: Literal["tasks_announced"] = "tasks_announced"


Event = Union[TaskArrived, StepReport, JobFinished, JobFailed, Tick, TasksAnnounced]

# ---------------------------------------------------------------------------------------------
# Actions (policy -> backend)
# ---------------------------------------------------------------------------------------------

StopReason = Literal[
    "diverging", "overfitting", "underperforming", "pruned", "budget", "failed", "no_fit"
]


@dataclass(frozen=True)
class StartTask:
    """Place a task's executor on these GPUs (ids 0..n-1 of the cluster)."""

    task_id: str
    gpus: tuple[int, ...]
    kind: Literal["start_task"] = "start_task"


@dataclass(frozen=True)
class Admit:
    """Add a job to its task's running group; `resume` = it was suspended, keep its state."""

    task_id: str
    job_id: str
    resume: bool = False
    kind: Literal["admit"] = "admit"


@dataclass(frozen=True)
class Suspend:
    """Take a job out of the group but keep its adapter, optimizer state and history."""

    task_id: str
    job_id: str
    kind: Literal["suspend"] = "suspend"


@dataclass(frozen=True)
class Stop:
    """Stop a job for good. `restore_best`: keep the best-validation snapshot as its result."""

    task_id: str
    job_id: str
    reason: StopReason
    restore_best: bool = False
    kind: Literal["stop"] = "stop"


@dataclass(frozen=True)
class FinishTask:
    """All jobs of a task are done: release its GPUs; `best_job` has the lowest val loss."""

    task_id: str
    gpus: tuple[int, ...]
    best_job: str | None
    best_val_loss: float | None
    kind: Literal["finish_task"] = "finish_task"


Action = Union[StartTask, Admit, Suspend, Stop, FinishTask]

EVENT_KINDS = {c.__dataclass_fields__["kind"].default: c
               for c in (TaskArrived, StepReport, JobFinished, JobFailed, Tick, TasksAnnounced)}
ACTION_KINDS = {c.__dataclass_fields__["kind"].default: c for c in (StartTask, Admit, Suspend, Stop, FinishTask)}


JOB_DEFAULTS = {"grad_accum_steps": 1, "lr_schedule": None, "warmup_ratio": None, "max_grad_norm": None}


def _fields_set(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a job's fields added since the first logs are left out at their defaults: logs read as before
    if not any(k == "job_id" for k, _ in pairs) or not any(k == "rank" for k, _ in pairs):
        return dict(pairs)  # not a JobSpec
    return {k: v for k, v in pairs if not (k in JOB_DEFAULTS and v == JOB_DEFAULTS[k])}


def to_dict(obj: Any) -> dict[str, Any]:
    """Event/action -> JSON-able dict (tuples become lists; specs nest). A job's fields added since
    the first logs, and a tuning task's `rigid: false`, are left out at their defaults, so logs of
    workloads without them read as they did."""
    d = asdict(obj, dict_factory=_fields_set)
    if isinstance(obj, TaskArrived) and not obj.task.rigid:
        del d["task"]["rigid"]
    return d


def _task_from_dict(d: dict[str, Any]) -> TaskSpec:
    d = dict(d)
    d["jobs"] = tuple(JobSpec(**j) for j in d["jobs"])
    return TaskSpec(**d)


def event_from_dict(d: dict[str, Any]) -> Event:
    cls = EVENT_KINDS.get(d.get("kind"))
    if cls is None:
        raise ValueError(f"unknown event kind {d.get('kind')!r}")
    d = dict(d)
    if cls is TaskArrived:
        d["task"] = _task_from_dict(d["task"])
    if cls is TasksAnnounced:
        d["tasks"] = tuple(_task_from_dict(t) for t in d["tasks"])
    return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def action_from_dict(d: dict[str, Any]) -> Action:
    cls = ACTION_KINDS.get(d.get("kind"))
    if cls is None:
        raise ValueError(f"unknown action kind {d.get('kind')!r}")
    d = dict(d)
    if "gpus" in d:
        d["gpus"] = tuple(d["gpus"])
    return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class JobHistory:
    """What early exit knows about one job: its reports in order (mutable, policy-owned)."""

    job: JobSpec
    total_steps: int
    steps: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    val: list[float | None] = field(default_factory=list)
    metric: list[float | None] = field(default_factory=list)

    def add(self, r: StepReport) -> None:
        self.steps.append(r.step)
        self.samples.append(r.samples)
        self.train.append(r.train_loss)
        self.val.append(r.val_loss)
        self.metric.append(r.metric)

    @property
    def progress(self) -> float:
        """Fraction of the job's steps done (0..1)."""
        return (self.steps[-1] / self.total_steps) if self.steps else 0.0

    def best_val(self) -> float | None:
        vals = [v for v in self.val if v is not None and math.isfinite(v)]
        return min(vals) if vals else None
