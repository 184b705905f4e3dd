"""Dataset names -> builders, plus a task's own data given as a file or folder path (files.py)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from pathlib import Path
from typing import Callable, Mapping, Sequence

from altoruntime.data import arithmetic, files, list_ops, python_docs
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


def get_dataset(name: str, n_train: int = 2000, n_val: int = 200, n_eval: int = 200, seed: int = 0,
                base: str | Path | None = None, columns: tuple[str, str] = ("prompt", "completion"),
                messages: str = "messages",
                render: Callable[[Sequence[dict]], tuple[str, str]] | None = None,
                validation: str | None = None, validation_fraction: float | None = None,
                split_seed: int = 0) -> FineTuneDataset:
    """Build dataset ``name`` with the requested split sizes. Same arguments, same examples.

    ``name`` is a built-in dataset or a JSONL / CSV / Parquet file or folder (relative paths are
    taken from ``base``, the folder of the file that named it); bad files raise InputError. A file's
    rows come from its ``columns`` (prompt, completion), or, without the prompt column, from chat
    ``messages`` that ``render`` turns into (prompt, completion) text (files.py). A file's splits
    may be given: a ``validation`` file (relative to ``base`` too), split files in its folder, or
    a seeded ``validation_fraction``."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    spec = DATASETS.get(name)
    if spec is not None:
        if validation is not None or validation_fraction is not None:
            raise ValueError(f"{name!r} is a built-in dataset with its own splits; validation and "
                             "validation_fraction are for a dataset file")
        return spec.build(n_train=n_train, n_val=n_val, n_eval=n_eval, seed=seed)

    def at(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() or base is None else Path(base) / p

    if files.is_data_path(name):
        return files.build(at(name), n_train=n_train, n_val=n_val, n_eval=n_eval, seed=seed, columns=columns,
                           messages=messages, render=render, validation=at(validation) if validation else None,
                           validation_fraction=validation_fraction, split_seed=split_seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, "
                     f"or a {'/'.join(files.BUILDERS)} file or folder path")
