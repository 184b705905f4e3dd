"""Shared pieces of the hostile-input tests: a small valid run, and the CLI called in-process."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
from pathlib import Path
from typing import Any, Iterator

from altosim.cli import main

LOSS_SET = "Llama-3.2-1B__gsm8k__synthetic"  # an embedded loss-trace set
TASK: dict[str, Any] = {
    "id": "t1", "arrival": 0, "model": "Llama-3.2-1B", "dataset": "gsm8k", "gpus": 1,
    "search_space": {"lr": [1e-4, 2e-4], "rank": [8], "batch_size": [4]},
    "samples_per_job": 1000, "loss_trace": LOSS_SET,
}
WORKLOAD: dict[str, Any] = {"name": "w", "synthetic": True, "tasks": [TASK]}
CONFIG: dict[str, Any] = {"workload": "wl.json", "cluster": {"gpus": 2}}


def write_run(folder: Path, workload: Any = None, config: Any = None, name: str = "cfg.json") -> str:
    """wl.json + a config naming it, in `folder`; returns the config's path."""
    (folder / "wl.json").write_text(json.dumps(copy.deepcopy(WORKLOAD) if workload is None else workload))
    (folder / name).write_text(json.dumps(copy.deepcopy(CONFIG) if config is None else config))
    return str(folder / name)


def workload_with(**task_fields: Any) -> dict[str, Any]:
    wl = copy.deepcopy(WORKLOAD)
    wl["tasks"][0].update(task_fields)
    return wl


def cli(*argv: str) -> tuple[int, str, str]:
    """`alto ARGV` in this process: (exit code, stdout, stderr); argparse's exits count too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def assert_input_error(rc: int, err: str, *words: str, max_len: int = 1200) -> None:
    """Exit code 2, exactly one short line on stderr, no traceback, naming each of `words`."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    assert lines[0].startswith("alto: error: ") and "Traceback" not in err
    assert len(lines[0]) <= max_len, f"{len(lines[0])} characters echoed"
    for w in words:
        assert w in lines[0], (w, lines[0])


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: a read of a FIFO with no writer blocks forever."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
