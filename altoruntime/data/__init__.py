"""Fine-tuning tasks for the runtime: three built-in datasets (shipped dataset folders under
``builtin/``) and own-data files, all read by files.py, with deterministic splits and task metrics.

    from altoruntime.data import get_dataset, DATASETS
    ds = get_dataset("arithmetic", n_train=2000, n_val=200, n_eval=200, seed=0)
    train = ds.tokenize(tokenizer, "train", seq_len=512)      # TokenizedSplit
    for batch in train.stream(batch_size=8, seed=job_seed, position=0): ...
    ds.metric(generated_texts, split="eval")                  # in [0, 1], higher is better

Importing this package does not import torch; ``tokenize`` does, on first use.
"""

from altoruntime.data.example import SPLITS, Example, FineTuneDataset
from altoruntime.data.registry import DATASETS, DatasetSpec, get_dataset

__all__ = ["DATASETS", "SPLITS", "Batch", "DatasetSpec", "Example", "FineTuneDataset", "IGNORE_INDEX", "PromptBatch",
           "TokenizedSplit", "get_dataset"]


def __getattr__(name: str):  # lazy: the tensor types pull in torch
    if name in ("Batch", "PromptBatch", "TokenizedSplit", "IGNORE_INDEX"):
        from altoruntime.data import tokenize

        return getattr(tokenize, name)
    raise AttributeError(f"module 'altoruntime.data' has no attribute {name!r}")
