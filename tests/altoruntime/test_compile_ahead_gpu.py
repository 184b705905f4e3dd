"""On CUDA, in fresh processes with empty Triton caches: compiling ahead compiles the first
training and evaluation bodies' kernels (none left for the real run to compile) and trains
exactly as without it. Each process prints its first step's wall time (read, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

SCRIPT = """
import json, sys, time, torch
from triton import knobs
from altoruntime.backbone import tiny_llama
from altoruntime.trainer import trainer_from_env
from tests.altoruntime._batches import make_batch

ahead = sys.argv[1]
torch.manual_seed(0)
tr = trainer_from_env(tiny_llama(seed=0).cuda(), 4, env={"ALTO_COMPILE_AHEAD": ahead, "ALTO_CUDA_GRAPHS": "0"})
for i, (j, r, p) in enumerate((("a", 4, 0.1), ("b", 8, 0.0), ("c", 16, 0.2))):
    tr.admit(j, rank=r, lr=1e-2, seed=i, dropout=p)
phase = ["deferred"]  # compiles by phase: the deferred run's must be none (its backward defers too),
seen = {"deferred": [], "ahead": [], "late": []}  # the real runs' none (they find every kernel compiled)
def count(**kw):
    seen[phase[0]].append(kw["fn"].name)
knobs.runtime.jit_post_compile_hook = count
t0 = time.perf_counter()
if tr.compile_ahead is not None:
    orig = tr.compile_ahead.compile_all
    def then_count(found):
        phase[0] = "ahead"
        out = orig(found)
        phase[0] = "late"
        return out
    tr.compile_ahead.compile_all = then_count
res = [tr.step({j: make_batch(10 * k + i, 2, 16) for i, j in enumerate("abc")}) for k in range(2)]
torch.cuda.synchronize()
first = time.perf_counter() - t0
res.append(tr.evaluate({j: make_batch(90 + i, 2, 16) for i, j in enumerate("abc")}))
w = {j: [float(a.double().abs().sum() + b.double().abs().sum()) for _, a, b in tr.adapter_weights(j)] for j in "abc"}
runs = tr.compile_ahead.runs if tr.compile_ahead is not None else []
print(json.dumps({"res": res, "w": w, "runs": runs, "late": seen["late"], "in_deferred": seen["deferred"],
                  "first_s": first}))
"""


def _run(ahead: str, cache: Path) -> dict:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))), "ALTO_KERNELS_AUTOTUNE": "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ahead], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiling_ahead_leaves_nothing_to_compile_and_trains_the_same(tmp_path):
    plain = _run("0", tmp_path / "plain")
    ahead = _run("1", tmp_path / "ahead")
    print(f"first two steps: {plain['first_s']:.2f} s plain, {ahead['first_s']:.2f} s ahead; runs {ahead['runs']}")
    assert len(ahead["runs"]) == 2 and ahead["runs"][0]["kernels"] > 0, ahead["runs"]
    assert all(r["failed"] == 0 for r in ahead["runs"]), ahead["runs"]
    assert ahead["in_deferred"] == [], ahead["in_deferred"]  # the backward's kernels deferred too (autograd's thread)
    assert ahead["late"] == [], ahead["late"]  # the real runs found every kernel compiled
    for got, want in zip(ahead["res"], plain["res"], strict=True):  # (reductions may differ in the last bits)
        assert got == pytest.approx(want, rel=1e-6)
    for j, want in plain["w"].items():
        assert ahead["w"][j] == pytest.approx(want, rel=1e-6)
