"""Evaluation helpers on a tiny random Llama and the byte tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from altoruntime.data import get_dataset
from altoruntime.data.evaluate import answer_token_accuracy, decode_new_tokens, greedy_predictions
from tests.altoruntime.test_data_tokenize import TOK


def test_answer_token_accuracy_hand_case() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, 7]])
    logits = torch.zeros(1, 5, 10)
    logits[0, 1, 5] = logits[0, 2, 6] = 1.0  # predicts 5 then 6 correctly, then 0 instead of 7
    assert answer_token_accuracy(logits, labels) == pytest.approx(2 / 3)
    assert answer_token_accuracy(logits, torch.full((1, 5), -100)) == 0.0
    with pytest.raises(ValueError, match="disagree"):
        answer_token_accuracy(logits, labels[:, :4])


def test_decode_new_tokens_drops_prompt_and_specials() -> None:
    ids = TOK(["ab"], add_special_tokens=False)["input_ids"][0] + TOK([" 7"], add_special_tokens=False)["input_ids"][0]
    row = torch.tensor([ids + [TOK.eos_token_id]])
    assert decode_new_tokens(TOK, row, 2) == [" 7"]


def test_greedy_predictions_on_tiny_llama_feed_the_metric() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()
    ds = get_dataset("list_ops", 5, 2, 6)
    preds = greedy_predictions(model, TOK, ds, batch_size=4, max_new_tokens=5)
    assert len(preds) == 6 and all(isinstance(p, str) for p in preds)
    assert 0.0 <= ds.metric(preds) <= 1.0
    # Batched left-padded generation equals one-at-a-time generation.
    single = [greedy_predictions(model, TOK, ds, batch_size=1, max_new_tokens=5, limit=i + 1)[i] for i in (0, 3)]
    assert single == [preds[0], preds[3]]
