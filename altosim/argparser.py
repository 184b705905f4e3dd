"""The argument parser of `alto` and of every experiment script: a bad flag or flag value is one line
`<command>: error: <args>: <problem> (see <prog> --help)` on stderr and exit code 2, as any other bad
input (ARCHITECTURE rule 4), instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, NoReturn

from altosim.errors import one_line


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line and exit code 2.

    `command` names the program at the head of the line (default: `prog`, which for a script is its
    file name, e.g. `e2e_sweep.py`). Subcommand parsers are OneLineParsers naming the same command
    (`alto: error: ...` from `alto run`), with their own prog in the `--help` hint."""

    def __init__(self, *args: Any, command: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command = command or self.prog

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", functools.partial(type(self), command=self.command))
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.command}: error: <args>: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    def int_list(self, flag: str, text: str, minimum: int = 1, choices: tuple[int, ...] | None = None) -> list[int]:
        """A comma-separated flag value as ints, each >= `minimum` (or one of `choices`); anything
        else is the parser's one-line error."""
        try:
            values = [int(x) for x in text.split(",")]
        except ValueError:
            self.error(f"{flag}: expected comma-separated integers, got {text!r}")
        if bad := [v for v in values if (v not in choices if choices is not None else v < minimum)]:
            want = f"one of {', '.join(map(str, choices))}" if choices is not None else f">= {minimum}"
            self.error(f"{flag}: each must be {want}, got {bad[0]} in {text!r}")
        return values
