"""GPU micro-profile of SlotAdamW.step and the grad-finite norm on SmolLM2-shaped stacks."""

import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from altoruntime.optim import SlotAdamW


def ms(fn, n=3):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - t) * 1e3 / n, 1)


d = [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)] * 30
ps = []
for i, o in d:
    ps += [nn.Parameter(torch.zeros(64, i, 64, device="cuda")), nn.Parameter(torch.zeros(64, 64, o, device="cuda"))]
for p in ps:
    p.grad = torch.randn_like(p)
opt = SlotAdamW(ps, rank_dims=[1, 0] * 210)
for s in range(60):
    opt.init_slot(s, [1e-4, 3e-4, 1e-3][s % 3])
for impl in ("loop", "fused"):
    opt.impl = impl
    print(impl, "step ms", ms(lambda: opt.step(list(range(60)))), "1 slot", ms(lambda: opt.step([5])))
views = [g for p in ps for g in p.grad.unbind(0)[:60]]
print("n views", len(views))
for o in (2.0, float("inf")):
    print("foreach_norm", o, ms(lambda: torch._foreach_norm(views, o)))
print("build only", ms(lambda: [p.grad.unbind(0) for p in ps]))
opt.impl = "fused"
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    opt.step(list(range(60)))
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8))
