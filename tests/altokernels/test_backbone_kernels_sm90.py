"""alto's fused-backbone kernels (altokernels/rope.py, rms_norm.py) compile for an H200 (sm_90): the
interpreter runs what the GPU compiler may refuse. Signatures as the JIT sees them at SmolLM2's
shapes, the non-specialized ints (row count, strides) left plain."""

from __future__ import annotations

import pytest

from tests.altokernels.helpers import cross_compile_for_sm90

SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from altokernels import rms_norm, rope

def compile_(fn, types, consts):
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4})

bf16 = {n: "*bf16" for n in ("q_ptr", "k_ptr", "cos_ptr", "sin_ptr", "x_ptr", "w_ptr", "y_ptr", "dy_ptr", "dx_ptr")}
for backward in (False, True):  # SmolLM2: 9 query heads, 3 key-value heads, head size 64
    compile_(rope._rope_kernel, bf16, {"NQ": 9, "NK": 3, "PAD_Q": 16, "PAD_K": 4, "HALF": 32, "PAD_HALF": 32,
                                          "BACKWARD": backward})
compile_(rms_norm._rms_forward, {**bf16, "rstd_ptr": "*fp32", "eps": "fp32"}, {"BLOCK": 1024})
compile_(rms_norm._rms_backward, {**bf16, "rstd_ptr": "*fp32"}, {"BLOCK": 1024})
print("ok")
"""


@pytest.mark.slow  # four small sm_90 compiles
def test_rope_and_rms_norm_kernels_compile_for_an_h200():
    cross_compile_for_sm90(SCRIPT, 600)
