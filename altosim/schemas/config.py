"""Run configuration (`alto simulate CONFIG`): cluster, inputs, policies, seed, output folder.

YAML or JSON; unknown keys are errors. Relative paths (workload, loss_traces, cost_profile,
out) are taken relative to the config file's folder and stored resolved. Policy names are not
checked here: the policy registry does that when it builds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from altosim.errors import CONFIG, InputError, from_validation_error
from altosim.schemas.limits import MAX_CONFIGS, MAX_GPUS, MAX_SEED, Float, Int
from altosim.schemas.workload import WorkloadTrace

DEFAULT = "default"
ANALYTIC = "analytic"


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: Int = Field(8, ge=1, le=MAX_GPUS, description=f"GPUs in the cluster (at most {MAX_GPUS})")
    gpu_type: str = Field("H100", min_length=1, description="GPU type, a key of the cost profile")
    gpu_memory_gb: Float = Field(80.0, gt=0, allow_inf_nan=False, description="memory per GPU, GB")
    link_gbps: Float = Field(400.0, gt=0, allow_inf_nan=False, description="GPU interconnect, Gbit/s")


class PolicyRef(BaseModel):
    """A policy picked by registry name, with keyword parameters for its factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data  # `early_exit: asha`


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _resolve_tuned(self) -> "PolicyConfig":
        """`early_exit: {name: tuned, params: {file: ...}}` becomes the `alto` policy with the
        file's parameters here, when the config loads, so no policy reads a file later."""
        from altosim.tuned_params import resolve_tuned

        name, params = resolve_tuned(self.early_exit.name, dict(self.early_exit.params))
        if name != self.early_exit.name:
            object.__setattr__(self, "early_exit", PolicyRef(name=name, params=params))
        return self

    early_exit: PolicyRef = Field(default_factory=lambda: PolicyRef(name="alto"))
    inter_task: PolicyRef = Field(default_factory=lambda: PolicyRef(name="cpsat"))
    batching: bool = Field(True, description="co-locate a task's jobs in fused groups")
    max_jobs_per_group: Int | None = Field(None, ge=1, le=MAX_CONFIGS, description="cap on co-located jobs")
    memory_margin: Float = Field(0.1, ge=0, lt=1, description="memory safety margin (fraction)")
    planner_sees_arrivals: bool = Field(
        False, description="offline planning study (`alto simulate` only): the inter-task scheduler is told every "
        "task's arrival ahead and plans them with release times (cpsat only)")


class RunConfig(BaseModel):
    """Everything one simulation run needs. `RunConfig()` is the default run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    workload: str = Field(DEFAULT, description="workload trace file, or 'default'")
    loss_traces: str = Field(DEFAULT, description="folder of loss-trace sets, or 'default'")
    cost_profile: str = Field(ANALYTIC, description="cost profile CSV, or 'analytic'")
    cost_profile_method: Literal["interp", "hostgpu"] = Field(
        "interp", description="how step times are read from the profile: multilinear interpolation of the grid, or "
                              "the host-floor / GPU-line fit (smoother on a host-bound, jittery profile; `alto "
                              "check-fidelity` reports which predicts held-out rows better)")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    out: str | None = Field(None, description="output folder")
    _file: str = PrivateAttr(CONFIG)

    @property
    def file(self) -> str:
        """The file this config came from ("<config>" when built in memory)."""
        return self._file

    def check_workload(self, trace: WorkloadTrace, file: str, epochs_ok: bool = False) -> None:
        """Contradictions between this config and a workload: a task larger than the cluster; a
        task in epochs where nothing reads the data (the simulator: `epochs_ok` False); no task at all
        (a run of nothing would write empty tables and exit 0)."""
        if not trace.tasks:
            raise InputError(file, "tasks", "empty: the workload has no task to run")
        for i, t in enumerate(trace.tasks):
            if t.epochs is not None and not epochs_ok:
                raise InputError(file, f"tasks[{i}].epochs", "the simulator does not read the data, so it cannot count "
                                 "epochs: give samples_per_job (epochs x train examples) instead")
            if t.gpus > self.cluster.gpus:
                raise InputError(
                    file, f"tasks[{i}].gpus",
                    f"task {t.id!r} needs {t.gpus} GPUs but the cluster has {self.cluster.gpus} "
                    f"(cluster.gpus in {self.file})",
                )


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML or JSON file's top-level mapping; an empty file, bad syntax, a key given twice or
    anything but a mapping -> InputError."""
    from altosim.files import loads_json, loads_yaml, read_text  # no cycle: files imports only errors and outdir

    text = read_text(path)  # a leading BOM (some editors write one) is dropped
    data = loads_json(text, str(path)) if path.suffix == ".json" else loads_yaml(text, str(path))
    if data is None:  # an empty YAML file (or one of comments only): a truncated write, not a choice
        raise InputError(str(path), "<root>", "empty: no settings (write `{}` to run the defaults)")
    if not isinstance(data, dict):
        raise InputError(str(path), "<root>", f"expected a mapping of settings, got {type(data).__name__}")
    return data


def _tuned_file_from(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A `tuned` policy's relative `file` taken relative to the config's folder, like the
    other paths (the file is read when the config validates)."""
    ee = (data.get("policy") or {}).get("early_exit") if isinstance(data.get("policy"), dict) else None
    if not isinstance(ee, dict) or ee.get("name") != "tuned" or not isinstance(ee.get("params"), dict):
        return data
    file = ee["params"].get("file")
    if not isinstance(file, str) or not file or Path(file).expanduser().is_absolute():
        return data
    params = {**ee["params"], "file": str(base / Path(file).expanduser())}
    return {**data, "policy": {**data["policy"], "early_exit": {**ee, "params": params}}}


def config_from_dict(data: dict[str, Any], file: str = CONFIG, base: Path | None = None) -> RunConfig:
    """Validate a mapping; relative paths are resolved against `base` and must exist."""
    if base is not None:
        data = _tuned_file_from(data, base)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e, file) from None
    if base is not None:
        updates: dict[str, Any] = {}
        for key, special in (("workload", DEFAULT), ("loss_traces", DEFAULT), ("cost_profile", ANALYTIC)):
            value = getattr(cfg, key)
            if value != special:
                p = Path(value).expanduser()
                p = p if p.is_absolute() else base / p
                try:
                    found = p.exists()
                except OSError as e:  # e.g. a name longer than the file system allows
                    raise InputError(file, key, f"unusable path ({len(str(p))} characters): {e.strerror or e}") from None
                if not found:
                    raise InputError(file, key, f"no such {'folder' if key == 'loss_traces' else 'file'}: {p}")
                if key != "loss_traces" and p.is_dir():
                    raise InputError(file, key, f"is a folder, expected a file: {p}")
                if key == "loss_traces" and not p.is_dir():
                    raise InputError(file, key, f"is a file, expected a folder of loss-trace sets: {p}")
                updates[key] = str(p)
        if cfg.out is not None and not Path(cfg.out).expanduser().is_absolute():
            updates["out"] = str(base / cfg.out)
        cfg = cfg.model_copy(update=updates)
    cfg._file = file
    return cfg


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read a run config (YAML or JSON); None -> the default run (embedded workload)."""
    if path is None:
        return RunConfig()
    if not str(path).strip():  # Path("") is ".": "is a folder" would name no file
        raise InputError("<args>", "config", "empty: give a YAML or JSON run config file")
    path = Path(path)
    return config_from_dict(read_mapping(path), str(path), path.resolve().parent)
