"""Task ids: the safe alphabet every input is checked against, and the folder a task's outputs go to.

A task id is 1-64 characters of ASCII letters, digits, '.', '_' and '-', starting with a letter
or a digit (so never '.', '..', a hidden name, an option-like '-x', a NUL, a '/' or a space).
Ids of one workload must differ ignoring case, so their folders differ on case-insensitive file
systems too. Job ids are derived (`<task>/j<index>`), never read from the user.

A task's files go to `<out>/tasks/<id>/`: a folder of its own, which no run-level output name
(`tasks.csv`, `events.jsonl`, `run.ckpt`, ...) can collide with and which `task_dir` checks stays
inside `<out>`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import StringConstraints

MAX_ID_LEN = 64
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ID_RULE = f"1-{MAX_ID_LEN} characters of letters, digits, '.', '_', '-', starting with a letter or digit"
_ID = re.compile(ID_PATTERN)
TASKS_FOLDER = "tasks"

TaskId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]


def id_problem(value: object) -> str | None:
    """Why `value` is not a valid task id, or None when it is."""
    if not isinstance(value, str):
        return f"a task id must be a string ({ID_RULE})"
    if not (1 <= len(value) <= MAX_ID_LEN) or not _ID.match(value):
        return f"not a valid task id: {ID_RULE}"
    return None


def task_dir(out: str | Path, task_id: str) -> Path:
    """`<out>/tasks/<id>`: where a task's outputs (its best adapter) go. Raises ValueError for an
    id outside the safe alphabet, so no id can name a path outside `out`."""
    problem = id_problem(task_id)
    if problem:
        raise ValueError(f"task id {task_id!r:.80}: {problem}")
    out = Path(out)
    path = out / TASKS_FOLDER / task_id
    if path.resolve().parent != (out / TASKS_FOLDER).resolve():
        raise ValueError(f"task id {task_id!r}: its folder would leave {out}")
    return path
