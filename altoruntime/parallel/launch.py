"""`python -m altoruntime.parallel.launch --nproc P script.py args...`: standalone torchrun.

    torchrun --standalone --nproc-per-node P experiments/bench_parallel.py ...   # the same thing

NCCL on GPUs, gloo on CPU (chosen by `altoruntime.parallel.procs.init_from_env` in the script).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """`python -m altoruntime.parallel.launch --nproc P script.py args...` = standalone torchrun."""
    from torch.distributed.run import main as torchrun

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[0] != "--nproc" or not argv[1].isdigit():
        raise SystemExit("usage: python -m altoruntime.parallel.launch --nproc P script.py [args...]")
    torchrun(["--standalone", "--nproc-per-node", argv[1], *argv[2:]])


if __name__ == "__main__":
    main()
