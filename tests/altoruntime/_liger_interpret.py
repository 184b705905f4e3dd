"""Lets Liger-Kernel's Triton kernels run under Triton's CPU interpreter (TRITON_INTERPRET=1), for the
fused-backbone tests in a subprocess; import it before any model runs.

Two gaps of the interpreter (Triton 3.x) stop them there, not on a GPU: a float argument reaches the
kernel as a Python float (`eps.to(tl.float32)` fails), and a libdevice function imported by name
(`rms_norm.rsqrt`) is not mapped to NumPy. This gives the interpreter float scalars as fp32 tensors
and rms_norm an rsqrt it can run. Test-only: nothing in alto imports it.
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl
from liger_kernel.ops import rms_norm
from triton.runtime import interpreter

_convert = interpreter._implicit_cvt


def _implicit_cvt(arg):  # noqa: ANN001, ANN202
    if isinstance(arg, float):
        return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
    return _convert(arg)


@triton.jit
def _rsqrt(x):
    return tl.rsqrt(x)


interpreter._implicit_cvt = _implicit_cvt
rms_norm.rsqrt = _rsqrt
