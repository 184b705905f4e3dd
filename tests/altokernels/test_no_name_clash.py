"""The project's packages shadow no distribution of the stack: with Hugging Face's `kernels`
package installed (a transformers extra that transformers' hub-kernels integration imports), a
process started in the repository root builds a transformers Llama and runs this project's fused
LoRA kernel. With the old top-level `kernels/` package this failed both ways (`cannot import name
'CUDAProperties' from 'kernels'` in transformers, `cannot import name 'build_meta'` in ours)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import kernels, torch, transformers  # Hugging Face's `kernels`, found from the repository root
assert kernels.__file__ and "site-packages" in kernels.__file__, kernels.__file__
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2)
m = LlamaForCausalLM(cfg)
assert m(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 64)
from altokernels import build_meta, multi_lora_linear, grouped_lora_linear
x, w = torch.randn(6, 8), torch.randn(5, 8)
A, B = torch.randn(2, 8, 4) * 0.1, torch.randn(2, 4, 5) * 0.1
meta = build_meta([2, 4], [0, 1], [4, 2], [1.0, 2.0], x.device)
y = multi_lora_linear(x, w, None, A, B, meta, impl="triton")
ref = grouped_lora_linear(x, w, None, A, B, meta, True)
assert torch.allclose(y, ref, atol=1e-4), (y - ref).abs().max()
print("ok", transformers.__version__)
"""

# The names this project must never take as top-level packages (others' distributions or names the
# HF stack probes for).
TAKEN = ("kernels", "runtime", "peft", "accelerate", "transformers", "datasets", "ray", "triton", "alto_kernels")


def test_no_top_level_package_takes_a_name_of_the_stack():
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert not ours & set(TAKEN), sorted(ours & set(TAKEN))


@pytest.mark.skipif(importlib.util.find_spec("kernels") is None, reason="Hugging Face's kernels package not installed")
def test_transformers_and_our_kernels_coexist_from_the_repo_root():
    env = {**os.environ, "TRITON_INTERPRET": "1", "ALTO_KERNELS_AUTOTUNE": "0", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")
