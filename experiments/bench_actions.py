"""Host cost of the runtime's adapter actions: tensor ops and CPU milliseconds of each.

A suspend, resume, snapshot, stop or admit moves one adapter's blocks of every LoRA layer (SmolLM2-135M:
30 decoder layers x 7 targets = 210 layers, 420 stacks, 840 AdamW moments). On an H200 each tensor op
the host issues costs several microseconds whatever its size, so the op count is what an action costs
there (session 11's e2e run: 111 admits 6.2 s, 102 suspends 4.2 s). This counts the ops each action
dispatches (a TorchDispatchMode) on a model with SmolLM2's layer count and narrow widths (the count
does not depend on the widths), slots moving packed and suspended adapters parked as on CUDA, for a
first (cold: views made) and a second (warm) round of the same actions on the same slots. CPU milliseconds are a proxy
only (this machine's memcpys, no kernel launches).

    python experiments/bench_actions.py --out results/bench_actions_cpu
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pandas as pd  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from altoruntime.backbone import tiny_llama  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402
from altosim.report import write_csv  # noqa: E402

RANKS = (8, 16, 32)


class OpCount(TorchDispatchMode):
    """Counts the tensor ops dispatched inside the `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.n = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.n[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def measure(layers: int, adapters: int) -> list[dict]:
    model = tiny_llama(hidden=64, layers=layers, heads=4, kv_heads=2, intermediate=160, seed=0)
    tr = MultiAdapterTrainer(model, capacity=2 * adapters, park=True, cuda_graphs=False)
    tr.store.pack = True  # the CUDA path: slots move packed, parked adapters stay on the device
    tr.store.shrink_at = 0  # and, under CUDA graphs, the stacks keep their capacity (no reallocation here)
    tr.store.packed_inits = True
    for i in range(adapters):
        tr.admit(f"j{i}", rank=RANKS[i % len(RANKS)], lr=1e-4, seed=i)
    rows = []
    for rnd in ("cold", "warm"):
        k = 0 if rnd == "cold" else 1
        tr.prefetch_inits([(RANKS[-1], 1000 + k)])  # drawn in a background thread, as the runner does
        actions = [  # the warm round repeats them on the same slots and ranks (a stop frees the admit's slot)
            ("snapshot", lambda: tr.snapshot_best("j1")),
            ("suspend_parked", lambda: tr.suspend("j1")),
            ("resume_parked", lambda: tr.resume("j1")),
            ("admit", lambda k=k: tr.admit(f"new{k}", rank=RANKS[-1], lr=1e-4, seed=1000 + k)),
            ("stop", lambda k=k: tr.suspend(f"new{k}", keep_optimizer=False)),
        ]
        for name, fn in actions:
            with OpCount() as ops:
                c0 = time.thread_time()
                fn()
                cpu = time.thread_time() - c0
            rows.append({"action": name, "round": rnd, "layers": layers, "lora_layers": len(tr.store.layers),
                         "ops": sum(ops.n.values()), "cpu_ms": round(1e3 * cpu, 2),
                         "top_ops": " ".join(f"{k}:{v}" for k, v in ops.n.most_common(4))})
            print(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for bench_actions.csv")
    ap.add_argument("--layers", type=count(1, 4096), default=30, help="decoder layers (SmolLM2-135M has 30)")
    ap.add_argument("--adapters", type=count(1, 4096), default=8, help="adapters in the stacks")
    a = ap.parse_args(argv)
    if a.layers < 1 or a.adapters < 4:
        print("bench_actions: --layers must be >= 1 and --adapters >= 4", file=sys.stderr)
        return 2
    rows = measure(a.layers, a.adapters)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame(rows), out / "bench_actions.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
