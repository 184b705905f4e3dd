"""Kernel tests run the Triton kernels on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before `altokernels.triton_kernels` is imported (its @triton.jit
decorators choose interpreter mode then; `import altokernels` alone does not import it), so it is set
here, at conftest import time, whenever no CUDA device is present (on a GPU machine the real
kernels run). To run
the kernels by hand on CPU: `TRITON_INTERPRET=1 python ...`. Autotuning is off in tests (ALTO_KERNELS_AUTOTUNE=0).
"""

import os

import torch

os.environ.setdefault("ALTO_KERNELS_AUTOTUNE", "0")  # one config: no tuning per random test shape
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
