"""The argument parser of `alto` and of every experiment script, and its bounded value types: a bad flag or flag value is one line
`<command>: error: <args>: <problem> (see <prog> --help)` on stderr and exit code 2, as any other bad
input (ARCHITECTURE rule 4), instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Callable, NoReturn, Sequence

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

    def name_list(self, flag: str, text: str, known: Sequence[str]) -> list[str]:
        """A comma-separated flag value as names, each one of `known`; anything else is the parser's
        one-line error (before the script does any work)."""
        names = text.split(",")
        if unknown := [n for n in names if n not in known]:
            self.error(f"{flag}: unknown {unknown}; choose from {','.join(known)}")
        return names


def count(lo: int, hi: int) -> Any:
    """An argparse type: an integer in [lo, hi] (bool-free, as the config's fields)."""
    return _bounded(int, "integer", lo, hi)


def finite(lo: float, hi: float) -> Any:
    """An argparse type: a number in [lo, hi] (NaN and inf are not)."""
    return _bounded(float, "number", lo, hi)


def _bounded(convert: Callable[[str], Any], kind: str, lo: Any, hi: Any) -> Any:
    article, bounds = ("an", f"[{lo}, {hi}]") if convert is int else ("a", f"[{lo:g}, {hi:g}]")

    def parse(text: str) -> Any:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {article} {kind}, got {one_line(text, 40)!r}") from None
        if not lo <= v <= hi:  # NaN is in no range
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {v}")
        return v

    parse.__name__ = kind
    return parse


def share(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {one_line(text, 40)!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v
