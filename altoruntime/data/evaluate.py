"""Turn a model into task-metric inputs: greedy predictions, and a cheap teacher-forced score.

``greedy_predictions`` feeds ``FineTuneDataset.metric``; ``answer_token_accuracy`` needs one
forward pass (no generation), for frequent in-training checks.
"""

from __future__ import annotations

from typing import Any

import torch

from altoruntime.data.example import FineTuneDataset
from altoruntime.data.tokenize import IGNORE_INDEX
from altoruntime.greedy import greedy_generate, supports


def answer_token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of labelled tokens the model predicts exactly (argmax), with the causal shift:
    ``logits[:, t]`` predicts ``labels[:, t + 1]``. 0.0 when nothing is labelled."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T]")
    pred, want = logits[:, :-1].argmax(dim=-1), labels[:, 1:]
    mask = want != IGNORE_INDEX
    total = int(mask.sum())
    return float(((pred == want) & mask).sum()) / total if total else 0.0


def decode_new_tokens(tokenizer: Any, generated: torch.Tensor, prompt_width: int) -> list[str]:
    """Text after the (left-padded) prompt columns, special tokens dropped."""
    return [tokenizer.decode(row[prompt_width:], skip_special_tokens=True) for row in generated]


@torch.no_grad()
def greedy_predictions(model: Any, tokenizer: Any, ds: FineTuneDataset, split: str = "eval", batch_size: int = 32,
                       seq_len: int = 512, max_new_tokens: int | None = None, limit: int | None = None) -> list[str]:
    """Greedy continuations of ``ds.prompts(split)`` (first ``limit``) from a HF causal LM
    (``altoruntime.greedy``: the tokens ``model.generate`` would give, decoded over a static cache)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = ds.tokenize_prompts(tokenizer, split, seq_len=seq_len)
    n = len(prompts) if limit is None else min(limit, len(prompts))
    device = next(model.parameters()).device
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    out: list[str] = []
    for start in range(0, n, batch_size):
        part = prompts.slice(start, min(start + batch_size, n))
        args = dict(input_ids=part.input_ids.to(device), attention_mask=part.attention_mask.to(device),
                    max_new_tokens=max_new_tokens or ds.max_new_tokens, eos_token_id=eos,
                    pad_token_id=pad if pad is not None else eos)
        if supports(model):  # the same tokens, with a static cache and captured decode steps on CUDA
            generated = greedy_generate(model, **args)
        else:
            generated = model.generate(**args, do_sample=False)
        out.extend(decode_new_tokens(tokenizer, generated.cpu(), part.input_ids.shape[1]))
    return out
