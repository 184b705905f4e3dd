"""One error type for bad user input, rendered as one line: `<file>: [line N: ]<field>: <problem>`.

The CLI prints `str(e)` and exits with code 2 for any `InputError`; it never shows a traceback
for bad input (ARCHITECTURE rule 4). In-memory input uses the file name `"<config>"`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

CONFIG = "<config>"
_PATH = re.compile(r"^[A-Za-z_][\w.\[\]]*$")


MAX_ECHO = 300  # characters of a file name, field or problem shown; a 1 MB value is not echoed back


def one_line(text: Any, limit: int = MAX_ECHO) -> str:
    """`text` on one line, cut to `limit` characters (with how much was left out)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else f"{s[:limit]}... [{len(s) - limit} more characters]"


class InputError(ValueError):
    """Bad input: names the file, the row (CSV line number, 1-based, header = line 1), the field.
    Every part is shown on one line and truncated (`MAX_ECHO`), whatever the input held."""

    def __init__(self, file: str, field: str, problem: str, line: int | None = None) -> None:
        self.file = one_line(file)
        self.field = one_line(field)
        self.problem = one_line(problem)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{self.file}: {where}{self.field}: {self.problem}"

    def __reduce__(self):  # keep picklable with the custom __init__
        return (InputError, (self.file, self.field, self.problem, self.line))


def format_loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    """pydantic location -> dotted path: ("tasks", 3, "gpus") -> "tasks[3].gpus"."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def from_validation_error(
    err: ValidationError, file: str, line: int | None = None, prefix: str = ""
) -> InputError:
    """The first error of a pydantic ValidationError as an InputError (plus how many more)."""
    errors = err.errors(include_url=False)
    first = errors[0]
    # pydantic's validator and union-member names are not fields (search-space axis tags: "<list>", ...)
    loc = tuple(p for p in first.get("loc", ())
                if p not in ("function-after", "function-before") and not (isinstance(p, str) and p.startswith("<")))
    problem = str(first.get("msg", "invalid value"))
    if problem.startswith("Value error, "):
        problem = problem[len("Value error, ") :]
    if first.get("type") not in ("missing", "extra_forbidden") and "input" in first:
        inp = first["input"]
        if not isinstance(inp, (dict, list)):
            problem += f" (got {_short(inp)})"
    if first.get("type") == "extra_forbidden":
        problem = "unknown field (not allowed here)"
    if first.get("type") == "value_error" and ": " in problem and _PATH.match(problem.split(": ", 1)[0]):
        path, problem = problem.split(": ", 1)  # model-level check that names its own field
        loc = (*loc, path)
    if len(errors) > 1:
        problem += f" [+{len(errors) - 1} more error(s)]"
    return InputError(file, format_loc(loc, prefix), problem, line)
