"""Dataset names -> builders. Read-only: adding a task means adding a line here."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from altoruntime.data import arithmetic, list_ops, python_docs
from altoruntime.data.example import FineTuneDataset


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build: Callable[..., FineTuneDataset]  # (n_train, n_val, n_eval, seed) -> FineTuneDataset
    metric_name: str
    description: str


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    arithmetic.NAME: DatasetSpec(arithmetic.NAME, arithmetic.build, "exact_match",
                                 "generated GSM8K-like word problems, answer '... #### N'"),
    list_ops.NAME: DatasetSpec(list_ops.NAME, list_ops.build, "exact_match",
                               "generated list sorting / reversing / dedup / counting"),
    python_docs.NAME: DatasetSpec(python_docs.NAME, python_docs.build, "rouge_l_f1",
                                  "Python stdlib signature -> docstring summary (shipped snapshot)"),
})


def get_dataset(name: str, n_train: int = 2000, n_val: int = 200, n_eval: int = 200, seed: int = 0) -> FineTuneDataset:
    """Build dataset ``name`` with the requested split sizes. Same arguments, same examples."""
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return spec.build(n_train=n_train, n_val=n_val, n_eval=n_eval, seed=seed)
