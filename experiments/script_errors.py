"""How an experiment script ends on bad input, as `alto`'s commands do: one line on stderr naming
the file and the field, exit code 2, no traceback; Ctrl-C (or SIGTERM) one line and exit 130.

    if __name__ == "__main__":
        run_script(main)
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from altosim.errors import InputError, one_line


def run_script(main: Callable[[], Any]) -> None:
    """Run `main()` and exit with its return code (0 for None); bad input exits 2 with one line."""
    with one_line_errors():
        code = main()
    sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Bad input inside the block exits 2 with one line on stderr; Ctrl-C exits 130 with one."""
    try:
        yield
    except InputError as e:
        _fail(str(e))
    except ValueError as e:  # argument checks of the scripts and the library raise ValueError with the field named
        _fail(one_line(e))
    except RecursionError:
        _fail("<input>: nested too deeply to read")
    except OSError as e:  # the file system refused (an --out that is a file, a missing input, a full disk)
        _fail(f"{one_line(e.filename or '<file>')}: {one_line(e.strerror or e)}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)
