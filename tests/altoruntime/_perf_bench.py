"""GPU timing of the runtime's host-bound paths on a SmolLM2-135M-shaped random model (210 LoRA
layers): SlotAdamW step (fused vs loop), trainer step, snapshot_best, suspend/resume, admit.
Run: python -m tests.altoruntime._perf_bench [n_adapters]. Not a test (no assertions)."""

from __future__ import annotations

import sys
import time

import torch

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch


def _t(fn, n=1) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3 / n


def main(n: int = 60) -> None:
    model = tiny_llama(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536).cuda()
    tr = MultiAdapterTrainer(model, capacity=64)
    ranks, lrs = (8, 16, 32, 64), (1e-4, 3e-4, 1e-3)
    t = time.perf_counter()
    for i in range(n):
        tr.admit(f"j{i}", rank=ranks[i % 4], lr=lrs[i % 3], seed=i % 2)
    torch.cuda.synchronize()
    print(f"admit x{n}: {(time.perf_counter() - t) * 1e3:.0f} ms")
    batches = {f"j{i}": make_batch(i, 1, 64) for i in range(n)}
    tr.step(batches)
    for impl in ("loop", "fused", "loop", "fused"):
        tr.store.optim.impl = impl
        print(f"trainer.step ({impl}): {_t(lambda: tr.step(batches), 3):.1f} ms")
        for p in tr.store.optim.params:
            p.grad = torch.ones_like(p)
        print(f"  optim.step only ({impl}): {_t(lambda: tr.store.optim.step(list(range(n))), 3):.1f} ms")
        for p in tr.store.optim.params:
            p.grad = None
    for p in tr.store.optim.params:
        p.grad = torch.ones_like(p)
    print(f"_grad_finite: {_t(lambda: tr.store.grad_check.finite(list(range(n))), 3):.1f} ms")
    for p in tr.store.optim.params:
        p.grad = None
    print(f"snapshot_best x{n}: {_t(lambda: [tr.snapshot_best(f'j{i}') for i in range(n)]):.0f} ms")
    print(f"restore_best x{n}: {_t(lambda: [tr.restore_best(f'j{i}') for i in range(n)]):.0f} ms")
    m = min(n, 16)
    print(f"suspend x{m}: {_t(lambda: [tr.suspend(f'j{i}') for i in range(m)]):.0f} ms")
    print(f"resume x{m}: {_t(lambda: [tr.resume(f'j{i}') for i in range(m)]):.0f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
