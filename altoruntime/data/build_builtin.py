"""Rebuild the shipped built-in datasets (``builtin/<name>/``) from their generators.

The three built-ins are ordinary dataset folders (``train.jsonl``, ``validation.jsonl``,
``test.jsonl`` with ``prompt`` and ``completion`` columns) read by files.py like a user's own
data; this script is how they were made, and can be remade:

    python -m altoruntime.data.build_builtin --out altoruntime/data/builtin [--names arithmetic ...]

Each split file holds the first POOL rows of that split of the generator's seed-0 build (the word
problems of arithmetic.py, the list questions of list_ops.py, every pair of the python_docs.json
snapshot), in the generator's order: splits are prefix-stable, so ``get_dataset(name, n_train,
n_val, n_eval, seed=0)`` takes each split's first rows and returns what the generator returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from altoruntime.data import arithmetic, list_ops, python_docs
from altoruntime.data.example import FineTuneDataset
from altoruntime.data.python_docs import load_pairs
from altosim.argparser import OneLineParser

FILES = {"train": "train.jsonl", "val": "validation.jsonl", "eval": "test.jsonl"}  # our split -> file name
POOL = {"train": 2000, "val": 250, "eval": 250}  # rows per split of the generated tasks


def generate(name: str, sizes: dict[str, int] | None = None) -> FineTuneDataset:
    """The generator's seed-0 splits of built-in ``name``: ``sizes`` rows each (default: the
    shipped pool; every pair of the snapshot for python_docs)."""
    if name == python_docs.NAME and sizes is None:
        return _python_docs_all()
    sizes = sizes or POOL
    build = {arithmetic.NAME: arithmetic.build, list_ops.NAME: list_ops.build, python_docs.NAME: python_docs.build}[name]
    return build(n_train=sizes["train"], n_val=sizes["val"], n_eval=sizes["eval"], seed=0)


def _python_docs_all() -> FineTuneDataset:
    """Every snapshot pair in its seed-0 split and order (the split sizes are the hash's)."""
    from altoruntime.data.example import SplitFractions

    counts = {"train": 0, "val": 0, "eval": 0}
    for pair in load_pairs():
        counts[SplitFractions().bucket(python_docs.NAME, pair["name"])] += 1
    return python_docs.build(n_train=counts["train"], n_val=counts["val"], n_eval=counts["eval"], seed=0)


def rows(ds: FineTuneDataset, split: str) -> str:
    """One split as JSONL text: {"prompt", "completion"} per line, in order."""
    return "".join(json.dumps({"prompt": e.prompt, "completion": e.answer}, ensure_ascii=False) + "\n"
                   for e in ds.split(split))


def write(out: Path, name: str) -> list[Path]:
    """Write ``out/<name>/{train,validation,test}.jsonl`` (each atomically); return the files."""
    ds = generate(name)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, file in FILES.items():
        path = folder / file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(rows(ds, split), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    names = (arithmetic.NAME, list_ops.NAME, python_docs.NAME)
    ap = OneLineParser(prog="python -m altoruntime.data.build_builtin", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write <name>/<split>.jsonl under")
    ap.add_argument("--names", nargs="+", choices=names, default=list(names))
    args = ap.parse_args(argv)
    for name in args.names:
        for path in write(args.out, name):
            print(f"wrote {path} ({sum(1 for _ in path.open(encoding='utf-8'))} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
