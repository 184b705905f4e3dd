"""Real text on disk: standard-library signatures -> their docstring summaries.

Reads the committed snapshot ``python_docs.json`` (made by ``build_python_docs.py``), so every
machine sees the same text whatever its Python version. The model sees a qualified name and
signature and writes the summary; scored by ROUGE-L F1 against the real docstring.
The source of the shipped ``builtin/python_docs/`` files (build_builtin.py); runs read the files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from altoruntime.data.example import Example, FineTuneDataset, SplitFractions, check_sizes, fill_splits
from altoruntime.data.metrics import rouge_l_f1
from altoruntime.data.rng import StableRandom

NAME = "python_docs"
SNAPSHOT = Path(__file__).with_name("python_docs.json")


@lru_cache(maxsize=1)
def load_pairs(path: Path = SNAPSHOT) -> tuple[dict[str, str], ...]:
    """The snapshot's pairs, in file order (cached: the file is read-only data)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"python_docs snapshot missing: {path} (rebuild: python -m altoruntime.data.build_python_docs)") from None
    return tuple(data["pairs"])


def to_example(pair: dict[str, str]) -> Example:
    prompt = f"Question: Describe the Python {pair['kind']} {pair['name']}{pair['signature']}.\nAnswer:"
    return Example(prompt=prompt, answer=" " + pair["doc"], key=pair["name"])


def build(n_train: int = 2000, n_val: int = 250, n_eval: int = 250, seed: int = 0) -> FineTuneDataset:
    """Splits are fixed by name hash (about 80/10/10 of the 2,616 pairs); ``seed`` only picks
    which members of each split come first, i.e. which subset a smaller request gets."""
    check_sizes(n_train, n_val, n_eval)
    examples = [to_example(p) for p in load_pairs()]
    StableRandom(NAME, seed).shuffle(examples)
    splits = fill_splits(NAME, examples, {"train": n_train, "val": n_val, "eval": n_eval}, SplitFractions())
    return FineTuneDataset(
        name=NAME, train=splits["train"], val=splits["val"], eval=splits["eval"],
        metric_name="rouge_l_f1", score_fn=rouge_l_f1, max_new_tokens=144,
        description="Python stdlib signature -> first docstring paragraph (snapshot of Python 3.11); ROUGE-L F1",
    )
