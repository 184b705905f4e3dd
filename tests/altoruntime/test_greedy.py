"""Static-cache greedy decoding gives `model.generate`'s tokens, on CPU (eager) and CUDA (captured)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from altoruntime.backbone import tiny_llama
from altoruntime.data import get_dataset
from altoruntime.data.evaluate import greedy_predictions
from altoruntime.greedy import greedy_generate, supports
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch
from tests.altoruntime.test_data_tokenize import TOK


def _model(seed: int, attn: str) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def _hf(model, prompts, new, eos, pad):  # noqa: ANN001, ANN202
    return model.generate(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask, max_new_tokens=new,
                          do_sample=False, eos_token_id=eos, pad_token_id=pad)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_equals_generate_token_for_token(attn):
    model = _model(3, attn)
    assert supports(model)
    prompts = get_dataset("list_ops", 5, 2, 6).tokenize_prompts(TOK, "eval")
    width, pad = prompts.input_ids.shape[1], TOK.pad_token_id
    free = greedy_generate(model, prompts.input_ids, prompts.attention_mask, 10, None, pad)
    if attn == "sdpa":
        assert torch.equal(free, _hf(model, prompts, 10, None, pad))  # no EOS: every token
    # an EOS id the model does produce: rows finish at different steps, decoding stops with the last
    eos = int(free[0, width + 2])
    info: dict = {}
    got = greedy_generate(model, prompts.input_ids, prompts.attention_mask, 10, eos, pad, check_every=3, info=info)
    assert torch.equal(got, _hf(model, prompts, 10, eos, pad)) and not info["captured"]  # (eager on the CPU)


def test_a_merged_adapter_decodes_as_generate(tmp_path):
    """The finish's path: one trained adapter merged into the backbone (`applied`)."""
    tr = MultiAdapterTrainer(copy.deepcopy(tiny_llama(seed=1, vocab=len(TOK))), capacity=1, cuda_graphs=False)
    tr.admit("a", rank=4, lr=5e-2, seed=2)
    tr.step({"a": make_batch(1, 2, 12, vocab=len(TOK))})
    ds = get_dataset("list_ops", 5, 2, 6)
    with tr.applied("a") as model:
        assert supports(model)
        got = greedy_predictions(model, TOK, ds, max_new_tokens=10)
        prompts = ds.tokenize_prompts(TOK, "eval")
        want = _hf(model, prompts, 10, TOK.eos_token_id, TOK.pad_token_id)
    from altoruntime.data.evaluate import decode_new_tokens

    assert got == decode_new_tokens(TOK, want, prompts.input_ids.shape[1])


def test_settings_greedy_search_would_change_go_to_generate():
    model = _model(0, "sdpa")
    model.generation_config.repetition_penalty = 1.3
    assert not supports(model)
    flash = _model(0, "sdpa")
    flash.config._attn_implementation = "flash_attention_2"
    assert not supports(flash)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(_model(0, "sdpa"), torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2), 0, None, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_decode_steps_equal_eager_and_generate_on_cuda():
    model = _model(4, "sdpa").cuda()
    prompts = get_dataset("list_ops", 5, 2, 10).tokenize_prompts(TOK, "eval")
    ids, mask = prompts.input_ids.cuda(), prompts.attention_mask.cuda()
    pad = TOK.pad_token_id
    free = greedy_generate(model, ids, mask, 16, None, pad, cuda_graph=False)
    eos = int(free[0, ids.shape[1] + 3])
    eager = greedy_generate(model, ids, mask, 16, eos, pad, cuda_graph=False)
    info: dict = {}
    captured = greedy_generate(model, ids, mask, 16, eos, pad, cuda_graph=True, info=info)
    assert info["captured"], info
    want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False, eos_token_id=eos,
                          pad_token_id=pad)
    assert torch.equal(captured, eager) and torch.equal(eager, want)
