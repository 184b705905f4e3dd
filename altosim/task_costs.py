"""What a workload adds to the cost model: backbones named by shape, and rigid tasks' fixed durations.

`workload_shapes` reads each task's `model_shape` (a shape, or a Hugging Face config.json relative
to the workload file) into the cost model's per-model shapes, with the source each came from.
`FixedDurationCost` wraps any `StepCost` so that a rigid task's one placeholder step takes its
given duration (the simulator then holds the task's GPUs exactly that long).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from altosim.cost import ModelShape, StepCost, shape_from_spec
from altosim.errors import InputError
from altosim.policy.types import JobSpec, TaskSpec
from altosim.schemas import WorkloadTrace
from altosim.schemas.model_shape import ShapeSpec, read_hf_config


def workload_shapes(workload: WorkloadTrace, wl_file: str) -> tuple[dict[str, ModelShape], dict[str, str]]:
    """Per backbone name (lower case): the shape the workload gives it and its source ("shape" or
    "config.json"). Two tasks giving one name different shapes is an error."""
    base = Path(wl_file).resolve().parent if wl_file and not wl_file.startswith("<") else Path.cwd()
    shapes: dict[str, ModelShape] = {}
    sources: dict[str, str] = {}
    given: dict[str, tuple[str, ShapeSpec]] = {}
    read: dict[Path, ShapeSpec] = {}
    for i, t in enumerate(workload.tasks):
        if t.model_shape is None or t.rigid:
            continue
        if isinstance(t.model_shape, ShapeSpec):
            spec, source = t.model_shape, "shape"
        else:
            path = Path(t.model_shape).expanduser()
            path = path if path.is_absolute() else base / path
            if path.is_dir():
                path = path / "config.json"  # a model folder: its config
            if path not in read:
                read[path] = read_hf_config(path)
            spec, source = read[path], "config.json"
        key = t.model.lower()
        if key in given and given[key][1] != spec:
            raise InputError(wl_file, f"tasks[{i}].model_shape",
                             f"model {t.model!r} has another shape in task {given[key][0]!r}: one name, one shape")
        given.setdefault(key, (t.id, spec))
        shapes[key] = shape_from_spec(key, spec)
        sources[key] = source
    return shapes, sources


@dataclass(frozen=True)
class FixedDurationCost:
    """`cost`, except that a rigid task's single step takes its fixed duration."""

    cost: StepCost
    durations: Mapping[str, float]  # rigid task id -> seconds

    def step_time(self, task: TaskSpec, jobs: Sequence[JobSpec]) -> float:
        if task.rigid:
            return self.durations[task.task_id]
        return self.cost.step_time(task, jobs)
