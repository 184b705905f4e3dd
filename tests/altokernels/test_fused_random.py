"""More random shapes for the fused kernels against the per-adapter reference (forward and all
gradients), beyond test_fused.py's 5 large examples per dtype.

Under TRITON_INTERPRET=1 one example costs seconds, so the default run adds small shapes (few
segments, ranks and widths that are not multiples of the tiles, empty segments, spare slots);
the `nightly` ones (deselected by default, `pytest -m nightly`) draw many more, large ones too.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.altokernels.helpers import make_case
from tests.altokernels.test_fused import _compare, cases

DTYPES = [torch.float32, torch.bfloat16]
SLOW_OK = [HealthCheck.too_slow]


def _check(c, seed, dtype) -> None:
    counts, ranks, d_in, d_out, extra, r_max = c
    _compare(make_case(counts, ranks, d_in, d_out, dtype, extra_slots=extra, r_max=r_max, seed=seed), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=6, deadline=None, suppress_health_check=SLOW_OK)
@given(c=cases(max_segments=6, max_count=12, max_rank=20, max_dim=40, max_tokens=40), seed=st.integers(0, 99))
def test_fused_matches_reference_small_random_shapes_cpu(dtype, c, seed):
    _check(c, seed, dtype)


@pytest.mark.nightly
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK)
@given(c=cases(max_segments=6, max_count=12, max_rank=20, max_dim=40, max_tokens=40), seed=st.integers(0, 99))
def test_fused_matches_reference_small_random_shapes_nightly(dtype, c, seed):
    _check(c, seed, dtype)


@pytest.mark.nightly
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None, suppress_health_check=SLOW_OK)
@given(c=cases(max_segments=64, max_count=70, max_rank=128, max_dim=72, max_tokens=300), seed=st.integers(0, 99))
def test_fused_matches_reference_large_random_shapes_nightly(dtype, c, seed):
    _check(c, seed, dtype)
