"""Dataset names -> shipped dataset folders, plus a task's own data given as a file or folder path.

The built-ins are ordinary dataset folders under ``builtin/`` (``train`` / ``validation`` /
``test`` JSONL files of prompt and completion columns, made by build_builtin.py), read by files.py
exactly as a user's own folder is; this registry only adds each one's metric and description.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

from altosim.errors import InputError
from altoruntime.data import files
from altoruntime.data.example import SPLITS, FineTuneDataset, check_sizes
from altoruntime.data.metrics import number_exact_match, rouge_l_f1, text_exact_match


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: its folder under ``altoruntime/data/builtin/`` and how it is scored."""

    name: str
    folder: str
    metric_name: str
    score_fn: Callable[[str, str], float]
    max_new_tokens: int  # greedy tokens enough to produce any reference answer
    description: str

    def path(self) -> Path:
        """The shipped folder (package data: found in an editable and a wheel install alike)."""
        return Path(str(resources.files("altoruntime.data").joinpath("builtin", self.folder)))


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    "arithmetic": DatasetSpec("arithmetic", "arithmetic", "exact_match", number_exact_match, 64,
                              "GSM8K-like word problems (1-3 operations); exact match of the number after '####'"),
    "list_ops": DatasetSpec("list_ops", "list_ops", "exact_match", text_exact_match, 48,
                            "sort / reverse / deduplicate / count / pick on short word and number lists; exact match"),
    "python_docs": DatasetSpec("python_docs", "python_docs", "rouge_l_f1", rouge_l_f1, 144,
                               "Python stdlib signature -> first docstring paragraph (snapshot of Python 3.11); "
                               "ROUGE-L F1"),
})


def builtin(spec: DatasetSpec, n_train: int, n_val: int, n_eval: int, seed: int) -> FineTuneDataset:
    """A built-in's shipped splits through files.py: seed 0 takes each split's first rows in file
    order (the generator's own rows); another seed a seeded choice of the same rows. A request
    larger than a shipped split is an InputError naming the dataset, the split and the sizes."""
    check_sizes(n_train, n_val, n_eval)
    folder = spec.path()
    ds = files.build(folder, n_train=n_train, n_val=n_val, n_eval=n_eval, seed=seed, keep_order=seed == 0)
    for split, n in zip(SPLITS, (n_train, n_val, n_eval)):
        have = len(ds.split(split))
        if have < n:
            raise InputError(str(folder), "dataset", f"built-in dataset {spec.name!r} ships {have} {split} rows; "
                             f"n_{split}={n} asked for more")
    return replace(ds, name=spec.name, metric_name=spec.metric_name, score_fn=spec.score_fn,
                   max_new_tokens=spec.max_new_tokens, description=spec.description)


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
        return builtin(spec, n_train, n_val, n_eval, seed)

    def at(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() or base is None else Path(base) / p

    if files.is_data_path(name) or at(name).exists():  # a bare folder name is looked for beside `base` too
        return files.build(at(name), n_train=n_train, n_val=n_val, n_eval=n_eval, seed=seed, columns=columns,
                           messages=messages, render=render, validation=at(validation) if validation else None,
                           validation_fraction=validation_fraction, split_seed=split_seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, "
                     f"or a {'/'.join(files.BUILDERS)} file or folder path")
